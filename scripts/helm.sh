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
export HELM_CACHE_HOME="$INFRA/helm/cache" HELM_CONFIG_HOME="$INFRA/helm/config" HELM_DATA_HOME="$INFRA/helm/data"

build_helm() {
  command -v go >/dev/null || die "helm: go is needed to build helm $HELM_VERSION (go install)"
  say "building helm $HELM_VERSION with go install (first run only; a few minutes)"
  if ! GOBIN="$BIN" CGO_ENABLED=0 GOFLAGS=-buildvcs=false go install \
      -ldflags "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
      "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >"$INFRA/go-helm.log" 2>&1; then
    tail -n 20 "$INFRA/go-helm.log" >&2
    die "helm: go install failed (log: $INFRA/go-helm.log)"
  fi
}

# A binary from another version (e.g. after bumping HELM_VERSION) is rebuilt.
if [ ! -x "$HELM" ] || ! "$HELM" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
  build_helm
fi

if [ "${1:-}" = "--print-path" ]; then
  echo "$HELM"
  exit 0
fi
exec "$HELM" "$@"
