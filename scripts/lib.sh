# shellcheck shell=bash
# Shared settings and helpers for the local stack scripts. Sourced, never executed.
#
# Every service binds to 127.0.0.1 and keeps its downloads, data, logs and PID files under
# $INFRA (git-ignored). Ports can be moved with the TTS_STACK_* variables when a default is busy.
#
# A second, private instance (the chaos tests stop and restart its services) shares the
# downloads and builds but keeps data, logs, PID files and stack.env in its own folder:
#   TTS_STACK_DATA_DIR=/some/dir TTS_STACK_KAFKA_PORT=... TTS_STACK_REDIS_PORT=... scripts/stack.sh up
# Unset, the data folder is $INFRA itself, which is exactly the layout of the shared stack.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INFRA="${TTS_STACK_DIR:-$ROOT/.infra}"
DATA="${TTS_STACK_DATA_DIR:-$INFRA}"
RUN="$DATA/run"
BIN="$INFRA/bin"
mkdir -p "$RUN" "$BIN"

KAFKA_PORT="${TTS_STACK_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${TTS_STACK_KAFKA_CONTROLLER_PORT:-9093}"
REDIS_PORT="${TTS_STACK_REDIS_PORT:-6390}"
S3_PORT="${TTS_STACK_S3_PORT:-7070}"

# The address every service binds and advertises. Always 127.0.0.1, except for a stack the chaos
# suite runs inside a network namespace of its own (tests/chaos/netns.py): there, the address of
# that namespace's end of a veth pair the test created.
HOST="${TTS_STACK_HOST:-127.0.0.1}"

# Kafka: one combined broker+controller (the default), or BROKERS=3: three combined nodes that
# form a three-voter KRaft quorum (docs/reliability.md says why). Node N listens on
# KAFKA_PORT + 2(N-1) and its controller on KAFKA_CONTROLLER_PORT + 2(N-1) unless
# TTS_STACK_KAFKA_PORTS / TTS_STACK_KAFKA_CONTROLLER_PORTS list them (comma-separated).
# A stack keeps the shape it was started with: `status`, `stop` and `down` read it back from its
# stack.env when the variables are not given again.
stack_env_value() { if [ -f "$DATA/stack.env" ]; then sed -n "s/^$1=//p" "$DATA/stack.env" | head -n 1; fi; }
BROKERS="${TTS_STACK_BROKERS:-$(stack_env_value TTS_STACK_BROKERS)}"
BROKERS="${BROKERS:-1}"
case "$BROKERS" in 1|3) ;; *) echo "[stack] ERROR: BROKERS must be 1 or 3 (got $BROKERS)" >&2; exit 1 ;; esac
kafka_ports_from() {  # LIST BASE: the list, else BASE, BASE+2, ... for BROKERS nodes
  if [ -n "$1" ]; then tr ',' ' ' <<<"$1"; return; fi
  local i out=""
  for ((i = 0; i < BROKERS; i++)); do out+="$(($2 + 2 * i)) "; done
  printf '%s' "$out"
}
read -r -a KAFKA_PORTS <<<"$(kafka_ports_from "${TTS_STACK_KAFKA_PORTS:-}" "$KAFKA_PORT")"
read -r -a KAFKA_CONTROLLER_PORTS <<<"$(kafka_ports_from "${TTS_STACK_KAFKA_CONTROLLER_PORTS:-}" "$KAFKA_CONTROLLER_PORT")"
if [ "${#KAFKA_PORTS[@]}" != "$BROKERS" ] || [ "${#KAFKA_CONTROLLER_PORTS[@]}" != "$BROKERS" ]; then
  echo "[stack] ERROR: give $BROKERS ports in TTS_STACK_KAFKA_PORTS and TTS_STACK_KAFKA_CONTROLLER_PORTS" >&2
  exit 1
fi

# Redis: one server (the default); REDIS=sentinel: a master (REDIS_PORT), a replica (+1) and three
# sentinels (+2..+4); REDIS=cluster: three masters (REDIS_PORT..+2), each with a replica (+3..+5)
# when TTS_STACK_REDIS_CLUSTER_REPLICAS=1. Sentinel and cluster nodes want a password.
REDIS_MODE="${TTS_STACK_REDIS_MODE:-$(stack_env_value TTS_STACK_REDIS_MODE)}"
REDIS_MODE="${REDIS_MODE:-single}"
case "$REDIS_MODE" in
  single|sentinel|cluster) ;;
  *) echo "[stack] ERROR: REDIS must be single, sentinel or cluster (got $REDIS_MODE)" >&2; exit 1 ;;
esac
REDIS_CLUSTER_REPLICAS="${TTS_STACK_REDIS_CLUSTER_REPLICAS:-$(stack_env_value TTS_STACK_REDIS_CLUSTER_REPLICAS)}"
REDIS_CLUSTER_REPLICAS="${REDIS_CLUSTER_REPLICAS:-0}"
REDIS_SENTINEL_MASTER="${TTS_STACK_REDIS_SENTINEL_MASTER:-tts-master}"
# Local-only password of the replicated Redis modes. Never used outside this machine.
REDIS_PASSWORD="${TTS_STACK_REDIS_PASSWORD:-ttsstream-local-redis}"
REDIS_CLUSTER_PORTS=()
for ((i = 0; i < 3 * (1 + REDIS_CLUSTER_REPLICAS); i++)); do REDIS_CLUSTER_PORTS+=($((REDIS_PORT + i))); done
REGISTRY_PORT="${TTS_STACK_REGISTRY_PORT:-8081}"
REGISTRY_MGMT_PORT="${TTS_STACK_REGISTRY_MGMT_PORT:-8091}"

