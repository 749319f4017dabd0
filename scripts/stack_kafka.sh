# shellcheck shell=bash
# Kafka for the local stack: one combined broker+controller, or (BROKERS=3) three combined nodes
# that form a three-voter KRaft quorum. Sourced by scripts/stack.sh after lib.sh.
#
# Node names: "kafka" for the single node (its data in $DATA/kafka, as before), "kafka-1" ..
# "kafka-3" for the cluster (data in $DATA/kafka-N, PID files run/kafka-N.pid). The data of a
# cluster is formatted for its voter set, so a stack stays at the broker count it was made with
# until `wipe`.

KAFKA_LIB="$INFRA/kafka/lib"
KAFKA_CLUSTER_ID="${TTS_STACK_KAFKA_CLUSTER_ID:-dHRzLXN0cmVhbS1sb2NhbA}"
KAFKA_BROKERS_FILE="$DATA/kafka-brokers"

kafka_nodes() {
  if [ "$BROKERS" = 1 ]; then echo kafka; else echo kafka-1 kafka-2 kafka-3; fi
}

kafka_index() { case "$1" in kafka) echo 1 ;; kafka-*) echo "${1#kafka-}" ;; esac; }
kafka_port_of() { echo "${KAFKA_PORTS[$(($(kafka_index "$1") - 1))]}"; }
kafka_controller_port_of() { echo "${KAFKA_CONTROLLER_PORTS[$(($(kafka_index "$1") - 1))]}"; }

