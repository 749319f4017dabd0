# shellcheck shell=bash
# Redis for the local stack, from Debian's redis-server package (which also runs sentinels).
# Sourced by scripts/stack.sh after lib.sh.
#
#   single    "redis": one server on REDIS_PORT, no password (the default)
#   sentinel  "redis-master" (the first master) on REDIS_PORT, "redis-replica" on +1, and three
#             sentinels "sentinel-1..3" on +2..+4 that fail over when two agree the master is down
#   cluster   "redis-node-1..3": three masters on REDIS_PORT..+2, each with a replica
#             ("redis-node-4..6" on +3..+5) when TTS_STACK_REDIS_CLUSTER_REPLICAS=1
#
# The replicated modes want REDIS_PASSWORD from clients, replicas and sentinels alike. Nothing
# is persisted (a cache): a restarted node starts empty and resynchronises from its master.
# `stop redis` / `start redis` act on every node of the mode; a node's name acts on that node.

redis_nodes() {
  case "$REDIS_MODE" in
    single) echo redis ;;
    sentinel) echo redis-master redis-replica sentinel-1 sentinel-2 sentinel-3 ;;
    cluster)
      local i out=""
      for ((i = 1; i <= ${#REDIS_CLUSTER_PORTS[@]}; i++)); do out+="redis-node-$i "; done
      echo "$out"
      ;;
  esac
}

redis_port_of() {
  case "$1" in
    redis | redis-master) echo "$REDIS_PORT" ;;
    redis-replica) echo $((REDIS_PORT + 1)) ;;
    sentinel-*) echo $((REDIS_PORT + 1 + ${1#sentinel-})) ;;
    redis-node-*) echo "${REDIS_CLUSTER_PORTS[$((${1#redis-node-} - 1))]}" ;;
  esac
}

is_redis_node() {
  local node
  for node in $(redis_nodes); do [ "$node" = "$1" ] && return 0; done
  return 1
}

install_redis() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
  say "installing redis-server from Debian's packages"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; } \
      >"$INFRA/apt-redis.log" 2>&1; then
    tail -n 20 "$INFRA/apt-redis.log" >&2
    die "redis: apt-get install redis-server failed (log: $INFRA/apt-redis.log)"
  fi
}

redis_cli() {  # PORT ARGS...: redis-cli against one of our nodes, with the password when we use one
  local port="$1"; shift
  if [ "$REDIS_MODE" = single ]; then redis-cli -h "$HOST" -p "$port" "$@"
  else REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -h "$HOST" -p "$port" "$@"; fi
}

redis_node_ready() { redis_cli "$(redis_port_of "$1")" ping | grep -q PONG; }

# The data nodes' settings, written once: sentinels and the cluster rewrite these files
# (CONFIG REWRITE) as roles change, and a restarted node must come back with what they wrote.
write_redis_conf() {  # NODE FILE EXTRA...
  local node="$1" file="$2"; shift 2
  [ -f "$file" ] && return 0
  {
    echo "bind $HOST"
    echo "port $(redis_port_of "$node")"
    echo "protected-mode yes"
    echo "save \"\""
    echo "appendonly no"
    echo "requirepass $REDIS_PASSWORD"
    echo "masterauth $REDIS_PASSWORD"
    printf '%s\n' "$@"
  } >"$file"
}

redis_log_of() { echo "$DATA/$1/$1.log"; }  # redis/redis.log for the single server, as before

launch_redis_node() {  # NODE
  local node="$1" dir="$DATA/$1" port
  port="$(redis_port_of "$node")"
  require_free_port "$node" "$port" TTS_STACK_REDIS_PORT
  mkdir -p "$dir"
  local daemon=(--daemonize yes --pidfile "$RUN/$node.pid" --logfile "$(redis_log_of "$node")" --dir "$dir")
  case "$REDIS_MODE:$node" in
    single:redis)
      # Our own instance on its own port: the Debian package's service (6379) is left alone.
      # Protected mode (no password: loopback clients only) cannot serve the chaos suite's stack
      # in a network namespace of its own, whose clients come from that namespace's address.
      local protected=yes
      [ "$HOST" = 127.0.0.1 ] || protected=no
      (cd "$dir" && redis-server --bind "$HOST" --port "$port" --protected-mode "$protected" \
          "${daemon[@]}" --save '' --appendonly no)
      ;;
    sentinel:redis-master)
      write_redis_conf "$node" "$dir/redis.conf"
      (cd "$dir" && redis-server "$dir/redis.conf" "${daemon[@]}")
      ;;
    sentinel:redis-replica)
      write_redis_conf "$node" "$dir/redis.conf" "replicaof $HOST $REDIS_PORT"
      (cd "$dir" && redis-server "$dir/redis.conf" "${daemon[@]}")
      ;;
    sentinel:sentinel-*)
      # Written once: a sentinel records in it which node is master now.
      [ -f "$dir/sentinel.conf" ] || cat >"$dir/sentinel.conf" <<EOF