# Local-only credentials for the S3 server. Never used outside this machine.
S3_ACCESS_KEY="${TTS_STACK_S3_ACCESS_KEY:-ttsstream-local}"
S3_SECRET_KEY="${TTS_STACK_S3_SECRET_KEY:-ttsstream-local-secret}"
S3_BUCKETS="${TTS_STACK_S3_BUCKETS:-tts-audio tts-voices}"

# Pinned versions: bump deliberately, the tests run against exactly these.
KAFKA_VERSION=4.4.0
VERSITYGW_VERSION=v1.8.0
APICURIO_VERSION=3.3.3
HELM_VERSION=v3.22.0

PYTHON="${TTS_STACK_PYTHON:-$ROOT/.venv/bin/python}"

say() { printf '[stack] %s\n' "$*"; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

# pid_alive NAME -> 0 when the PID recorded for NAME runs and is the process we started.
pid_alive() {
  local f="$RUN/$1.pid" pid
  [ -f "$f" ] || return 1
  pid="$(cat "$f")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # A recycled PID must not be mistaken for ours: every service is started with its working
  # directory inside $DATA (redis rewrites its command line, so that cannot be the check).
  case "$(readlink "/proc/$pid/cwd" 2>/dev/null)" in "$DATA"/*) return 0 ;; *) return 1 ;; esac
}

# port_busy PORT -> 0 when something listens on HOST:PORT.
port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# require_free_port SERVICE PORT VARIABLE: fail with a message that says how to move it.
require_free_port() {
  if port_busy "$2"; then
    die "$1: port $HOST:$2 is already in use by a process this script did not start. Stop it, or choose another port with $3=<port>."
  fi
}

# wait_until SERVICE SECONDS LOGFILE PIDNAME COMMAND...: poll COMMAND until it succeeds.
wait_until() {
  local service="$1" seconds="$2" log="$3" pidname="$4"; shift 4
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ -n "$pidname" ] && ! pid_alive "$pidname"; then
      printf '[stack] %s exited during start-up; last lines of %s:\n' "$service" "$log" >&2
      tail -n 30 "$log" >&2 || true
      rm -f "$RUN/$pidname.pid"
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      printf '[stack] %s did not become ready within %ss; last lines of %s:\n' "$service" "$seconds" "$log" >&2
      tail -n 30 "$log" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

# stop_pid NAME [SECONDS]: SIGTERM the recorded process, wait, then SIGKILL if it hangs.
stop_pid() {
  local name="$1" grace="${2:-30}" pid
  if ! pid_alive "$name"; then rm -f "$RUN/$name.pid"; return 0; fi
  pid="$(cat "$RUN/$name.pid")"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + grace))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "$name (pid $pid) ignored SIGTERM for ${grace}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$RUN/$name.pid"
  say "stopped $name (pid $pid)"
}

join_addresses() {  # PORT... -> HOST:PORT,HOST:PORT,...
  local port out=""
  for port in "$@"; do out+="${out:+,}$HOST:$port"; done
  printf '%s' "$out"
}

# write_stack_env: the addresses of the running stack, for tools and tests (KEY=VALUE lines),
# in the variables the product itself reads.
write_stack_env() {
  {
    echo "TTS_KAFKA_BOOTSTRAP_SERVERS=$(join_addresses "${KAFKA_PORTS[@]}")"
    echo "TTS_STACK_BROKERS=$BROKERS"
    echo "TTS_REDIS_URL=redis://$HOST:$REDIS_PORT/0"
    echo "TTS_STACK_REDIS_MODE=$REDIS_MODE"
    case "$REDIS_MODE" in
      sentinel)
        echo "TTS_REDIS_SENTINELS=$(join_addresses $((REDIS_PORT + 2)) $((REDIS_PORT + 3)) $((REDIS_PORT + 4)))"
        echo "TTS_REDIS_SENTINEL_MASTER=$REDIS_SENTINEL_MASTER"
        echo "TTS_REDIS_PASSWORD=$REDIS_PASSWORD"
        echo "TTS_REDIS_SENTINEL_PASSWORD=$REDIS_PASSWORD"
        ;;
      cluster)
        echo "TTS_STACK_REDIS_CLUSTER_REPLICAS=$REDIS_CLUSTER_REPLICAS"
        echo "TTS_REDIS_CLUSTER_NODES=$(join_addresses "${REDIS_CLUSTER_PORTS[@]}")"
        echo "TTS_REDIS_PASSWORD=$REDIS_PASSWORD"
        ;;
    esac
    echo "TTS_S3_ENDPOINT_URL=http://$HOST:$S3_PORT"
    echo "TTS_S3_ACCESS_KEY_ID=$S3_ACCESS_KEY"
    echo "TTS_S3_SECRET_ACCESS_KEY=$S3_SECRET_KEY"
    echo "TTS_S3_REGION=us-east-1"
    echo "TTS_SCHEMA_REGISTRY_URL=http://$HOST:$REGISTRY_PORT/apis/ccompat/v7"
  } >"$DATA/stack.env"
}
