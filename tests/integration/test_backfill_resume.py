"""Backfill through the real broker: interrupted (Ctrl-C, then SIGKILL) and resumed, every line
ends up in the topic exactly once, as a read_committed consumer (the worker) sees it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from producer.backfill.job import BACKFILL_NAMESPACE
from schemas.codec import request_codec
from schemas.topics import TopicNames
from tests.support.kafka_io import subscriber
from tests.support.responder import private_topics, topics_env
from tests.support.stack import ROOT, StackAddresses

LINES = 100_000


@pytest.fixture
def topics(make_topic: Callable[..., str]) -> TopicNames:
    return private_topics(make_topic, partitions=3)


def _write_lines(path: Path, count: int) -> None:
    with path.open("w") as f:
        for line in range(1, count + 1):
            f.write(json.dumps({"text": f"Backfill sentence number {line}.", "voice": "preset:en-us"}) + "\n")


def _backfill(path: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tts_stream",
            "--log-format",
            "text",
            "backfill",
            str(path),
            "--no-progress",
            *args,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _progress(checkpoint: Path) -> int:
    try:
        return int(json.loads(checkpoint.read_text())["next_row"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def _wait_for_progress(process: subprocess.Popen[str], checkpoint: Path, rows: int) -> int:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        done = _progress(checkpoint)
        if done >= rows:
            return done
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"backfill exited early ({process.returncode}): {err[-2000:]}")
        time.sleep(0.02)
    process.kill()
    pytest.fail(f"backfill did not reach row {rows} in time")


def _count_request_ids(kafka_config: dict[str, Any], topic: str, expected: int) -> Counter[str]:
    consumer = subscriber(kafka_config, topic, name="count")  # read_committed: what the worker reads
    codec = request_codec()
    counts: Counter[str] = Counter()
    seen = 0
    idle_since = time.monotonic()
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(10_000, timeout=0.5)
            if not batch:
                if seen >= expected and time.monotonic() - idle_since > 3:
                    break  # three quiet seconds after the expected count: nothing more is coming
                continue
            idle_since = time.monotonic()
            for msg in batch:
                assert msg.error() is None, msg.error()
                counts[codec.decode(msg.value()).request_id] += 1
                seen += 1
    finally:
        consumer.close()
    return counts


def test_100k_lines_interrupted_killed_and_resumed_are_submitted_exactly_once(
    tmp_path: Path, kafka_config: dict[str, Any], stack: StackAddresses, topics: TopicNames
) -> None:
    path = tmp_path / "lines.jsonl"
    _write_lines(path, LINES)
    checkpoint = tmp_path / "lines.jsonl.tts-checkpoint.json"
    env = {**os.environ, **topics_env(topics), "TTS_KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap}
    chunking = ("--chunk-rows", "2000")

    # Run 1: Ctrl-C. The open chunk is committed, the command says how to resume, exits 130.
    first = _backfill(path, env, *chunking)
    _wait_for_progress(first, checkpoint, 15_000)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err[-2000:]
    assert "run the same command again to resume" in err
    after_first = _progress(checkpoint)
    assert 15_000 <= after_first < LINES

    # Run 2: SIGKILL in the middle of a chunk: no handler runs, the open transaction is left open.
    second = _backfill(path, env, *chunking)
    killed_at = _wait_for_progress(second, checkpoint, after_first + 30_000)
    second.kill()
    second.wait(30)
    assert second.returncode == -signal.SIGKILL
    assert killed_at < LINES, "the kill must land before the end for this test to mean anything"

    # Run 3: resumes where the last committed chunk ended and finishes.
    third = _backfill(path, env, *chunking)
    _, err = third.communicate(timeout=600)
    assert third.returncode == 0, err[-2000:]
    assert "resumed at line" in err
    final = json.loads(checkpoint.read_text())
    assert final["done"] is True
    assert final["submitted"] == LINES

    # Every line exactly once, as a read_committed consumer sees the topic.
    counts = _count_request_ids(kafka_config, topics.bulk, LINES)
    job_id = final["job_id"]
    expected = {str(uuid.uuid5(BACKFILL_NAMESPACE, f"{job_id}:{line}")) for line in range(1, LINES + 1)}
    assert set(counts) == expected
    duplicated = {request_id: n for request_id, n in counts.items() if n != 1}
    assert not duplicated, f"{len(duplicated)} request(s) submitted more than once"

    manifest = (tmp_path / "lines.jsonl.manifest.jsonl").read_text().splitlines()
    assert len(manifest) == LINES
    assert {json.loads(entry)["request_id"] for entry in manifest} == expected