bind $HOST
port $port
requirepass $REDIS_PASSWORD
sentinel sentinel-pass $REDIS_PASSWORD
sentinel monitor $REDIS_SENTINEL_MASTER $HOST $REDIS_PORT 2
sentinel auth-pass $REDIS_SENTINEL_MASTER $REDIS_PASSWORD
sentinel down-after-milliseconds $REDIS_SENTINEL_MASTER 2000
sentinel failover-timeout $REDIS_SENTINEL_MASTER 10000
sentinel parallel-syncs $REDIS_SENTINEL_MASTER 1
EOF
      (cd "$dir" && redis-server "$dir/sentinel.conf" --sentinel "${daemon[@]}")
      ;;
    cluster:redis-node-*)
      # The bus port is port + 1000, not Redis' + 10000: that would land in the kernel's ephemeral
      # range, where an outgoing connection may hold it. A cache prefers the slots that still have
      # a master to none at all while one fails over.
      require_free_port "$node-bus" $((port + 1000)) TTS_STACK_REDIS_PORT
      write_redis_conf "$node" "$dir/redis.conf" "cluster-enabled yes" "cluster-port $((port + 1000))" \
          "cluster-config-file nodes.conf" "cluster-node-timeout 3000" "cluster-require-full-coverage no" \
          "cluster-allow-reads-when-down yes"
      (cd "$dir" && redis-server "$dir/redis.conf" "${daemon[@]}")
      ;;
  esac
}

sentinel_ready() {  # every sentinel knows the master
  local i
  for i in 1 2 3; do
    redis_cli "$(redis_port_of "sentinel-$i")" sentinel get-master-addr-by-name "$REDIS_SENTINEL_MASTER" \
      | grep -q . || return 1
  done
}

cluster_state_ok() { redis_cli "$REDIS_PORT" cluster info | grep -q 'cluster_state:ok'; }

# The first start of a cluster assigns the slots; later starts find them in nodes.conf.
create_redis_cluster() {
  redis_cli "$REDIS_PORT" cluster info | grep -q 'cluster_slots_assigned:16384' && return 0
  local addrs=() port
  for port in "${REDIS_CLUSTER_PORTS[@]}"; do addrs+=("$HOST:$port"); done
  REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli --cluster create "${addrs[@]}" \
      --cluster-replicas "$REDIS_CLUSTER_REPLICAS" --cluster-yes >"$DATA/redis-cluster-create.log" 2>&1 \
    || { cat "$DATA/redis-cluster-create.log" >&2; die "redis: creating the cluster failed"; }
}

# start_redis [NODE]: the named node, or every node of the mode that is not running.
start_redis() {
  local nodes="${1:-$(redis_nodes)}" node
  for node in $nodes; do
    pid_alive "$node" && continue
    launch_redis_node "$node"
    wait_until "$node" 20 "$(redis_log_of "$node")" "" redis_node_ready "$node"
    say "$(printf '%-13s' "$node") $HOST:$(redis_port_of "$node") (pid $(cat "$RUN/$node.pid"))"
  done
  case "$REDIS_MODE" in
    sentinel) wait_until sentinel 30 /dev/null "" sentinel_ready ;;
    cluster)
      create_redis_cluster
      wait_until redis-cluster 60 "$DATA/redis-cluster-create.log" "" cluster_state_ok
      ;;
  esac
}

stop_redis() {  # [NODE]
  if [ -n "${1:-}" ]; then stop_pid "$1" 10; return; fi
  local node
  for node in sentinel-1 sentinel-2 sentinel-3 redis-replica redis-master redis \
      redis-node-1 redis-node-2 redis-node-3 redis-node-4 redis-node-5 redis-node-6; do
    stop_pid "$node" 10  # SIGTERM: redis exits cleanly (no persistence configured)
  done
}

status_redis() {
  local node rc=0
  for node in $(redis_nodes); do
    status_line "$node" "$HOST:$(redis_port_of "$node")" redis_node_ready "$node" || rc=1
  done
  return $rc
}
