#!/usr/bin/env bash
# Container images for the cluster, built without Docker or any image registry:
#
#   infra/k8s/images.sh pause          the pod sandbox image (Kubernetes' pause.c, static)
#   infra/k8s/images.sh base           a Debian bookworm root filesystem with Python 3.11 (mmdebstrap),
#                                      standing in for python:3.11-slim-bookworm
#   infra/k8s/images.sh tts [TAG]      the project's cpu image from the Dockerfile (buildah), on that base
#   infra/k8s/images.sh load NAME      import a built image archive into the node's containerd
#
# Archives are kept under .infra/k8s/images/ and re-imported after `down.sh --wipe`. buildah runs
# in a private mount namespace with its storage under .infra/k8s/buildah, so its overlay mounts
# never show on the host. RUN steps use chroot isolation and the host's network (they install
# from PyPI and Debian's archive like any image build).
set -euo pipefail
# shellcheck source=infra/k8s/lib.sh
source "$(dirname "$0")/lib.sh"

IMAGES="$K8S_DIR/images"
BASE_IMAGE="tts-k8s.local/python:3.11-bookworm"
PAUSE_IMAGE="tts-k8s.local/pause:3.10"
TTS_REPOSITORY="tts-k8s.local/tts-stream"
CONTAINERD_SOCK="$K8S_RUN/containerd/containerd.sock"
mkdir -p "$IMAGES"

# buildah in a private mount namespace: its overlay mounts, and the state it keeps at fixed
# paths whatever --root says (the blob-info cache in /var/lib/containers, network state in
# /run/containers and /run/netns), land in .infra/k8s/buildah instead of on the host.
buildah_() {
  local d
  for d in /var/lib/containers /run/containers /run/netns; do mountpoint_dir "$d"; done
  mkdir -p "$K8S_DIR/buildah/var-lib-containers" "$K8S_DIR/buildah/run-containers" "$K8S_RUN/buildah-netns"
  unshare --mount --propagation private -- sh -c '
    mount --bind "$1/buildah/var-lib-containers" /var/lib/containers &&
    mount --bind "$1/buildah/run-containers" /run/containers &&
    mount --bind "$2/buildah-netns" /run/netns && shift 2 && exec buildah "$@"' \
    buildah-ns "$K8S_DIR" "$K8S_RUN" --root "$K8S_DIR/buildah/storage" --runroot "$K8S_RUN/buildah" \
    --storage-driver overlay "$@"
}

ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# load ARCHIVE NAME: import into containerd unless it already has NAME.
load() {
  local archive="$1" name="$2"
  [ -S "$CONTAINERD_SOCK" ] || k8s_die "containerd is not running (make k8s-up)"
  if ctr_ images ls -q | grep -qxF "$name"; then return 0; fi
  [ -f "$archive" ] || k8s_die "no image archive $archive (build it first)"
  k8s_say "importing $name into containerd"
  ctr_ images import --no-unpack=false "$archive" >/dev/null
  ctr_ images ls -q | grep -qxF "$name" || k8s_die "containerd did not list $name after importing $archive"
}

# export NAME ARCHIVE: a docker-archive (uncompressed layers: no time spent on gzip).
export_image() {
  rm -f "$2.tmp"
  buildah_ push --quiet "$1" "docker-archive:$2.tmp:$1" >/dev/null
  mv "$2.tmp" "$2"
}

pause_image() {
  local archive="$IMAGES/pause-3.10.tar"
  if [ ! -f "$archive" ]; then
    command -v cc >/dev/null || k8s_die "a C compiler is needed for the pause binary (apt-get install gcc libc6-dev)"
    local src
    src="$(ls -d "$K8S_DIR"/src/kubernetes-*/build/pause/linux/pause.c 2>/dev/null | head -1)"
    [ -f "$src" ] || k8s_die "pause.c not found (infra/k8s/build.sh kubernetes prepares the source)"
    mkdir -p "$IMAGES/pause"
    cc -Os -static -DVERSION=3.10-tts -o "$IMAGES/pause/pause" "$src"
    local c
    c="$(buildah_ from scratch)"
    buildah_ copy "$c" "$IMAGES/pause/pause" /pause >/dev/null
    buildah_ config --entrypoint '["/pause"]' --user 65535:65535 "$c"
    buildah_ commit --quiet --rm "$c" "$PAUSE_IMAGE" >/dev/null
    export_image "$PAUSE_IMAGE" "$archive"
  fi
  load "$archive" "$PAUSE_IMAGE"
}

