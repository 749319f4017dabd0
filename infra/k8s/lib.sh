# shellcheck shell=bash
# Shared settings of the single-node cluster scripts (infra/k8s/*.sh). Sourced, never executed.
#
# The node lives in namespaces of its own: a network namespace joined to the host by one veth
# pair (host side $K8S_HOST_IP, node side $K8S_NODE_IP) and a private mount namespace, both held
# open by one small holder process. Every cluster process (etcd, the control plane, containerd,
# kubelet, KEDA, the stack proxy) runs inside them, so the cluster's mounts, interfaces, bridge,
# iptables rules and pod network vanish when the holder and its children stop. Binaries,
# certificates, data and logs stay under $K8S_DIR (git-ignored).

K8S_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
K8S_INFRA="${TTS_STACK_DIR:-$K8S_ROOT/.infra}"
K8S_DIR="$K8S_INFRA/k8s"
K8S_RUN="$K8S_DIR/run"
K8S_LOG="$K8S_DIR/log"
mkdir -p "$K8S_RUN" "$K8S_LOG"

# Pinned versions: every k8s.io module of the Kubernetes build is held at K8S_VERSION's v0 twin.
# 1.34 is the newest release whose kubelet still runs on cgroup v1 without an opt-out
# (1.35 refuses unless failCgroupV1: false) and one KEDA 2.20 supports (1.33-1.35).
K8S_VERSION="${TTS_K8S_VERSION:-v1.34.4}"
KEDA_VERSION="${TTS_KEDA_VERSION:-v2.20.2}"

K8S_BIN="$K8S_DIR/bin/$K8S_VERSION"
KEDA_BIN="$K8S_DIR/bin/keda-$KEDA_VERSION"

# Addresses: a /30 between the host and the node, pods on a bridge inside the node.
K8S_NET_PREFIX="${TTS_K8S_NET_PREFIX:-10.213.0}"
K8S_HOST_IP="$K8S_NET_PREFIX.1"
K8S_NODE_IP="$K8S_NET_PREFIX.2"
K8S_POD_CIDR="${TTS_K8S_POD_CIDR:-10.214.0.0/24}"
K8S_SERVICE_CIDR="${TTS_K8S_SERVICE_CIDR:-10.215.0.0/24}"
K8S_VETH_HOST="${TTS_K8S_VETH:-ttsk8s0}"
K8S_VETH_NODE="eth0"
K8S_NODE_NAME="${TTS_K8S_NODE_NAME:-tts-node}"
K8S_CGROUP_ROOT="/tts-k8s"

# Ports on the node address (inside the node's network namespace, so no host port is taken).
K8S_APISERVER_PORT=6443
K8S_ETCD_PORT=2379
K8S_KUBELET_PORT=10250
K8S_KEDA_METRICS_PORT=6444

# Stack ports the proxy opens on the node address (the same numbers as on the host's loopback,
# and Kafka's listener for pods, which advertises the node address).
K8S_KAFKA_POD_PORT="${TTS_STACK_KAFKA_POD_PORT:-$(( ${TTS_STACK_KAFKA_PORT:-9092} + 2 ))}"

KUBECONFIG_ADMIN="$K8S_DIR/pki/admin.kubeconfig"

k8s_say() { printf '[k8s] %s\n' "$*"; }

# mountpoint DIR: make sure DIR exists so a private mount can cover it; a directory this creates
# is recorded and removed again by down.sh (only if empty).
mountpoint_dir() {
  [ -d "$1" ] && return 0
  mkdir -p "$1"
  echo "$1" >>"$K8S_DIR/created-dirs"
}
k8s_die() { printf '[k8s] ERROR: %s\n' "$*" >&2; exit 1; }

# The holder's PID: the process whose network and mount namespaces are the node's.
k8s_holder_pid() {
  local f="$K8S_RUN/holder.pid" pid
  [ -f "$f" ] || return 1
  pid="$(cat "$f")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "tts-k8s-holder" ] || return 1
  echo "$pid"
}

# node_exec CMD...: run CMD in the node's network and mount namespaces.
node_exec() {
  local pid
  pid="$(k8s_holder_pid)" || k8s_die "the node is not running (make k8s-up)"
  nsenter -t "$pid" -n -m -- "$@"
}

# k8s_pid_alive NAME -> 0 when the process recorded under NAME still runs.
k8s_pid_alive() {
  local f="$K8S_RUN/$1.pid" pid
  [ -f "$f" ] || return 1
  pid="$(cat "$f")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}
