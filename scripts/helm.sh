#!/usr/bin/env bash
# Run the pinned Helm, building it with `go install` into .infra/bin on first use.
#
#   scripts/helm.sh lint --strict helm/tts-stream
#   scripts/helm.sh template rel helm/tts-stream -f helm/tts-stream/ci/minimal-values.yaml
#   scripts/helm.sh --print-path        # build if needed, print the binary's path
#
# No registry ships a Linux helm binary, so it is compiled from the Go module proxy (3-6 minutes
# on 2 cores the first time, cached afterwards). Helm's cache, config and data stay under .infra/
# so nothing leaks into the user's home directory.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

HELM="$BIN/helm"
# Helm's release builds stamp the default Kubernetes version (used by `helm template` without
# --kube-version) from the client-go they link: v0.37 -> 1.37. A bare `go install` leaves 1.20.
HELM_KUBE_MINOR=37
STAMP="$BIN/.helm-$HELM_VERSION-kube1.$HELM_KUBE_MINOR"
export HELM_CACHE_HOME="$INFRA/helm/cache" HELM_CONFIG_HOME="$INFRA/helm/config" HELM_DATA_HOME="$INFRA/helm/data"

build_helm() {
  command -v go >/dev/null || die "helm: go is needed to build helm $HELM_VERSION (go install)"
  say "building helm $HELM_VERSION with go install (first run only; a few minutes)"
  local pkg=helm.sh/helm/v3
  local ldflags="-X $pkg/internal/version.version=$HELM_VERSION"
  ldflags+=" -X $pkg/pkg/chartutil.k8sVersionMajor=1 -X $pkg/pkg/chartutil.k8sVersionMinor=$HELM_KUBE_MINOR"
  ldflags+=" -X $pkg/pkg/lint/rules.k8sVersionMajor=1 -X $pkg/pkg/lint/rules.k8sVersionMinor=$HELM_KUBE_MINOR"
  if ! GOBIN="$BIN" CGO_ENABLED=0 GOFLAGS=-buildvcs=false go install -ldflags "$ldflags" \
      "$pkg/cmd/helm@$HELM_VERSION" >"$INFRA/go-helm.log" 2>&1; then
    tail -n 20 "$INFRA/go-helm.log" >&2
    die "helm: go install failed (log: $INFRA/go-helm.log)"
  fi
  rm -f "$BIN"/.helm-* && touch "$STAMP"
}

# A binary from another version or build (e.g. after bumping HELM_VERSION) is rebuilt.
[ -x "$HELM" ] && [ -f "$STAMP" ] || build_helm

if [ "${1:-}" = "--print-path" ]; then
  echo "$HELM"
  exit 0
fi
exec "$HELM" "$@"
