"""A worker process on the real CosyVoice (tiny random-weight CosyVoice 3 model): readiness waits
for the model and its warm-up, and requests for a voice added with `tts-stream voices add` go
Kafka -> worker -> S3 -> result event, in zero-shot, cross-lingual and instruct modes, through
the batched path (the default); a text with nothing speakable is answered with its documented
code. Real Kafka, Redis, S3 and CLI."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from consumer.voices.registry import VoiceRegistry
from schemas.model import ErrorCode, RegisteredVoice, ResultStatus
from tests.support.kafka_io import Lanes, ResultReader, request, send_requests
from tests.support.stack import StackAddresses
from tests.support.voices import add_voice
from tests.support.worker import WorkerProcess

START_TIMEOUT_S = 240  # import + load + warm-up of the tiny model on a shared 2-core machine


def probe_readiness(worker: WorkerProcess, timeout_s: float) -> list[tuple[float, int]]:
    """(time, /readyz status) from start until the first 200; 0 while the port is closed."""
    probes: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert worker.alive(), worker.log_tail()
        try:
            status, _ = worker.get("/readyz")
        except OSError:
            status = 0
        probes.append((time.time(), status))
        if status == 200:
            return probes
        time.sleep(0.25)
    raise AssertionError(f"not ready after {timeout_s} s:\n{worker.log_tail()}")


def logged_at(worker: WorkerProcess, message: str) -> float:
    (line,) = [line for line in worker.log_lines() if line.get("msg") == message]
    return datetime.fromisoformat(str(line["ts"])).timestamp()


def test_a_cosyvoice_worker_answers_a_registered_voice_through_kafka(
    stack: StackAddresses,
    kafka_config: dict[str, Any],
    lanes: Lanes,
    start_worker: Callable[..., WorkerProcess],
    registry: VoiceRegistry,
    s3_client: Any,
    cosyvoice3_tiny: Path,
    tmp_path: Path,
) -> None:
    name, _ = add_voice(stack, registry, tmp_path, "cosyvoice-voice")

    env = {"TTS_ENGINE": "cosyvoice", "TTS_MODEL_DIR": str(cosyvoice3_tiny)}
    worker = start_worker(lanes, "cosyvoice-w1", env, ready=False)
    probes = probe_readiness(worker, START_TIMEOUT_S)
    warmed = logged_at(worker, "engine ready")  # after load() and warm_up()
    assert any(status != 200 for _, status in probes)  # the probe was answered while loading
    assert all(when >= warmed - 0.05 for when, status in probes if status == 200)
    assert logged_at(worker, "cosyvoice text frontend") < warmed
    assert logged_at(worker, "cosyvoice batching on") < warmed, "the batched path, by default"

    voice = RegisteredVoice(name)
    zero_shot = request("Good morning, and welcome.", voice)
    again = request("Thank you for waiting.", voice)
    chinese = request("你好，欢迎使用语音合成服务。", voice, language="zh")
    styled = request("Please call me back.", voice, style_instruction="Say it cheerfully.")
    nothing = request("※ † ‡", voice)
    reader = ResultReader(kafka_config, lanes.results)
    ids = send_requests(kafka_config, lanes.requests, [zero_shot, again, chinese, styled, nothing])
    results = reader.poll_until(ids, timeout_s=180)

    for req in (zero_shot, again, chinese, styled):
        (result,) = results[req.request_id]
        assert result.status is ResultStatus.SUCCEEDED, result.error
        assert result.engine == "cosyvoice" and result.model_version.startswith("cosyvoice3-")
        assert result.audio is not None and result.audio.sample_rate_hz == 24_000
        # 25 speech tokens a second: the audio is a whole number of tokens long.
        tokens = result.audio.duration_seconds * 25
        assert tokens >= 20 and abs(tokens - round(tokens)) < 1e-3
        bucket, _, key = result.audio.uri.removeprefix("s3://").partition("/")
        head = s3_client.head_object(Bucket=bucket, Key=key)
        assert head["ContentLength"] == result.audio.size_bytes
    (failed,) = results[nothing.request_id]
    assert failed.status is ResultStatus.FAILED
    assert failed.error is not None and failed.error.code is ErrorCode.INVALID_REQUEST
    assert not failed.error.retryable
    assert worker.alive()
