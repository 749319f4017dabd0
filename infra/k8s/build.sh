#!/usr/bin/env bash
# Build the cluster's Go binaries once per version, into .infra/k8s/bin/<version>/:
#
#   infra/k8s/build.sh kubernetes   etcd comes from Debian; these come from the Kubernetes module
#   infra/k8s/build.sh keda         the KEDA operator and its metrics API server
#   infra/k8s/build.sh all
#
# No registry ships these binaries. The Kubernetes module cannot be `go install`ed: its go.mod
# replaces every k8s.io/* staging module with ./staging/..., which `go install` refuses. A
# writable copy of the downloaded module whose go.mod drops those replace lines and requires
# the published k8s.io/* v0.X.Y twins instead resolves (with GOWORK=off, the module ships a
# go.work). Every binary is built from that one copy, one at a time (2 shared cores), so Go's
# build cache is shared between them. A binary that exists with its stamp is never rebuilt.
set -euo pipefail
# shellcheck source=infra/k8s/lib.sh
source "$(dirname "$0")/lib.sh"

K8S_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
SRC_DIR="$K8S_DIR/src"

go_env() {
  command -v go >/dev/null || k8s_die "go is needed to build the cluster's binaries"
  export GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0
}

# The module copy with published staging modules; made once per version.
kubernetes_source() {
  local dir="$SRC_DIR/kubernetes-$K8S_VERSION" v0 mod
  v0="v0.${K8S_VERSION#v1.}"
  if [ -f "$dir/.prepared" ]; then echo "$dir"; return; fi
  mod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')"
  [ -d "$mod" ] || k8s_die "go mod download k8s.io/kubernetes@$K8S_VERSION found no module directory"
  rm -rf "$dir" && mkdir -p "$SRC_DIR"
  cp -r "$mod" "$dir" && chmod -R u+w "$dir"
  rm -rf "$dir/vendor" "$dir/go.work" "$dir/go.work.sum"
  # drop `k8s.io/x => ./staging/...` and pin every staging module (v0.0.0) at this release
  sed -i -e '/=> \.\/staging\//d' -e "s#^\(\s*k8s\.io/[a-z0-9-]*\) v0\.0\.0\$#\1 $v0#" "$dir/go.mod"
  if grep -qE '=> \./staging|k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$dir/go.mod"; then
    k8s_die "go.mod of k8s.io/kubernetes@$K8S_VERSION still points at staging after the edit"
  fi
  (cd "$dir" && go mod download >"$K8S_LOG/go-mod-download.log" 2>&1) ||
    k8s_die "resolving the published k8s.io modules failed (log: $K8S_LOG/go-mod-download.log)"
  touch "$dir/.prepared"
  echo "$dir"
}

build_kubernetes() {
  go_env
  local src cmd minor ldflags pkg=k8s.io/component-base/version
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  # the version the binaries report (kubectl version, the node's kubeletVersion, Helm's
  # kubeVersion checks); a plain `go build` would say v0.0.0-master
  ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  mkdir -p "$K8S_BIN"
  for cmd in "${K8S_COMMANDS[@]}"; do
    [ -x "$K8S_BIN/$cmd" ] && [ -f "$K8S_BIN/.$cmd.built" ] && continue
    src="${src:-$(kubernetes_source)}"
    k8s_say "building $cmd $K8S_VERSION (first run only; minutes on 2 cores; log $K8S_LOG/build-$cmd.log)"
    local started=$SECONDS
    if ! (cd "$src" && go build -ldflags "$ldflags" -o "$K8S_BIN/$cmd.tmp" "./cmd/$cmd") \
        >"$K8S_LOG/build-$cmd.log" 2>&1; then
      tail -n 30 "$K8S_LOG/build-$cmd.log" >&2
      k8s_die "building $cmd failed"
    fi
    mv "$K8S_BIN/$cmd.tmp" "$K8S_BIN/$cmd" && touch "$K8S_BIN/.$cmd.built"
    k8s_say "built $cmd in $((SECONDS - started)) s"
  done
}

# KEDA's module builds with `go build` of its packages (no replace lines to undo); the version
# is stamped the way KEDA's Makefile does it.
build_keda() {
  go_env
  local mod cmd ldflags
  mkdir -p "$KEDA_BIN"
  ldflags="-s -w -X github.com/kedacore/keda/v2/version.Version=${KEDA_VERSION#v}"
  for cmd in keda-operator keda-adapter; do
    [ -x "$KEDA_BIN/$cmd" ] && [ -f "$KEDA_BIN/.$cmd.built" ] && continue
    if [ -z "${mod:-}" ]; then
      mod="$(go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')"
      [ -d "$mod" ] || k8s_die "go mod download github.com/kedacore/keda/v2@$KEDA_VERSION found no module"
      rm -rf "$SRC_DIR/keda-$KEDA_VERSION" && mkdir -p "$SRC_DIR"
      cp -r "$mod" "$SRC_DIR/keda-$KEDA_VERSION" && chmod -R u+w "$SRC_DIR/keda-$KEDA_VERSION"
      rm -rf "$SRC_DIR/keda-$KEDA_VERSION/vendor"
    fi
    local main=./cmd/operator
    [ "$cmd" = keda-adapter ] && main=./cmd/adapter
    k8s_say "building $cmd $KEDA_VERSION (first run only; log $K8S_LOG/build-$cmd.log)"
    local started=$SECONDS
    if ! (cd "$SRC_DIR/keda-$KEDA_VERSION" && go build -ldflags "$ldflags" -o "$KEDA_BIN/$cmd.tmp" "$main") \
        >"$K8S_LOG/build-$cmd.log" 2>&1; then
      tail -n 30 "$K8S_LOG/build-$cmd.log" >&2
      k8s_die "building $cmd failed"
    fi
    mv "$KEDA_BIN/$cmd.tmp" "$KEDA_BIN/$cmd" && touch "$KEDA_BIN/.$cmd.built"
    k8s_say "built $cmd in $((SECONDS - started)) s"
  done
}

case "${1:-all}" in
  kubernetes) build_kubernetes ;;
  keda) build_keda ;;
  all) build_kubernetes; build_keda ;;
  *) k8s_die "usage: $0 kubernetes|keda|all" ;;
esac
