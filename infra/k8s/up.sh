#!/usr/bin/env bash
# Start a single-node Kubernetes cluster made of real components (make k8s-up):
#
#   etcd (Debian) · kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl
#   (built from the Kubernetes module, infra/k8s/build.sh) · containerd + runc (Debian) · CNI
#   bridge networking (Debian's plugins) · KEDA's operator and metrics API server (built from
#   the KEDA module) beside the control plane · a proxy that lets pods reach the local stack.
#
# Everything runs inside one network namespace and one private mount namespace held by a small
# holder process (infra/k8s/lib.sh), so nothing binds on the host and no mount leaks out. The
# host reaches the node over a veth pair it creates; `make k8s-down` removes all of it. A second
# run with the cluster already up is a no-op; with the binaries built it starts in seconds.
set -euo pipefail
# shellcheck source=infra/k8s/lib.sh
source "$(dirname "$0")/lib.sh"

PKI="$K8S_DIR/pki"
NODE="$K8S_DIR/node"
CONTAINERD_SOCK="$K8S_RUN/containerd/containerd.sock"
KUBECTL="$K8S_BIN/kubectl"
STARTED=$SECONDS

DEBIAN_PACKAGES=(etcd-server etcd-client containerd runc containernetworking-plugins buildah mmdebstrap iptables)

preflight() {
  [ "$(id -u)" = 0 ] || k8s_die "the cluster needs root (namespaces, mounts, cgroups)"
  local missing=() tool
  for tool in nsenter unshare ip openssl curl etcd containerd runc ctr iptables buildah mmdebstrap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  [ -x /usr/lib/cni/bridge ] || missing+=("containernetworking-plugins")
  if [ "${#missing[@]}" -gt 0 ]; then
    k8s_say "installing Debian's ${DEBIAN_PACKAGES[*]} (missing: ${missing[*]})"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${DEBIAN_PACKAGES[@]}"; } \
        >"$K8S_LOG/apt.log" 2>&1; then
      tail -n 20 "$K8S_LOG/apt.log" >&2
      k8s_die "apt-get install failed (log: $K8S_LOG/apt.log)"
    fi
  fi
  [ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] ||
    k8s_die "no cgroup hierarchy found under /sys/fs/cgroup"
  # unix socket paths are limited to 107 bytes
  [ "${#CONTAINERD_SOCK}" -lt 100 ] ||
    k8s_die "the checkout's path is too long for containerd's socket ($CONTAINERD_SOCK); use a shorter TTS_STACK_DIR"
}

# start NAME BINARY ARGS...: run a component inside the node, logs under log/, PID under run/.
start() {
  local name="$1"; shift
  if k8s_pid_alive "$name"; then return 0; fi
  nsenter -t "$HOLDER" -n -m -- setsid "$@" >"$K8S_LOG/$name.log" 2>&1 </dev/null &
  echo $! >"$K8S_RUN/$name.pid"
}

# wait_for WHAT SECONDS NAME COMMAND...: poll COMMAND; fail with NAME's log when it dies or stalls.
wait_for() {
  local what="$1" seconds="$2" name="$3"; shift 3
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ -n "$name" ] && ! k8s_pid_alive "$name"; then
      tail -n 30 "$K8S_LOG/$name.log" >&2 || true
      k8s_die "$name exited while waiting for $what (log: $K8S_LOG/$name.log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      [ -n "$name" ] && tail -n 30 "$K8S_LOG/$name.log" >&2
      k8s_die "$what not ready within ${seconds}s"
    fi
    sleep 0.5
  done
}

