#!/usr/bin/env bash
# KEDA beside the control plane (called by up.sh):
#
#   infra/k8s/keda.sh up      CRDs, namespace, ServiceAccount and RBAC from KEDA's own config/,
#                             then the operator and the metrics API server as node processes
#                             authenticated as the keda-operator ServiceAccount, and the APIService
#                             that makes the API server route external.metrics.k8s.io to them
#
# The two KEDA binaries run like the control plane does (processes inside the node's namespaces)
# instead of as pods: the cluster has no kube-proxy and no cluster DNS, which KEDA's in-cluster
# manifests assume (the operator <-> metrics server gRPC link uses a Service name). They still
# act with exactly the permissions KEDA's RBAC grants its ServiceAccount, through a token of it.
set -euo pipefail
# shellcheck source=infra/k8s/lib.sh
source "$(dirname "$0")/lib.sh"

PKI="$K8S_DIR/pki"
KEDA_SRC="$K8S_DIR/src/keda-$KEDA_VERSION"
KEDA_KUBECONFIG="$PKI/keda-operator.kubeconfig"
HOLDER="$(k8s_holder_pid)" || k8s_die "the node is not running"

kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

start() {
  local name="$1"; shift
  if k8s_pid_alive "$name"; then return 0; fi
  nsenter -t "$HOLDER" -n -m -- setsid env WATCH_NAMESPACE= POD_NAMESPACE=keda KEDA_CLUSTER_OBJECT_NAMESPACE=keda \
    KUBECONFIG="$KEDA_KUBECONFIG" \
    "$@" >"$K8S_LOG/$name.log" 2>&1 </dev/null &
  echo $! >"$K8S_RUN/$name.pid"
}

install_manifests() {
  [ -d "$KEDA_SRC/config" ] || k8s_die "KEDA's source is missing ($KEDA_SRC); run infra/k8s/build.sh keda"
  kubectl apply --server-side -f "$KEDA_SRC/config/crd/bases/" >/dev/null
  kubectl apply -f "$KEDA_SRC/config/general/namespace.yaml" \
    -f "$KEDA_SRC/config/service_account/service_account.yaml" >/dev/null
  kubectl apply -n keda -f "$KEDA_SRC/config/rbac/role.yaml" -f "$KEDA_SRC/config/rbac/role_binding.yaml" >/dev/null
  # cluster-scoped, plus one RoleBinding in kube-system that names its namespace itself
  kubectl apply -f "$KEDA_SRC/config/metrics-server/role.yaml" \
    -f "$KEDA_SRC/config/metrics-server/role_binding.yaml" >/dev/null
  kubectl wait --for=condition=Established --timeout 60s crd/scaledobjects.keda.sh crd/triggerauthentications.keda.sh >/dev/null
}

# A kubeconfig holding a token of the keda-operator ServiceAccount (a year; the cluster is local).
keda_kubeconfig() {
  local token
  token="$(kubectl -n keda create token keda-operator --duration 8760h)"
  cat >"$KEDA_KUBECONFIG" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tts-k8s
  cluster:
    certificate-authority: $PKI/ca.crt
    server: https://$K8S_NODE_IP:$K8S_APISERVER_PORT
users:
- name: keda-operator
  user:
    token: $token
contexts:
- name: tts-k8s
  context: {cluster: tts-k8s, user: keda-operator, namespace: keda}
current-context: tts-k8s
EOF
  chmod 600 "$KEDA_KUBECONFIG"
}

start_keda() {
  # every listener of the operator stays on the node's loopback; the metrics server's HTTPS port
  # is on the node address because the API server proxies external.metrics.k8s.io to it
  start keda-operator "$KEDA_BIN/keda-operator" --leader-elect=false --zap-log-level=info \
    --zap-encoder=console --zap-time-encoding=rfc3339 \
    --metrics-bind-address 127.0.0.1:8085 --health-probe-bind-address 127.0.0.1:8081 \
    --metrics-service-bind-address 127.0.0.1:9666 --cert-dir "$PKI/keda-certs" \
    --enable-cert-rotation=false --enable-webhook-patching=false --enable-apiservice-patching=false \
    --ca-dir "$PKI/keda-certs"
  start keda-adapter "$KEDA_BIN/keda-adapter" --secure-port "$K8S_KEDA_METRICS_PORT" \
    --bind-address "$K8S_NODE_IP" --port 8086 \
    --tls-cert-file "$PKI/keda-certs/tls.crt" --tls-private-key-file "$PKI/keda-certs/tls.key" \
    --cert-dir "$PKI/keda-certs" --metrics-service-address "127.0.0.1:9666" \
    --lister-kubeconfig "$KEDA_KUBECONFIG" --authentication-kubeconfig "$KEDA_KUBECONFIG" \
    --authorization-kubeconfig "$KEDA_KUBECONFIG" --zap-log-level=info
}

register_api() {
  local ca
  ca="$(base64 -w0 <"$PKI/ca.crt")"
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: keda-metrics-apiserver, namespace: keda}
spec:
  ports: [{name: https, port: 443, targetPort: $K8S_KEDA_METRICS_PORT}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: keda-metrics-apiserver, namespace: keda}
subsets:
- addresses: [{ip: $K8S_NODE_IP}]
  ports: [{name: https, port: $K8S_KEDA_METRICS_PORT}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.external.metrics.k8s.io}
spec:
  service: {name: keda-metrics-apiserver, namespace: keda, port: 443}
  group: external.metrics.k8s.io
  version: v1beta1
  caBundle: $ca
  groupPriorityMinimum: 100
  versionPriority: 100
EOF
}

wait_api() {
  local deadline=$((SECONDS + 90)) name
  until kubectl get --raw /apis/external.metrics.k8s.io/v1beta1 >/dev/null 2>&1; do
    for name in keda-operator keda-adapter; do
      k8s_pid_alive "$name" || { tail -n 30 "$K8S_LOG/$name.log" >&2; k8s_die "$name exited (log $K8S_LOG/$name.log)"; }
    done
    [ "$SECONDS" -lt "$deadline" ] || { tail -n 20 "$K8S_LOG/keda-adapter.log" >&2; k8s_die "the external metrics API did not answer within 90 s"; }
    sleep 1
  done
}

case "${1:-up}" in
  up)
    install_manifests
    [ -f "$KEDA_KUBECONFIG" ] && k8s_pid_alive keda-operator || keda_kubeconfig
    start_keda
    register_api
    wait_api
    k8s_say "KEDA $KEDA_VERSION: operator and metrics API server up; external.metrics.k8s.io answers"
    ;;
  *) k8s_die "usage: $0 up" ;;
esac
