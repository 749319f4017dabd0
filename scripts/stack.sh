#!/usr/bin/env bash
# The local stack: Apache Kafka 4 (KRaft), Redis, an S3 server (versitygw) and, on request, the
# Apicurio schema registry — real servers on 127.0.0.1, installed from the package registries.
#
#   scripts/stack.sh install [--registry]   download/build what is missing (cached, idempotent)
#   scripts/stack.sh up [--registry]        install if needed, start what is not running, wait
#   scripts/stack.sh down                   stop exactly the processes this script started
#   scripts/stack.sh status                 one line per service; exit 1 if one is down
#   scripts/stack.sh stop SERVICE           stop one service (redis, kafka, s3 or registry)
#   scripts/stack.sh start SERVICE          start one service again (a no-op when it runs)
#
# A second `up` is a no-op. Data survives `down`/`up`; `scripts/stack.sh wipe` deletes it.
# TTS_STACK_DATA_DIR and the TTS_STACK_*_PORT variables run a private instance (scripts/lib.sh).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

# Installs live under $INFRA (shared by every instance); data, logs and working directories
# under $DATA (the same folder unless TTS_STACK_DATA_DIR names another).
KAFKA_LIB="$INFRA/kafka/lib"
KAFKA_DIR="$DATA/kafka"
REDIS_DIR="$DATA/redis"
S3_DIR="$DATA/s3"
REGISTRY_DIR="$INFRA/apicurio"
REGISTRY_RUN_DIR="$DATA/apicurio"
KAFKA_CLUSTER_ID="${TTS_STACK_KAFKA_CLUSTER_ID:-dHRzLXN0cmVhbS1sb2NhbA}"

# ---------------------------------------------------------------- install -----------------------

install_redis() {
  command -v redis-server >/dev/null && return 0
  say "installing redis-server from Debian's packages"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; } \
      >"$INFRA/apt-redis.log" 2>&1; then
    tail -n 20 "$INFRA/apt-redis.log" >&2
    die "redis: apt-get install redis-server failed (log: $INFRA/apt-redis.log)"
  fi
}

install_kafka() {
  [ -f "$KAFKA_LIB/kafka_2.13-$KAFKA_VERSION.jar" ] && return 0
  command -v java >/dev/null || die "kafka: java (17 or newer) is not installed"
  command -v mvn >/dev/null || die "kafka: mvn is needed to collect the broker jars from Maven Central"
  say "collecting Kafka $KAFKA_VERSION jars from Maven Central (infra/kafka/pom.xml)"
  rm -rf "$KAFKA_LIB"
  if ! mvn -B -q -f "$ROOT/infra/kafka/pom.xml" dependency:copy-dependencies \
      -Dkafka.lib.dir="$KAFKA_LIB" >"$INFRA/mvn-kafka.log" 2>&1; then
    tail -n 20 "$INFRA/mvn-kafka.log" >&2
    die "kafka: downloading the broker jars failed (log: $INFRA/mvn-kafka.log)"
  fi
}

install_versitygw() {
  [ -x "$BIN/versitygw" ] && return 0
  command -v go >/dev/null || die "s3: go is needed to build versitygw"
  say "building versitygw $VERSITYGW_VERSION with go install"
  if ! GOBIN="$BIN" CGO_ENABLED=0 go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" \
      >"$INFRA/go-versitygw.log" 2>&1; then
    tail -n 20 "$INFRA/go-versitygw.log" >&2
    die "s3: building versitygw failed (log: $INFRA/go-versitygw.log)"
  fi
}

