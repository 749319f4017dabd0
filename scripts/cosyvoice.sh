#!/usr/bin/env bash
# `make cosyvoice`: the pinned CosyVoice source (and the Matcha-TTS commit it pins as a
# submodule) where the worker finds it, plus the [cosyvoice] extra's dependencies.
#
# The source comes from unmodified `git archive` snapshots in $TTS_COSYVOICE_ARCHIVES when that
# names a directory holding them (CI points it at the shared third_party folder), and otherwise
# from a clone of the pinned commit with its submodule. It is unpacked under
# .infra/cosyvoice/<commit>/ (git-ignored, never part of the tree) and put on the venv's path
# with a .pth file, so `import cosyvoice` works in the worker, the tests and the model maker
# without PYTHONPATH. Idempotent: a second run checks the stamp and returns.
#
#   scripts/cosyvoice.sh                     # source + extra + .pth into .venv
#   scripts/cosyvoice.sh --print-path        # print the PYTHONPATH entries
#   scripts/cosyvoice.sh --source-only DIR   # only the source, into DIR/CosyVoice (the GPU image)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf '[cosyvoice] %s\n' "$*"; }
die() { printf '[cosyvoice] ERROR: %s\n' "$*" >&2; exit 1; }

COSYVOICE_COMMIT=ace7c47f41bbd303aa6bf1ea80e6f9fbd595cd40
MATCHA_COMMIT=dd9105b34bf2be2230f4aa1e4769fb586a3c824e
COSYVOICE_SHA256=75444566b75381f996d48f64ac0c1be1a60acdfc427f30a37a44a24d3153b413
MATCHA_SHA256=7925bc0313700bb17a02118d29f4992434631b6a3dc3e999a30d1ae9e685338e
COSYVOICE_REPO="${TTS_COSYVOICE_REPO:-https://github.com/FunAudioLLM/CosyVoice}"

VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
DEST=".infra/cosyvoice/${COSYVOICE_COMMIT:0:7}"
SOURCE_ONLY=0
if [ "${1:-}" = "--source-only" ]; then
  [ -n "${2:-}" ] || die "--source-only needs a directory"
  SOURCE_ONLY=1
  DEST="$2"
fi
SRC="$DEST/CosyVoice"
MATCHA="$SRC/third_party/Matcha-TTS"

if [ "${1:-}" = "--print-path" ]; then
  printf '%s:%s\n' "$ROOT/$SRC" "$ROOT/$MATCHA"
  exit 0
fi

[ "$SOURCE_ONLY" = 1 ] || [ -x "$PY" ] || die "$PY is missing: run 'make install' first"

from_archives() {
  local dir="$1" cv mt
  cv="$dir/cosyvoice-${COSYVOICE_COMMIT:0:7}.tar.gz"
  mt="$dir/matcha-tts-${MATCHA_COMMIT:0:7}.tar.gz"
  [ -f "$cv" ] || die "TTS_COSYVOICE_ARCHIVES=$dir has no $(basename "$cv")"
  [ -f "$mt" ] || die "TTS_COSYVOICE_ARCHIVES=$dir has no $(basename "$mt")"
  echo "$COSYVOICE_SHA256  $cv" | sha256sum -c --quiet - || die "$(basename "$cv") does not match its pinned sha256"
  echo "$MATCHA_SHA256  $mt" | sha256sum -c --quiet - || die "$(basename "$mt") does not match its pinned sha256"
  say "unpacking CosyVoice ${COSYVOICE_COMMIT:0:7} and Matcha-TTS ${MATCHA_COMMIT:0:7} from $dir"
  local tmp
  mkdir -p "$DEST"
  tmp="$(mktemp -d "$DEST/unpack.XXXXXX")"
  tar -xzf "$cv" -C "$tmp"
  tar -xzf "$mt" -C "$tmp"
  rm -rf "$tmp/CosyVoice/third_party/Matcha-TTS"
  mkdir -p "$tmp/CosyVoice/third_party"
  mv "$tmp/Matcha-TTS" "$tmp/CosyVoice/third_party/Matcha-TTS"
  rm -rf "$SRC"
  mkdir -p "$DEST"
  mv "$tmp/CosyVoice" "$SRC"
  rmdir "$tmp"
}

from_git() {
  say "cloning $COSYVOICE_REPO at ${COSYVOICE_COMMIT:0:7} with its Matcha-TTS submodule"
  rm -rf "$SRC"
  mkdir -p "$DEST"
  git clone --quiet "$COSYVOICE_REPO" "$SRC" || die "git clone of $COSYVOICE_REPO failed (no network? set TTS_COSYVOICE_ARCHIVES to a folder with the source archives)"
  git -C "$SRC" checkout --quiet "$COSYVOICE_COMMIT"
  git -C "$SRC" submodule update --quiet --init third_party/Matcha-TTS
  [ "$(git -C "$MATCHA" rev-parse HEAD)" = "$MATCHA_COMMIT" ] || die "the Matcha-TTS submodule is not at the pinned $MATCHA_COMMIT"
}

mkdir -p "$DEST"
STAMP="$DEST/.complete"
if [ ! -f "$STAMP" ] || [ ! -f "$SRC/cosyvoice/cli/cosyvoice.py" ] || [ ! -f "$MATCHA/matcha/__init__.py" ]; then
  rm -f "$STAMP"
  if [ -n "${TTS_COSYVOICE_ARCHIVES:-}" ]; then
    from_archives "$TTS_COSYVOICE_ARCHIVES"
  else
    from_git
  fi
  echo "$COSYVOICE_COMMIT $MATCHA_COMMIT" >"$STAMP"
fi
if [ "$SOURCE_ONLY" = 1 ]; then
  say "CosyVoice ${COSYVOICE_COMMIT:0:7} source in $SRC"
  exit 0
fi

# The extra's dependencies, once per pyproject.toml (the same stamp scheme as `make install`).
extra_stamp="$VENV/.cosyvoice-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$extra_stamp" ]; then
  say "installing the [cosyvoice] extra into $VENV"
  "$VENV/bin/uv" pip install --python "$PY" -q -e ".[cosyvoice]"
  rm -f "$VENV"/.cosyvoice-*
  touch "$extra_stamp"
fi

# Put the source tree on the venv's path (site-packages/*.pth is read at interpreter start).
site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
printf '%s\n%s\n' "$ROOT/$SRC" "$ROOT/$MATCHA" >"$site/tts-stream-cosyvoice.pth"
"$PY" -c 'import cosyvoice, matcha' 2>/dev/null || die "cosyvoice is still not importable from $PY"
say "CosyVoice ${COSYVOICE_COMMIT:0:7} ready ($SRC)"
