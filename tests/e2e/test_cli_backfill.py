"""`tts-stream backfill --wait` against a real worker: the manifest ends with real audio."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.kafka_io import Lanes
from tests.support.stack import ROOT, StackAddresses
from tests.support.worker import WorkerProcess


def test_backfill_wait_fills_the_manifest_with_audio(
    tmp_path: Path,
    stack: StackAddresses,
    lanes: Lanes,
    make_topic: Callable[..., str],
    start_worker: Callable[..., WorkerProcess],
    s3_client: Any,
) -> None:
    checkpoints = make_topic("ckpt", 1, {"cleanup.policy": "compact"})
    start_worker(lanes, "w1")
    run = uuid.uuid4().hex[:6]
    rows = [{"text": f"Backfill line {i}, run {run}.", "voice": "preset:en-us"} for i in range(12)]
    rows.append({"text": f"Backfill line 0, run {run}.", "voice": "preset:en-us"})  # a duplicate
    rows.append({"text": f"今天天气很好。{run}", "voice": "preset:cmn", "language": "zh-CN"})
    path = tmp_path / "catalogue.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    env = {
        **os.environ,
        **lanes.env(),
        "TTS_TOPICS_BACKFILL_CHECKPOINTS": checkpoints,
        "TTS_KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
    }
    completed = subprocess.run(
        [sys.executable, "-m", "tts_stream", "--log-format", "text", "backfill", str(path),
         "--wait", "--timeout", "180s"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert f"submitted 14 request(s) to {lanes.bulk}" in completed.stdout
    assert "results: 14 succeeded, 0 failed, 0 without a result" in completed.stdout

    manifest = [
        json.loads(line) for line in (tmp_path / "catalogue.jsonl.manifest.jsonl").read_text().splitlines()
    ]
    assert [m["line"] for m in manifest] == list(range(1, 15))
    assert {m["status"] for m in manifest} == {"succeeded"}
    # Identical text and voice: the same audio object (the cache, or the merged flight).
    assert manifest[0]["audio_uri"] == manifest[12]["audio_uri"]
    assert manifest[0]["request_id"] != manifest[12]["request_id"]
    bucket, _, key = manifest[13]["audio_uri"].removeprefix("s3://").partition("/")
    assert s3_client.head_object(Bucket=bucket, Key=key)["ContentLength"] > 1000