base_image() {
  if buildah_ images -q "$BASE_IMAGE" >/dev/null 2>&1; then return 0; fi
  command -v mmdebstrap >/dev/null || k8s_die "mmdebstrap is needed for the base image (apt-get install mmdebstrap)"
  local sources=() f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [ -s "$f" ] && sources+=("$f")
  done
  k8s_say "making the base root filesystem with mmdebstrap (Debian bookworm, Python 3.11)"
  local started=$SECONDS
  # python:3.11-slim has `python`, pip and no PEP 668 marker; the Dockerfile relies on all three
  mmdebstrap --variant=minbase --mode=root --format=tar \
    --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates,libgomp1 \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$IMAGES/base-rootfs.tar" "${sources[@]}" >"$K8S_LOG/mmdebstrap.log" 2>&1 ||
    { tail -n 20 "$K8S_LOG/mmdebstrap.log" >&2; k8s_die "mmdebstrap failed"; }
  local c
  c="$(buildah_ from scratch)"
  buildah_ add "$c" "$IMAGES/base-rootfs.tar" / >/dev/null
  buildah_ config --cmd '["python3"]' --env LANG=C.UTF-8 "$c"
  buildah_ commit --quiet --rm "$c" "$BASE_IMAGE" >/dev/null
  rm -f "$IMAGES/base-rootfs.tar"
  k8s_say "base image $BASE_IMAGE made in $((SECONDS - started)) s"
}

# tts_image TAG: the Dockerfile's cpu target on the Debian base, exported and imported.
tts_image() {
  local tag="${1:-0.1.0-cpu}" archive
  archive="$IMAGES/tts-stream-$tag.tar"
  if [ ! -f "$archive" ]; then
    base_image
    k8s_say "building $TTS_REPOSITORY:$tag from the Dockerfile (target cpu; log $K8S_LOG/buildah-tts-$tag.log)"
    local started=$SECONDS mounts=()
    # the build host's trust store and pip settings (a TLS-inspecting proxy, a pip mirror) reach
    # the RUN steps as read-only mounts, never as files in a layer
    [ -f /etc/pip.conf ] && mounts+=(--volume /etc/pip.conf:/etc/pip.conf:ro)
    mounts+=(--volume /etc/ssl/certs:/etc/ssl/certs:ro)
    # docker format: OCI image configs have no HEALTHCHECK, and the Dockerfile declares one
    if ! buildah_ bud --format docker --isolation chroot --network host --layers=false "${mounts[@]}" \
        --build-arg PYTHON_IMAGE="$BASE_IMAGE" --build-arg VERSION="${tag%-cpu}" \
        --build-arg REVISION="$(git -C "$K8S_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)" \
        --target cpu --tag "$TTS_REPOSITORY:$tag" -f "$K8S_ROOT/Dockerfile" "$K8S_ROOT" \
        >"$K8S_LOG/buildah-tts-$tag.log" 2>&1; then
      tail -n 30 "$K8S_LOG/buildah-tts-$tag.log" >&2
      k8s_die "building the cpu image failed"
    fi
    export_image "$TTS_REPOSITORY:$tag" "$archive"
    # the build stages hold two more copies of the venv: gigabytes the archive makes redundant
    buildah_ rmi "$TTS_REPOSITORY:$tag" >/dev/null
    buildah_ rmi --prune >/dev/null 2>&1 || true
    k8s_say "built $TTS_REPOSITORY:$tag in $((SECONDS - started)) s; archive $(du -h "$archive" | cut -f1)"
  fi
  load "$archive" "$TTS_REPOSITORY:$tag"
}

case "${1:-}" in
  pause) pause_image ;;
  base) base_image ;;
  tts) tts_image "${2:-}" ;;
  load) load "$IMAGES/${2:?archive name}.tar" "${3:?image name}" ;;
  *) k8s_die "usage: $0 pause|base|tts [TAG]|load ARCHIVE NAME" ;;
esac
