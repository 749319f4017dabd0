#!/usr/bin/env bash
# The cluster's certificates and kubeconfigs, made with openssl into .infra/k8s/pki/ (once; a
# second run keeps them). One CA signs every component's certificate; the aggregation layer
# (KEDA's external metrics API) gets its own front-proxy CA, as kubeadm lays it out.
set -euo pipefail
# shellcheck source=infra/k8s/lib.sh
source "$(dirname "$0")/lib.sh"

PKI="$K8S_DIR/pki"
# the first address of the service range is the `kubernetes` Service's ClusterIP
SERVICE_IP="${K8S_SERVICE_CIDR%.*}.1"

[ -f "$PKI/.complete" ] && exit 0
command -v openssl >/dev/null || k8s_die "openssl is needed to make the cluster's certificates"
rm -rf "$PKI" && mkdir -p "$PKI" && chmod 700 "$PKI"
cd "$PKI"

ca() {  # ca NAME CN
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.crt" -days 3650 \
    -subj "/CN=$2" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
}

# cert NAME CA SUBJECT USAGE [SAN]: a key and a certificate signed by CA.
cert() {
  local name="$1" ca="$2" subj="$3" usage="$4" san="${5:-}"
  openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subj" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial \
    -out "$name.crt" -days 3650 -extfile "$name.ext" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

# kubeconfig NAME CERT: a kubeconfig that authenticates with CERT's client certificate.
kubeconfig() {
  cat >"$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tts-k8s
  cluster:
    certificate-authority: $PKI/ca.crt
    server: https://$K8S_NODE_IP:$K8S_APISERVER_PORT
users:
- name: $1
  user:
    client-certificate: $PKI/$2.crt
    client-key: $PKI/$2.key
contexts:
- name: tts-k8s
  context: {cluster: tts-k8s, user: $1}
current-context: tts-k8s
EOF
}

ca ca tts-k8s-ca
ca front-proxy-ca tts-k8s-front-proxy-ca

cert apiserver ca "/CN=kube-apiserver" serverAuth \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:$SERVICE_IP,IP:$K8S_NODE_IP,IP:127.0.0.1"
cert apiserver-kubelet-client ca "/CN=kube-apiserver-kubelet-client" clientAuth
cert front-proxy-client front-proxy-ca "/CN=front-proxy-client" clientAuth
cert admin ca "/O=system:masters/CN=tts-k8s-admin" clientAuth
cert controller-manager ca "/CN=system:kube-controller-manager" clientAuth
cert scheduler ca "/CN=system:kube-scheduler" clientAuth
cert kubelet-client ca "/O=system:nodes/CN=system:node:$K8S_NODE_NAME" clientAuth
cert kubelet ca "/CN=$K8S_NODE_NAME" serverAuth "DNS:$K8S_NODE_NAME,IP:$K8S_NODE_IP"
# KEDA: the operator's gRPC metrics service and the metrics API server share one serving and
# client certificate (KEDA loads ca.crt, tls.crt and tls.key from one directory for both ends).
cert keda ca "/CN=keda-operator" "serverAuth,clientAuth" \
  "DNS:keda-operator.keda.svc.cluster.local,DNS:keda-operator.keda.svc,DNS:keda-metrics-apiserver.keda.svc,DNS:localhost,IP:127.0.0.1,IP:$K8S_NODE_IP"
mkdir -p keda-certs
cp ca.crt keda-certs/ca.crt && cp keda.crt keda-certs/tls.crt && cp keda.key keda-certs/tls.key

openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null

kubeconfig admin admin
kubeconfig controller-manager controller-manager
kubeconfig scheduler scheduler
kubeconfig kubelet kubelet-client
rm -f ./*.srl
touch .complete
k8s_say "certificates and kubeconfigs made in $PKI"
