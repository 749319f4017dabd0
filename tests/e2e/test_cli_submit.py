"""`tts-stream submit` and `tts-stream watch` as a user runs them, against a real worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

from schemas.codec import request_codec
from tests.support.kafka_io import Lanes, read_all
from tests.support.stack import ROOT, StackAddresses
from tests.support.worker import WorkerProcess


def _env(stack: StackAddresses, lanes: Lanes) -> dict[str, str]:
    return {**os.environ, **lanes.env(), "TTS_KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap}


def _cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tts_stream", "--log-format", "text", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _run() -> str:
    return uuid.uuid4().hex[:6]  # keeps texts out of earlier runs' cache entries


def test_submit_prints_the_id_and_watch_shows_the_result(
    stack: StackAddresses, lanes: Lanes, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker(lanes, "w1")
    env = _env(stack, lanes)
    submitted = _cli(env, "submit", f"Hello from the command line, run {_run()}.", "--voice", "preset:en-us",
                     "--attr", "tenant=acme")  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    request_id = submitted.stdout.strip()
    assert uuid.UUID(request_id)

    watched = _cli(env, "watch", "--request-id", request_id, "--since", "10m", "--json", "--timeout", "120s")
    assert watched.returncode == 0, watched.stderr
    [line] = watched.stdout.splitlines()
    result = json.loads(line)
    assert result["request_id"] == request_id
    assert result["status"] == "SUCCEEDED"
    assert result["attributes"] == {"tenant": "acme"}

    readable = _cli(env, "watch", "--request-id", request_id, "--since", "10m", "--timeout", "60s")
    assert readable.returncode == 0, readable.stderr
    assert request_id in readable.stdout
    assert "SUCCEEDED" in readable.stdout
    assert "s3://" in readable.stdout


def test_submit_wait_prints_the_result_with_audio_in_object_storage(
    stack: StackAddresses, lanes: Lanes, start_worker: Callable[..., WorkerProcess], s3_client: Any
) -> None:
    start_worker(lanes, "w1")
    completed = _cli(
        _env(stack, lanes),
        "submit", f"今天天气很好。{_run()}", "--voice", "preset:cmn", "--language", "zh-CN",
        "--format", "flac", "--wait", "--timeout", "120s",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["status"] == "SUCCEEDED"
    audio = result["audio"]
    assert audio["content_type"] == "audio/flac"
    assert audio["duration_seconds"] > 0.3
    bucket, _, key = audio["uri"].removeprefix("s3://").partition("/")
    head = s3_client.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == audio["size_bytes"]


def test_a_failed_request_exits_1_with_the_error_code(
    stack: StackAddresses, lanes: Lanes, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker(lanes, "w1")
    completed = _cli(
        _env(stack, lanes), "submit", "Hello.", "--voice", f"registered:no-such-voice-{_run()}",
        "--wait", "--timeout", "120s",
    )  # fmt: skip
    assert completed.returncode == 1, completed.stderr
    result = json.loads(completed.stdout)
    assert result["status"] == "FAILED"
    # eSpeak NG speaks presets only: a registered (cloned) voice is answered UNSUPPORTED.
    assert result["error"]["code"] == "UNSUPPORTED"
    assert result["error"]["retryable"] is False


def test_no_result_in_time_exits_2_and_still_names_the_request(stack: StackAddresses, lanes: Lanes) -> None:
    completed = _cli(_env(stack, lanes), "submit", "Nobody is listening.", "--voice", "preset:en-us",
                     "--wait", "--timeout", "3s")  # fmt: skip
    assert completed.returncode == 2
    request_id = completed.stdout.strip()
    assert uuid.UUID(request_id)
    assert f"no result for {request_id}" in completed.stderr


def test_an_invalid_request_exits_2_naming_each_field_and_produces_nothing(
    kafka_config: dict[str, Any], stack: StackAddresses, lanes: Lanes
) -> None:
    completed = _cli(_env(stack, lanes), "submit", " ", "--voice", "preset:en-us", "--speed", "9",
                     "--sample-rate", "12345")  # fmt: skip
    assert completed.returncode == 2
    assert "text: is empty" in completed.stderr
    assert "speed: must be between 0.5 and 2.0" in completed.stderr
    assert "sample_rate_hz: 12345 is not one of" in completed.stderr
    assert read_all(kafka_config, lanes.requests, idle_s=2) == []


def test_bulk_lane_and_prompt_voice_from_the_command_line(
    kafka_config: dict[str, Any], stack: StackAddresses, lanes: Lanes
) -> None:
    completed = _cli(
        _env(stack, lanes), "submit", "Clone me.", "--voice", "prompt:s3://tts-voices/prompts/a.wav",
        "--prompt-text", "Hi, I am A.", "--lane", "bulk", "--style", "whisper", "--ttl", "5m",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    [message] = read_all(kafka_config, lanes.bulk, idle_s=2)
    request = request_codec().decode(message.value())
    assert request.request_id == completed.stdout.strip()
    assert request.voice.transcript == "Hi, I am A."  # type: ignore[union-attr]
    assert request.style_instruction == "whisper"
    assert request.deadline_ms == request.created_at_ms + 300_000


def test_unreachable_kafka_exits_3(stack: StackAddresses, lanes: Lanes) -> None:
    completed = _cli(_env(stack, lanes), "submit", "Hello.", "--voice", "preset:en-us",
                     "--bootstrap-servers", "127.0.0.1:1")  # fmt: skip
    assert completed.returncode == 3
    assert "no Kafka broker answered" in completed.stderr
    assert "FAIL" not in completed.stderr, "librdkafka's reconnect noise stays out of the way"