# Apicurio 3.3 is compiled for Java 21; the default JDK here is 17, so look for a newer one.
registry_java() {
  local candidate
  for candidate in "${TTS_STACK_REGISTRY_JAVA:-}" "${JAVA_HOME:+$JAVA_HOME/bin/java}" java /usr/lib/jvm/*/bin/java; do
    [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -version 2>&1 | grep -qE 'version "(2[1-9]|[3-9][0-9])'; then echo "$candidate"; return 0; fi
  done
  die "registry: Apicurio $APICURIO_VERSION needs Java 21 or newer; none found (set TTS_STACK_REGISTRY_JAVA)"
}

registry_jar() { find "$REGISTRY_DIR" -maxdepth 3 -name quarkus-run.jar 2>/dev/null | head -n 1; }

install_registry() {
  [ -n "$(registry_jar)" ] && return 0
  say "fetching Apicurio Registry $APICURIO_VERSION from Maven Central"
  mkdir -p "$REGISTRY_DIR"
  if ! mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
      -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" \
      -DoutputDirectory="$REGISTRY_DIR" >"$INFRA/mvn-apicurio.log" 2>&1; then
    tail -n 20 "$INFRA/mvn-apicurio.log" >&2
    die "registry: downloading Apicurio failed (log: $INFRA/mvn-apicurio.log)"
  fi
  tar -xzf "$REGISTRY_DIR/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz" -C "$REGISTRY_DIR"
  rm -f "$REGISTRY_DIR/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz"
}

install_all() {
  install_redis
  install_kafka
  install_versitygw
  [ "$WITH_REGISTRY" = 1 ] && install_registry
  return 0
}

# ---------------------------------------------------------------- start -------------------------

start_redis() {
  if pid_alive redis; then return 0; fi
  require_free_port redis "$REDIS_PORT" TTS_STACK_REDIS_PORT
  mkdir -p "$REDIS_DIR"
  # Our own instance on its own port: the Debian package's service (6379) is left alone.
  (cd "$REDIS_DIR" && redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
      --daemonize yes --pidfile "$RUN/redis.pid" --logfile "$REDIS_DIR/redis.log" \
      --dir "$REDIS_DIR" --save '' --appendonly no)
  wait_until redis 20 "$REDIS_DIR/redis.log" "" redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping
  say "redis      127.0.0.1:$REDIS_PORT (pid $(cat "$RUN/redis.pid"))"
}

kafka_java_opts() {
  printf '%s' "-Xms256m -Xmx768m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
-Dlog4j2.configurationFile=$ROOT/infra/kafka/log4j2.properties -Dkafka.logs.dir=$KAFKA_DIR"
}

kafka_ready() { "$PYTHON" "$ROOT/scripts/kafka_ready.py" "127.0.0.1:$KAFKA_PORT"; }

# The optional listener for the local cluster's pods (TTS_STACK_KAFKA_POD_LISTENER=ADDRESS:PORT,
# set by `make k8s-up`): bound to 127.0.0.1:PORT, advertised as ADDRESS:PORT.
kafka_pod_listener_seds() {
  local spec="${TTS_STACK_KAFKA_POD_LISTENER:-}" port
  if [ -z "$spec" ]; then
    printf '%s\n' -e 's#@POD_LISTENER@##' -e 's#@POD_ADVERTISED@##' -e 's#@POD_PROTOCOL@##'
    return
  fi
  port="${spec##*:}"
  printf '%s\n' -e "s#@POD_LISTENER@#,PODS://127.0.0.1:$port#" -e "s#@POD_ADVERTISED@#,PODS://$spec#" \
    -e 's#@POD_PROTOCOL@#,PODS:PLAINTEXT#'
}

render_kafka_config() {
  local seds
  mapfile -t seds < <(kafka_pod_listener_seds)
  sed -e "s#@DATA_DIR@#$KAFKA_DIR/data#" -e "s#@KAFKA_PORT@#$KAFKA_PORT#g" \
      -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" "${seds[@]}" \
      "$ROOT/infra/kafka/server.properties.in"
}

start_kafka() {
  if pid_alive kafka; then
    # a running broker whose listeners differ from the ones asked for (the pods' listener added
    # or moved) is restarted with the new configuration; its data stays
    if [ -n "${TTS_STACK_KAFKA_POD_LISTENER:-}" ] && ! render_kafka_config | cmp -s - "$KAFKA_DIR/server.properties"; then
      say "restarting kafka with the listener for pods ($TTS_STACK_KAFKA_POD_LISTENER)"
      stop_pid kafka 60
    else
      return 0
    fi
  fi
  require_free_port kafka "$KAFKA_PORT" TTS_STACK_KAFKA_PORT
  require_free_port kafka-controller "$KAFKA_CONTROLLER_PORT" TTS_STACK_KAFKA_CONTROLLER_PORT
  [ -x "$PYTHON" ] || die "kafka: $PYTHON is missing; run 'make install' first (it creates .venv)"
  mkdir -p "$KAFKA_DIR/data"
  render_kafka_config >"$KAFKA_DIR/server.properties"
  # shellcheck disable=SC2046
  if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
    (cd "$KAFKA_DIR" && java $(kafka_java_opts) -cp "$KAFKA_LIB/*" kafka.tools.StorageTool format \
        -t "$KAFKA_CLUSTER_ID" -c "$KAFKA_DIR/server.properties" --ignore-formatted \
        >"$KAFKA_DIR/format.log" 2>&1) || { cat "$KAFKA_DIR/format.log" >&2; die "kafka: formatting the log dir failed"; }
  fi
  # shellcheck disable=SC2046
  (cd "$KAFKA_DIR" && exec java $(kafka_java_opts) -cp "$KAFKA_LIB/*" kafka.Kafka \
      "$KAFKA_DIR/server.properties" >"$KAFKA_DIR/kafka.log" 2>&1) &
  echo $! >"$RUN/kafka.pid"
  wait_until kafka 90 "$KAFKA_DIR/kafka.log" kafka kafka_ready
  say "kafka      127.0.0.1:$KAFKA_PORT (pid $(cat "$RUN/kafka.pid"))"
}

s3_ready() { curl -sf "http://127.0.0.1:$S3_PORT/_health"; }

start_s3() {
  if pid_alive s3; then return 0; fi
  require_free_port s3 "$S3_PORT" TTS_STACK_S3_PORT
  mkdir -p "$S3_DIR/root" "$S3_DIR/meta"
  # Sidecar metadata instead of xattrs: works on every filesystem, tmpfs and overlay included.
  (cd "$S3_DIR" && ROOT_ACCESS_KEY="$S3_ACCESS_KEY" ROOT_SECRET_KEY="$S3_SECRET_KEY" exec "$BIN/versitygw" \
      --port "127.0.0.1:$S3_PORT" --health /_health --quiet --keep-alive \
      posix --sidecar "$S3_DIR/meta" "$S3_DIR/root" >"$S3_DIR/versitygw.log" 2>&1) &
  echo $! >"$RUN/s3.pid"
  wait_until s3 30 "$S3_DIR/versitygw.log" s3 s3_ready
  TTS_S3_ENDPOINT_URL="http://127.0.0.1:$S3_PORT" TTS_S3_ACCESS_KEY_ID="$S3_ACCESS_KEY" \
    TTS_S3_SECRET_ACCESS_KEY="$S3_SECRET_KEY" "$PYTHON" "$ROOT/scripts/s3_buckets.py" $S3_BUCKETS \
    || die "s3: creating the buckets ($S3_BUCKETS) failed"
  say "s3         127.0.0.1:$S3_PORT (pid $(cat "$RUN/s3.pid"), buckets: $S3_BUCKETS)"
}

registry_ready() { curl -sf "http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7/subjects"; }

start_registry() {
  if pid_alive registry; then return 0; fi
  require_free_port registry "$REGISTRY_PORT" TTS_STACK_REGISTRY_PORT
  require_free_port registry-management "$REGISTRY_MGMT_PORT" TTS_STACK_REGISTRY_MGMT_PORT
  local jar; jar="$(registry_jar)"
  [ -n "$jar" ] || die "registry: Apicurio is not installed (scripts/stack.sh install --registry)"
  # In-memory storage: the registry holds test schemas only. Quarkus' management interface is
  # compiled in (it cannot be switched off at run time), so pin it to loopback on a known port.
  local java; java="$(registry_java)"
  mkdir -p "$REGISTRY_RUN_DIR"
  (cd "$REGISTRY_RUN_DIR" && exec "$java" -Xms128m -Xmx512m -Dquarkus.http.host=127.0.0.1 \
      -Dquarkus.http.port="$REGISTRY_PORT" -Dquarkus.management.host=127.0.0.1 -Dquarkus.management.port="$REGISTRY_MGMT_PORT" \
      -Dapicurio.ccompat.legacy-id-mode.enabled=false -jar "$jar" >"$REGISTRY_RUN_DIR/registry.log" 2>&1) &
  echo $! >"$RUN/registry.pid"
  wait_until registry 120 "$REGISTRY_RUN_DIR/registry.log" registry registry_ready
  say "registry   127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7 (pid $(cat "$RUN/registry.pid"))"
}

# ---------------------------------------------------------------- commands ----------------------

cmd_up() {
  install_all
  start_redis
  start_s3
  start_kafka
  [ "$WITH_REGISTRY" = 1 ] && start_registry
  write_stack_env
  say "stack is up; addresses in $DATA/stack.env"
}

cmd_down() {
  stop_pid registry 30
  stop_pid kafka 60
  stop_pid s3 15
  stop_pid redis 10  # SIGTERM: redis exits cleanly (no persistence configured)
}

status_line() {  # NAME ADDRESS READY-CHECK...
  local name="$1" addr="$2"; shift 2
  if pid_alive "$name"; then
    if "$@" >/dev/null 2>&1; then printf '%-9s up     %-40s pid %s\n' "$name" "$addr" "$(cat "$RUN/$name.pid")"
    else printf '%-9s alive, not ready  %-28s pid %s\n' "$name" "$addr" "$(cat "$RUN/$name.pid")"; return 1; fi
  else
    printf '%-9s down   %s\n' "$name" "$addr"; return 1
  fi
}

cmd_status() {
  local rc=0
  status_line redis "127.0.0.1:$REDIS_PORT" redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping || rc=1
  status_line kafka "127.0.0.1:$KAFKA_PORT" kafka_ready || rc=1
  status_line s3 "http://127.0.0.1:$S3_PORT" s3_ready || rc=1
  # The registry is optional: it is only reported as a failure when it was asked for.
  if pid_alive registry || [ "$WITH_REGISTRY" = 1 ]; then
    status_line registry "http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7" registry_ready || rc=1
  else
    printf '%-9s off    (start with: make up REGISTRY=1)\n' registry
  fi
  return $rc
}

SERVICES="redis kafka s3 registry"

require_service() {
  case " $SERVICES " in *" ${1:-} "*) ;; *) die "name a service: one of $SERVICES" ;; esac
}

# stop/start one service: for fault injection (tests/chaos) and for operators who need to bounce
# one part. Each stops or starts exactly like `down`/`up` do.
cmd_stop() {
  require_service "${1:-}"
  case "$1" in
    redis) stop_pid redis 10 ;;
    kafka) stop_pid kafka 60 ;;
    s3) stop_pid s3 15 ;;
    registry) stop_pid registry 30 ;;
  esac
}

cmd_start() {
  require_service "${1:-}"
  case "$1" in
    redis) install_redis; start_redis ;;
    kafka) install_kafka; start_kafka ;;
    s3) install_versitygw; start_s3 ;;
    registry) install_registry; start_registry ;;
  esac
  write_stack_env
}

cmd_wipe() {
  for s in kafka s3 registry redis; do pid_alive "$s" && die "stop the stack first (make down)"; done
  rm -rf "$KAFKA_DIR/data" "$S3_DIR/root" "$S3_DIR/meta" "$REDIS_DIR"
  say "deleted the stack's data (downloads and builds kept)"
}

WITH_REGISTRY="${REGISTRY:-0}"
cmd="${1:-}"; shift || true
service=""
if [ "$cmd" = stop ] || [ "$cmd" = start ]; then service="${1:-}"; shift || true; fi
for arg in "$@"; do
  case "$arg" in
    --registry) WITH_REGISTRY=1 ;;
    *) die "unknown option: $arg" ;;
  esac
done
case "$cmd" in
  install) install_all ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  wipe) cmd_wipe ;;
  stop) cmd_stop "$service" ;;
  start) cmd_start "$service" ;;
  *) echo "usage: $0 {install|up|down|status|wipe} [--registry] | {stop|start} SERVICE" >&2; exit 2 ;;
esac
