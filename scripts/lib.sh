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

# port_busy PORT -> 0 when something listens on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# require_free_port SERVICE PORT VARIABLE: fail with a message that says how to move it.
require_free_port() {
  if port_busy "$2"; then
    die "$1: port 127.0.0.1:$2 is already in use by a process this script did not start. Stop it, or choose another port with $3=<port>."
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

# write_stack_env: the addresses of the running stack, for tools and tests (KEY=VALUE lines).
write_stack_env() {
  cat >"$DATA/stack.env" <<EOF
TTS_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_PORT
TTS_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
TTS_S3_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
TTS_S3_ACCESS_KEY_ID=$S3_ACCESS_KEY
TTS_S3_SECRET_ACCESS_KEY=$S3_SECRET_KEY
TTS_S3_REGION=us-east-1
TTS_SCHEMA_REGISTRY_URL=http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7
EOF
}
