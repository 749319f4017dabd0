#!/usr/bin/env bash
# Stop the cluster `make k8s-up` started and remove what it made outside .infra/: its processes
# (by recorded PID), the containers' processes, the veth pair, the cgroups and the mount points it
# had to create. The node's mounts, bridge, pod network namespaces and iptables rules lived in
# the holder's namespaces and go with it. Binaries, certificates and images stay in .infra/k8s
# for the next `make k8s-up`; `infra/k8s/down.sh --wipe` also deletes the cluster's state (etcd,
# containerd's images, the kubelet's directories).
set -uo pipefail
# shellcheck source=infra/k8s/lib.sh
source "$(dirname "$0")/lib.sh"

# stop NAME [SECONDS]: SIGTERM the recorded PID, SIGKILL after SECONDS.
stop() {
  local name="$1" grace="${2:-20}" pid
  k8s_pid_alive "$name" || { rm -f "$K8S_RUN/$name.pid"; return 0; }
  pid="$(cat "$K8S_RUN/$name.pid")"
  kill -TERM "$pid" 2>/dev/null
  local deadline=$((SECONDS + grace))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then kill -KILL "$pid" 2>/dev/null; break; fi
    sleep 0.2
  done
  rm -f "$K8S_RUN/$name.pid"
  k8s_say "stopped $name (pid $pid)"
}

# Every process in a cgroup under the cluster's cgroup root is a container's (or a shim's):
# they were all started by this cluster's containerd.
kill_cgroup_procs() {
  local f pid
  for f in /sys/fs/cgroup/*"$K8S_CGROUP_ROOT"/ /sys/fs/cgroup/*/*"$K8S_CGROUP_ROOT"/; do
    [ -d "$f" ] || continue
    while read -r pid; do
      [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
    done < <(find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null)
  done
}

remove_cgroups() {
  local root dir
  for root in /sys/fs/cgroup/*/; do
    dir="$root${K8S_CGROUP_ROOT#/}"
    [ -d "$dir" ] || continue
    # children before parents
    find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null
  done
}

# The containerd shims (containerd-shim-runc-v2) outlive containerd by design; they run in the
# node's mount namespace, so they are found by it.
kill_node_leftovers() {
  local holder ns pid
  holder="$(k8s_holder_pid)" || return 0
  ns="$(readlink "/proc/$holder/ns/mnt")"
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [ "$pid" = "$holder" ] && continue
    [ "$(readlink "/proc/$pid/ns/mnt" 2>/dev/null)" = "$ns" ] && kill -KILL "$pid" 2>/dev/null
  done
}

main() {
  local name
  for name in keda-adapter keda-operator stack-proxy kubelet; do stop "$name"; done
  stop containerd 10
  for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$name"; done
  kill_cgroup_procs
  kill_node_leftovers
  stop holder 5
  ip link show "$K8S_VETH_HOST" >/dev/null 2>&1 && ip link del "$K8S_VETH_HOST" && k8s_say "removed veth $K8S_VETH_HOST"
  sleep 0.5
  kill_cgroup_procs
  remove_cgroups
  # mount points up.sh or images.sh had to create on the host (removed only when empty)
  if [ -f "$K8S_DIR/created-dirs" ]; then
    while read -r d; do rmdir "$d" 2>/dev/null; done <"$K8S_DIR/created-dirs"
    rm -f "$K8S_DIR/created-dirs"
  fi
  if [ "${1:-}" = "--wipe" ]; then
    rm -rf "$K8S_DIR/etcd" "$K8S_DIR/containerd" "$K8S_DIR/node" "$K8S_RUN"
    k8s_say "wiped the cluster's state (binaries, certificates and built images are kept)"
  fi
  k8s_say "cluster down"
}

main "$@"