kubectl() { "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# ------------------------------------------------------------------- namespaces and network ------
start_holder() {
  if HOLDER="$(k8s_holder_pid)"; then return 0; fi
  mkdir -p "$K8S_DIR/bin"
  ln -sf "$(command -v sleep)" "$K8S_DIR/bin/tts-k8s-holder"
  # the holder exec's itself into new network and mount namespaces and sleeps; every cluster
  # process joins them with nsenter, and they disappear when it and its children stop
  setsid unshare --net --mount --propagation private -- "$K8S_DIR/bin/tts-k8s-holder" infinity \
    >/dev/null 2>&1 </dev/null &
  echo $! >"$K8S_RUN/holder.pid"
  for _ in $(seq 50); do HOLDER="$(k8s_holder_pid)" && break; sleep 0.1; done
  [ -n "${HOLDER:-}" ] || k8s_die "the namespace holder did not start"
  setup_network
  setup_mounts
}

setup_network() {
  ip link show "$K8S_VETH_HOST" >/dev/null 2>&1 && ip link del "$K8S_VETH_HOST"
  ip link add "$K8S_VETH_HOST" type veth peer name "${K8S_VETH_HOST}n"
  ip link set "${K8S_VETH_HOST}n" netns "$HOLDER"
  ip addr add "$K8S_HOST_IP/30" dev "$K8S_VETH_HOST"
  ip link set "$K8S_VETH_HOST" up
  nsenter -t "$HOLDER" -n -- ip link set lo up
  nsenter -t "$HOLDER" -n -- ip link set "${K8S_VETH_HOST}n" name "$K8S_VETH_NODE"
  nsenter -t "$HOLDER" -n -- ip addr add "$K8S_NODE_IP/30" dev "$K8S_VETH_NODE"
  nsenter -t "$HOLDER" -n -- ip link set "$K8S_VETH_NODE" up
  # No default route inside the node: pods reach the node's own address (the stack proxy, the
  # API server) and each other, nothing beyond the host end of the veth.
}

setup_mounts() {
  mkdir -p "$NODE/var-log" "$NODE/sysctl"
  # /run/netns, /var/lib/cni, /run/containerd and /var/lib/kubelet are where ip-netns, CNI,
  # containerd's shims (a fixed path in containerd 1.6) and the kubelet's device-plugin socket (a
  # fixed path, whatever --root-dir says) keep state: private tmpfs mounts inside the node
  local d
  for d in /run/netns /var/lib/cni /run/containerd /var/lib/kubelet; do mountpoint_dir "$d"; done
  node_exec mount --make-rshared /
  for d in /run/netns /var/lib/cni /run/containerd /var/lib/kubelet; do
    node_exec mount -t tmpfs -o size=64m,mode=755 tmpfs-tts-k8s "$d"
  done
  # kubelet writes /var/log/pods and /var/log/containers (a fixed path): keep them in .infra
  node_exec mount --bind "$NODE/var-log" /var/log
  # The kubelet sets kernel tunables it expects (vm.overcommit_memory=1, kernel.panic=10,
  # kernel.panic_on_oops=1, ...) when they differ: host-wide settings of a shared machine. Inside
  # the node, files with the expected values are mounted over them, so it reads what it wants
  # and never writes the host's.
  local kv key value
  for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
      kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
    key="${kv%%=*}"; value="${kv#*=}"
    printf '%s\n' "$value" >"$NODE/sysctl/${key//\//.}"
    node_exec mount --bind "$NODE/sysctl/${key//\//.}" "/proc/sys/$key"
  done
}

# --------------------------------------------------------------------------- control plane -------
start_etcd() {
  start etcd etcd --name tts-k8s --data-dir "$K8S_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$K8S_ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$K8S_ETCD_PORT" \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster tts-k8s=http://127.0.0.1:2380 --quota-backend-bytes 2147483648 \
    --auto-compaction-retention 1h --logger zap --log-level warn
  wait_for etcd 30 etcd node_exec curl -sf "http://127.0.0.1:$K8S_ETCD_PORT/health"
}

# Debian's etcd 3.4.23 has no watch progress requests: the API server notices ("RequestWatchProgress
# feature is not supported") and serves consistent lists from etcd. The list-cost estimator would
# still ask the watch cache for its keys every minute and log a timeout each time: it is off.
start_apiserver() {
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$K8S_ETCD_PORT" \
    --bind-address "$K8S_NODE_IP" --advertise-address "$K8S_NODE_IP" --secure-port "$K8S_APISERVER_PORT" \
    --service-cluster-ip-range "$K8S_SERVICE_CIDR" --allow-privileged=true \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$PKI/front-proxy-client.crt" --proxy-client-key-file "$PKI/front-proxy-client.key" \
    --enable-aggregator-routing=true --profiling=false --event-ttl 2h \
    --feature-gates SizeBasedListCostEstimate=false
  wait_for kube-apiserver 120 kube-apiserver kubectl get --raw /readyz
  # the API server's client certificate for kubelets (logs, exec, port-forward, metrics proxy)
  kubectl create clusterrolebinding tts-k8s:apiserver-kubelet-api-admin --clusterrole system:kubelet-api-admin \
    --user kube-apiserver-kubelet-client --dry-run=client -o yaml | kubectl apply -f - >/dev/null
}

start_controllers() {
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$PKI/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$PKI/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$PKI/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --root-ca-file "$PKI/ca.crt" --service-account-private-key-file "$PKI/sa.key" \
    --service-cluster-ip-range "$K8S_SERVICE_CIDR" \
    --allocate-node-cidrs=true --cluster-cidr "$K8S_POD_CIDR" --node-cidr-mask-size 24 \
    --profiling=false
  start kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$PKI/scheduler.kubeconfig" \
    --authentication-kubeconfig "$PKI/scheduler.kubeconfig" \
    --authorization-kubeconfig "$PKI/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --profiling=false
}

# ------------------------------------------------------------------------------ the node ---------
write_containerd_config() {
  mkdir -p "$NODE/cni/net.d" "$NODE/containerd"
  cat >"$NODE/cni/net.d/10-tts-k8s.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "tts-k8s",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$K8S_POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "/var/lib/cni/networks"
      }
    }
  ]
}
EOF
  cat >"$NODE/containerd/config.toml" <<EOF