is_kafka_node() {
  local node
  for node in $(kafka_nodes); do [ "$node" = "$1" ] && return 0; done
  return 1
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

kafka_java_opts() {  # NODE
  local heap=768m
  [ "$BROKERS" = 1 ] || heap=512m  # three JVMs on a developer machine
  printf '%s' "-Xms256m -Xmx$heap -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
-Dlog4j2.configurationFile=$ROOT/infra/kafka/log4j2.properties -Dkafka.logs.dir=$DATA/$1"
}

# kafka_ready [BROKERS]: a metadata round trip through every node, and the cluster reports all
# its brokers (a quorum is elected and every node registered).
kafka_ready() {
  "$PYTHON" "$ROOT/scripts/kafka_ready.py" "$(join_addresses "${KAFKA_PORTS[@]}")" "${1:-$BROKERS}"
}

check_kafka_brokers_file() {
  [ -f "$KAFKA_BROKERS_FILE" ] || return 0
  local formatted; formatted="$(cat "$KAFKA_BROKERS_FILE")"
  [ "$formatted" = "$BROKERS" ] || die "kafka: this stack's data is a $formatted-broker cluster; \
run it with BROKERS=$formatted, or stop it and delete its data first (scripts/stack.sh wipe)"
}

# The optional listener for the local Kubernetes cluster's pods (TTS_STACK_KAFKA_POD_LISTENER=
# ADDRESS:PORT, set by `make k8s-up`; single node only): bound to 127.0.0.1:PORT, advertised as
# ADDRESS:PORT.
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

single_kafka_config() {  # NODE: the single node's server.properties, on stdout
  local dir="$DATA/$1" seds
  mapfile -t seds < <(kafka_pod_listener_seds)
  sed -e "s#@DATA_DIR@#$dir/data#" -e "s#@KAFKA_PORT@#$(kafka_port_of "$1")#g" \
      -e "s#@CONTROLLER_PORT@#$(kafka_controller_port_of "$1")#g" -e "s#@HOST@#$HOST#g" "${seds[@]}" \
      "$ROOT/infra/kafka/server.properties.in"
}

render_kafka_node() {  # NODE
  local node="$1" dir="$DATA/$1" port controller voters="" i
  port="$(kafka_port_of "$node")"; controller="$(kafka_controller_port_of "$node")"
  mkdir -p "$dir/data"
  if [ "$BROKERS" = 1 ]; then
    single_kafka_config "$node" >"$dir/server.properties"
  else
    for ((i = 0; i < BROKERS; i++)); do voters+="${voters:+,}$((i + 1))@$HOST:${KAFKA_CONTROLLER_PORTS[$i]}"; done
    sed -e "s#@DATA_DIR@#$dir/data#" -e "s#@KAFKA_PORT@#$port#g" -e "s#@CONTROLLER_PORT@#$controller#g" \
        -e "s#@HOST@#$HOST#g" -e "s#@NODE_ID@#$(kafka_index "$node")#" -e "s#@VOTERS@#$voters#" \
        "$ROOT/infra/kafka/server-cluster.properties.in" >"$dir/server.properties"
  fi
  # shellcheck disable=SC2046
  if [ ! -f "$dir/data/meta.properties" ]; then
    (cd "$dir" && java $(kafka_java_opts "$node") -cp "$KAFKA_LIB/*" kafka.tools.StorageTool format \
        -t "$KAFKA_CLUSTER_ID" -c "$dir/server.properties" --ignore-formatted \
        >"$dir/format.log" 2>&1) || { cat "$dir/format.log" >&2; die "$node: formatting the log dir failed"; }
  fi
}

launch_kafka_node() {  # NODE: start it without waiting (a lone voter cannot elect a controller)
  local node="$1" dir="$DATA/$1"
  pid_alive "$node" && return 0
  require_free_port "$node" "$(kafka_port_of "$node")" TTS_STACK_KAFKA_PORT
  require_free_port "$node-controller" "$(kafka_controller_port_of "$node")" TTS_STACK_KAFKA_CONTROLLER_PORT
  render_kafka_node "$node"
  # shellcheck disable=SC2046
  (cd "$dir" && exec java $(kafka_java_opts "$node") -cp "$KAFKA_LIB/*" kafka.Kafka \
      "$dir/server.properties" >>"$dir/kafka.log" 2>&1) &
  echo $! >"$RUN/$node.pid"
}

# start_kafka [NODE]: start the named node, or every node not running; wait for the cluster.
start_kafka() {
  [ -x "$PYTHON" ] || die "kafka: $PYTHON is missing; run 'make install' first (it creates .venv)"
  check_kafka_brokers_file
  local nodes="${1:-$(kafka_nodes)}" node started=""
  # A running single node whose listeners differ from the ones asked for (the pods' listener added
  # or moved) restarts with the new configuration; its data stays.
  if [ "$BROKERS" = 1 ] && [ -n "${TTS_STACK_KAFKA_POD_LISTENER:-}" ] && pid_alive kafka \
      && ! single_kafka_config kafka | cmp -s - "$DATA/kafka/server.properties"; then
    say "restarting kafka with the listener for pods ($TTS_STACK_KAFKA_POD_LISTENER)"
    stop_pid kafka 60
  fi
  for node in $nodes; do
    pid_alive "$node" && continue
    launch_kafka_node "$node"
    started+=" $node"
  done
  echo "$BROKERS" >"$KAFKA_BROKERS_FILE"
  [ -n "$started" ] || return 0
  local first; first="$(echo $started | cut -d' ' -f1)"
  wait_until kafka 120 "$DATA/$first/kafka.log" "$first" kafka_ready
  for node in $started; do
    say "$(printf '%-13s' "$node") $HOST:$(kafka_port_of "$node") (pid $(cat "$RUN/$node.pid"))"
  done
}

# stop_kafka [NODE]: stop the named node, or all of them at once (stopped one by one, the last
# nodes of a cluster would wait in controlled shutdown for a quorum that is already gone).
stop_kafka() {
  if [ -n "${1:-}" ]; then stop_pid "$1" 60; return; fi
  local node pids=() names=()
  for node in kafka kafka-1 kafka-2 kafka-3; do
    if pid_alive "$node"; then pids+=("$(cat "$RUN/$node.pid")"); names+=("$node"); fi
  done
  [ "${#pids[@]}" = 0 ] && return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for node in "${names[@]}"; do stop_pid "$node" 60; done
}

kafka_node_ready() { "$PYTHON" "$ROOT/scripts/kafka_ready.py" "$HOST:$(kafka_port_of "$1")" 1; }

status_kafka() {
  local node rc=0
  for node in $(kafka_nodes); do
    status_line "$node" "$HOST:$(kafka_port_of "$node")" kafka_node_ready "$node" || rc=1
  done
  return $rc
}
