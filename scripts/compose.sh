#!/usr/bin/env bash
# Run the Docker Compose CLI (v2) without Docker: `scripts/compose.sh config --quiet` validates
# docker-compose.yml exactly as `docker compose config` does (no engine is needed for that).
#
# The binary is compiled into .infra/bin/docker-compose on first use (about 100 MB, a few
# minutes). `go install module/cmd@version` refuses compose's module because its go.mod has
# `exclude` directives, so it is built from a throw-away wrapper module that repeats them.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

COMPOSE_VERSION=v2.40.3
COMPOSE="$BIN/docker-compose"
STAMP="$BIN/.docker-compose-$COMPOSE_VERSION"

build_compose() {
  command -v go >/dev/null || die "compose: go is needed to build docker compose $COMPOSE_VERSION"
  local work="$INFRA/compose-build"
  say "building docker compose $COMPOSE_VERSION with go build (first run only; a few minutes)"
  rm -rf "$work" && mkdir -p "$work"
  cat >"$work/go.mod" <<MOD
module tts-stream.local/compose-build

go 1.24

// Repeated from compose's own go.mod: the main module must carry them for the build to resolve.
exclude (
	github.com/davecgh/go-spew v1.1.2-0.20180830191138-d8f796af33cc
	github.com/pmezard/go-difflib v1.0.1-0.20181226105442-5d4384ee4fb2
)
MOD
  if ! (cd "$work" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
        go get "github.com/docker/compose/v2/cmd@$COMPOSE_VERSION" &&
        CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath \
          -ldflags "-X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
          -o "$COMPOSE" github.com/docker/compose/v2/cmd) >"$INFRA/go-compose.log" 2>&1; then
    tail -n 20 "$INFRA/go-compose.log" >&2
    die "compose: build failed (log: $INFRA/go-compose.log)"
  fi
  rm -f "$BIN"/.docker-compose-* && touch "$STAMP"
}

[ -x "$COMPOSE" ] && [ -f "$STAMP" ] || build_compose
exec "$COMPOSE" "$@"
