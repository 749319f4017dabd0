"""`tts-stream backfill` as a user runs it, against the real broker and a stand-in worker."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.codec import request_codec
from schemas.topics import TopicNames
from tests.support.kafka_io import subscriber
from tests.support.responder import Responder, private_topics, topics_env
from tests.support.stack import ROOT, StackAddresses


@pytest.fixture
def topics(make_topic: Callable[..., str]) -> TopicNames:
    return private_topics(make_topic, partitions=2)


@pytest.fixture
def env(stack: StackAddresses, topics: TopicNames) -> dict[str, str]:
    return {**os.environ, **topics_env(topics), "TTS_KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap}


@pytest.fixture
def responder(kafka_config: dict[str, Any], topics: TopicNames) -> Iterator[Responder]:
    running = Responder(kafka_config, [topics.requests, topics.bulk], topics.results).start()
    yield running
    running.stop()


def _run(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tts_stream", "--log-format", "text", "backfill", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _messages(kafka_config: dict[str, Any], topic: str, quiet_s: float = 2.0) -> list[Any]:
    consumer = subscriber(kafka_config, topic, name="read")
    found: list[Any] = []
    end = time.monotonic() + quiet_s
    try:
        while time.monotonic() < end:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                found.append(msg)
                end = time.monotonic() + quiet_s
    finally:
        consumer.close()
    return found


def test_bad_rows_are_all_reported_and_nothing_is_submitted(
    tmp_path: Path, kafka_config: dict[str, Any], env: dict[str, str], topics: TopicNames
) -> None:
    path = tmp_path / "jobs.jsonl"
    rows = [
        {"text": "Fine.", "voice": "preset:en-us"},
        {"text": "", "voice": "preset:en-us"},
        {"text": "Too fast.", "voice": "preset:en-us", "speed": 4},
        {"text": "Fine again.", "voice": "preset:en-us"},
        {"text": "No voice."},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{oops\n")
    result = _run(env, str(path))
    assert result.returncode == 1
    assert "line 2: text: is empty" in result.stderr
    assert "line 3: speed: must be between 0.5 and 2.0" in result.stderr
    assert "line 5: voice: is missing" in result.stderr
    assert "line 6: not valid JSON" in result.stderr
    assert "nothing was submitted" in result.stderr
    assert _messages(kafka_config, topics.bulk) == []

    validate_only = _run(env, str(path), "--validate-only")
    assert validate_only.returncode == 1
    assert "validated 6 row(s): 2 valid, 4 invalid" in validate_only.stderr


def test_csv_with_wait_writes_results_into_the_manifest(
    tmp_path: Path,
    env: dict[str, str],
    topics: TopicNames,
    responder: Responder,
    kafka_config: dict[str, Any],
) -> None:
    path = tmp_path / "jobs.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "voice", "speed", "attr.order"])
        writer.writerow(["First line.", "preset:en-us", "1.0", "o-1"])
        writer.writerow(["Second,\nwith a line break.", "", "", "o-2"])  # empty cells: defaults
        writer.writerow(["Please FAIL this one.", "preset:en-us", "1.2", "o-3"])
        writer.writerow(["Bad speed.", "preset:en-us", "slow", "o-4"])
    result = _run(env, str(path), "--voice", "preset:en-gb", "--skip-invalid", "--wait", "--timeout", "60s")
    assert result.returncode == 1, result.stderr  # one request failed
    assert "line 6: speed: 'slow' is not a number" in result.stderr
    assert "results: 2 succeeded, 1 failed (ENGINE_ERROR 1), 0 without a result" in result.stdout
    manifest = [json.loads(line) for line in (tmp_path / "jobs.csv.manifest.jsonl").read_text().splitlines()]
    assert [(m["line"], m["status"]) for m in manifest] == [
        (2, "succeeded"),
        (3, "succeeded"),
        (5, "failed"),
        (6, "invalid"),
    ]
    assert manifest[0]["audio_uri"] == f"s3://tts-audio/test/{manifest[0]['request_id']}.wav"
    assert manifest[2]["error_code"] == "ENGINE_ERROR"
    requests = [request_codec().decode(m.value()) for m in _messages(kafka_config, topics.bulk)]
    second = next(r for r in requests if r.attributes["order"] == "o-2")
    assert second.voice.name == "en-gb"  # type: ignore[union-attr]
    assert second.text == "Second,\nwith a line break."


def test_parquet_on_the_interactive_lane_with_a_rate_limit(
    tmp_path: Path, env: dict[str, str], topics: TopicNames, kafka_config: dict[str, Any]
) -> None:
    path = tmp_path / "jobs.parquet"
    pq.write_table(pa.table({"text": [f"Row {i}." for i in range(40)], "voice": ["preset:en-us"] * 40}), path)
    result = _run(env, str(path), "--lane", "interactive", "--rate", "100/s")
    assert result.returncode == 0, result.stderr
    assert f"to {topics.requests}" in result.stdout
    messages = _messages(kafka_config, topics.requests)
    assert len(messages) == 40
    assert _messages(kafka_config, topics.bulk, quiet_s=0.5) == []
    # The rate from the records' own create times, not the command's wall time (start-up alone
    # takes longer): 40 rows at 100/s with a burst of 10 are spread over at least 0.3 s.
    created_ms = sorted(message.timestamp()[1] for message in messages)
    spread_s = (created_ms[-1] - created_ms[0]) / 1000
    assert spread_s >= 0.29, f"40 rows in {spread_s:.3f} s: faster than 100/s after the burst"


def test_a_finished_job_reruns_as_a_no_op(
    tmp_path: Path, env: dict[str, str], kafka_config: dict[str, Any], topics: TopicNames
) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(
        "".join(json.dumps({"text": f"Line {i}.", "voice": "preset:en-us"}) + "\n" for i in range(25))
    )
    first = _run(env, str(path))
    assert first.returncode == 0, first.stderr
    again = _run(env, str(path))
    assert again.returncode == 0, again.stderr
    assert "submitted 0 request(s)" in again.stdout
    assert "25 of 25 over all runs" in again.stdout
    assert len(_messages(kafka_config, topics.bulk)) == 25


def test_progress_bar_shows_rate_and_eta(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(
        "".join(json.dumps({"text": f"Line {i}.", "voice": "preset:en-us"}) + "\n" for i in range(3000))
    )
    result = _run(env, str(path), "--progress", "--rate", "2000/s")
    assert result.returncode == 0, result.stderr
    bar = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.startswith("submitting")]
    assert bar, result.stderr
    assert any("lines/s" in line and "<" in line for line in bar), bar[-1]  # rate, and elapsed<remaining