version = 2
root = "$K8S_DIR/containerd/root"
state = "$K8S_RUN/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "tts-k8s.local/pause:3.10"
  # This machine's root lacks CAP_SYS_RESOURCE, so no process may lower its OOM score below 0;
  # containerd then clamps the kubelet's negative scores (-998 for sandboxes) at its own (0).
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$K8S_RUN/runc"
EOF
}

start_containerd() {
  write_containerd_config
  mkdir -p "$(dirname "$CONTAINERD_SOCK")"
  start containerd containerd --config "$NODE/containerd/config.toml"
  wait_for containerd 30 containerd node_exec ctr --address "$CONTAINERD_SOCK" version
  "$(dirname "$0")/images.sh" pause
}

write_kubelet_config() {
  mkdir -p "$NODE/kubelet"
  cat >"$NODE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $K8S_NODE_IP
port: $K8S_KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
cgroupRoot: $K8S_CGROUP_ROOT
# no CAP_SYS_RESOURCE here (see containerd's restrict_oom_score_adj): keep the kubelet's own at 0
oomScoreAdj: 0
failCgroupV1: false
failSwapOn: false
resolvConf: ""
maxPods: 40
serializeImagePulls: false
# The disk is shared with other work: evict only when it is nearly full, never collect images
# we imported by hand (they cannot be pulled again).
evictionHard: {memory.available: 200Mi, nodefs.available: 3%, imagefs.available: 3%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
podLogsDir: /var/log/pods
EOF
}

make_cgroup_roots() {
  local sub
  for sub in /sys/fs/cgroup/*/; do
    [ -f "$sub/cgroup.procs" ] || continue
    mkdir -p "$sub${K8S_CGROUP_ROOT#/}"
  done
}

start_kubelet() {
  write_kubelet_config
  make_cgroup_roots
  start kubelet "$K8S_BIN/kubelet" --config "$NODE/kubelet/config.yaml" \
    --kubeconfig "$PKI/kubelet.kubeconfig" --root-dir "$NODE/kubelet/root" \
    --hostname-override "$K8S_NODE_NAME" --node-ip "$K8S_NODE_IP" --v 1
  wait_for "node $K8S_NODE_NAME Ready" 120 kubelet \
    kubectl wait --for=condition=Ready "node/$K8S_NODE_NAME" --timeout 2s
}

# -------------------------------------------------------------------------- the stack proxy ------
start_stack_proxy() {
  local ports=("--port" "$K8S_KAFKA_POD_PORT")
  ports+=("--port" "${TTS_STACK_REDIS_PORT:-6390}" "--port" "${TTS_STACK_S3_PORT:-7070}")
  if k8s_pid_alive stack-proxy; then return 0; fi
  python3 "$(dirname "$0")/netns_proxy.py" --netns "/proc/$HOLDER/ns/net" --listen "$K8S_NODE_IP" \
    "${ports[@]}" >"$K8S_LOG/stack-proxy.log" 2>&1 </dev/null &
  echo $! >"$K8S_RUN/stack-proxy.pid"
  wait_for "the stack proxy" 10 stack-proxy grep -q forwarding "$K8S_LOG/stack-proxy.log"
}

main() {
  preflight
  "$(dirname "$0")/build.sh" all
  "$(dirname "$0")/certs.sh"
  start_holder
  start_etcd
  start_apiserver
  start_controllers
  start_containerd
  start_kubelet
  start_stack_proxy
  "$(dirname "$0")/keda.sh" up
  cat >"$K8S_DIR/cluster.env" <<EOF
KUBECONFIG=$KUBECONFIG_ADMIN
TTS_K8S_NODE_IP=$K8S_NODE_IP
TTS_K8S_KAFKA_POD_BOOTSTRAP=$K8S_NODE_IP:$K8S_KAFKA_POD_PORT
TTS_K8S_REDIS_URL=redis://$K8S_NODE_IP:${TTS_STACK_REDIS_PORT:-6390}/0
TTS_K8S_S3_ENDPOINT_URL=http://$K8S_NODE_IP:${TTS_STACK_S3_PORT:-7070}
TTS_K8S_KUBECTL=$KUBECTL
TTS_K8S_CONTAINERD_SOCK=$CONTAINERD_SOCK
EOF
  k8s_say "cluster up in $((SECONDS - STARTED)) s: export KUBECONFIG=$KUBECONFIG_ADMIN; kubectl at $KUBECTL"
}

main "$@"
