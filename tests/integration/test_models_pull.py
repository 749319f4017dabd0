"""`tts-stream models pull` (the Helm init container's command) against the real S3 server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.adapters.s3 import S3ObjectStore
from consumer.cli_models import MARKER
from tests.support.stack import ROOT, StackAddresses, unique_name

FILES = {
    "cosyvoice3.yaml": b"sample_rate: 24000\n",
    "llm.pt": os.urandom(3 * 1024 * 1024 + 17),  # big enough for a multi-part capable download
    "CosyVoice-BlankEN/config.json": b"{}",
}


@pytest.fixture
def source(
    stack: StackAddresses, s3_client: object, object_store: S3ObjectStore
) -> Iterator[tuple[S3ObjectStore, str]]:
    store = object_store
    prefix = unique_name("it-model") + "/cv3/"
    for name, data in FILES.items():
        store.put(stack.audio_bucket, prefix + name, data, content_type="application/octet-stream")
    yield store, prefix
    for key in list(store.list_keys(stack.audio_bucket, prefix)):
        store.delete(stack.audio_bucket, key)


def pull(stack: StackAddresses, uri: str, dest: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tts_stream", "models", "pull", "--source", uri, "--dest", str(dest)],
        cwd=ROOT,
        env={**os.environ, **stack.worker_env(), "TTS_LOG_LEVEL": "WARNING", **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_pull_is_complete_verified_and_idempotent(
    stack: StackAddresses, source: tuple[S3ObjectStore, str], tmp_path: Path
) -> None:
    store, prefix = source
    uri = f"s3://{stack.audio_bucket}/{prefix}"
    dest = tmp_path / "model"
    first = pull(stack, uri, dest)
    assert first.returncode == 0, first.stderr
    assert "3 files downloaded" in first.stdout
    for name, data in FILES.items():
        assert (dest / name).read_bytes() == data
    marker = json.loads((dest / MARKER).read_text())
    assert marker["source"] == uri
    assert marker["files"] == {name: len(data) for name, data in FILES.items()}

    second = pull(stack, uri, dest)
    assert second.returncode == 0, second.stderr
    assert "0 files downloaded" in second.stdout and "3 already present" in second.stdout

    # A new checkpoint upstream: only that file is fetched again.
    store.put(stack.audio_bucket, prefix + "llm.pt", b"new weights", content_type="application/octet-stream")
    third = pull(stack, uri, dest)
    assert third.returncode == 0, third.stderr
    assert "1 files downloaded" in third.stdout
    assert (dest / "llm.pt").read_bytes() == b"new weights"
    assert json.loads((dest / MARKER).read_text())["files"]["llm.pt"] == len(b"new weights")


def test_failures_have_their_exit_codes(stack: StackAddresses, s3_client: object, tmp_path: Path) -> None:
    empty = pull(stack, f"s3://{stack.audio_bucket}/{unique_name('nothing')}/", tmp_path / "m")
    assert empty.returncode == 1
    assert "no objects under" in empty.stderr
    down = pull(stack, "s3://bucket/model/", tmp_path / "m", TTS_S3_ENDPOINT_URL="http://127.0.0.1:9")
    assert down.returncode == 3
    assert not (tmp_path / "m" / MARKER).exists()
