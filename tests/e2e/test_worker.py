"""The worker end to end: real Kafka, Redis, S3 and eSpeak NG; worker processes as operators run them."""

from __future__ import annotations

import io
import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import soundfile

from schemas import dlq
from schemas.model import ErrorCode, PresetVoice, PromptAudioVoice, RegisteredVoice, ResultStatus
from tests.support.kafka_io import Lanes, ResultReader, read_all, request, send_raw, send_requests
from tests.support.worker import WorkerProcess, wait_until


def _run_id() -> str:
    # Unique words keep this run's texts out of the cache entries of earlier runs.
    return uuid.uuid4().hex[:6]


def _download(s3_client: Any, uri: str) -> bytes:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bytes(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_request_to_result_is_real_speech(
    kafka_config: dict[str, Any], lanes: Lanes, start_worker: Callable[..., WorkerProcess], s3_client: Any
) -> None:
    run = _run_id()
    english = request(
        f"The quick brown fox jumps over the lazy dog, run {run}.", attributes={"tenant": "acme"}
    )
    chinese = request(f"今天天气很好，我们去公园散步吧。{run}", PresetVoice("cmn"), language="zh-CN")
    ids = send_requests(kafka_config, lanes.requests, [english, chinese])
    start_worker(lanes, "w1")

    reader = ResultReader(kafka_config, lanes.results)
    results = reader.poll_until(ids, timeout_s=60)
    for request_id in ids:
        (result,) = results[request_id]
        assert result.status is ResultStatus.SUCCEEDED, result.error
        assert result.engine == "espeak"
        audio = result.audio
        assert audio is not None
        data = _download(s3_client, audio.uri)
        assert len(data) == audio.size_bytes
        import hashlib

        assert hashlib.sha256(data).hexdigest() == audio.sha256
        assert audio.uri.endswith(f"{audio.sha256}.wav"), "object keys are derived from the audio's hash"
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
        assert rate == audio.sample_rate_hz
        duration = len(samples) / rate
        assert duration == pytest.approx(audio.duration_seconds, abs=0.01)
        assert 1.0 < duration < 15.0, "a sentence takes seconds to say"
        rms = float(np.sqrt(np.mean(np.square(samples))))
        assert rms > 0.01, "speech, not silence"
        assert result.timings.total_ms >= result.timings.synthesis_ms
    assert results[english.request_id][0].attributes == {"tenant": "acme"}
    assert results[english.request_id][0].traceparent is not None


def test_poison_bytes_go_to_the_dlq_while_valid_traffic_continues(
    kafka_config: dict[str, Any], make_lanes: Callable[..., Lanes], start_worker: Callable[..., WorkerProcess]
) -> None:
    lanes = make_lanes(partitions=1)
    run = _run_id()
    first = send_requests(kafka_config, lanes.requests, [request(f"before the poison {run}")])
    send_raw(kafka_config, lanes.requests, b"\x00\x00\x00\x00\x07not avro at all", key=b"poison-1")
    send_raw(kafka_config, lanes.requests, b"plain text is not an event", key=b"poison-2")
    after = send_requests(
        kafka_config, lanes.requests, [request(f"after the poison {run} {i}") for i in range(3)]
    )
    start_worker(lanes, "w1")

    results = ResultReader(kafka_config, lanes.results).poll_until(first + after, timeout_s=60)
    assert all(results[i][0].status is ResultStatus.SUCCEEDED for i in first + after)
    dead = read_all(kafka_config, lanes.dlq)
    assert sorted(m.key() for m in dead) == [b"poison-1", b"poison-2"]
    by_key = {m.key(): m for m in dead}
    assert by_key[b"poison-2"].value() == b"plain text is not an event", "the original bytes are kept"
    headers = dict(by_key[b"poison-2"].headers())
    assert headers[dlq.SOURCE_TOPIC] == lanes.requests.encode()
    assert headers[dlq.SOURCE_PARTITION] == b"0"
    assert headers[dlq.SOURCE_OFFSET] == b"2"
    assert headers[dlq.REASON] == b"BAD_MAGIC"
    assert dict(by_key[b"poison-1"].headers())[dlq.REASON] == b"NO_REGISTRY"


def test_each_validation_error_gets_its_code_and_no_engine_time(
    kafka_config: dict[str, Any], lanes: Lanes, start_worker: Callable[..., WorkerProcess]
) -> None:
    cases = {
        "empty": (request("   "), ErrorCode.INVALID_REQUEST),
        "too-long": (request("a" * 5001), ErrorCode.TEXT_TOO_LONG),
        "speed": (request("hello", speed=3.5), ErrorCode.INVALID_REQUEST),
        "bad-language-tag": (request("hello", language="english please"), ErrorCode.INVALID_REQUEST),
        "language": (request("hello", language="tlh"), ErrorCode.UNSUPPORTED_LANGUAGE),
        "unknown-preset": (request("hello", PresetVoice("no-such-voice")), ErrorCode.VOICE_NOT_FOUND),
        "cloning": (request("hello", RegisteredVoice("narrator")), ErrorCode.UNSUPPORTED),
        "prompt-http": (
            request("hello", PromptAudioVoice("http://169.254.169.254/latest", "x")),
            ErrorCode.VOICE_NOT_ALLOWED,
        ),
        "style": (request("hello", style_instruction="say it cheerfully"), ErrorCode.UNSUPPORTED),
        "reply-topic": (
            request("hello", reply_topic="someone.elses.topic"),
            ErrorCode.REPLY_TOPIC_NOT_ALLOWED,
        ),
        "expired": (request("hello", deadline_ms=int(time.time() * 1000) - 1000), ErrorCode.EXPIRED),
        "rate": (request("hello", sample_rate_hz=12345), ErrorCode.INVALID_REQUEST),
    }
    ids = send_requests(kafka_config, lanes.requests, [req for req, _ in cases.values()])
    worker = start_worker(lanes, "w1")
    results = ResultReader(kafka_config, lanes.results).poll_until(ids, timeout_s=60)
    for name, (req, code) in cases.items():
        (result,) = results[req.request_id]
        assert result.status is ResultStatus.FAILED, name
        assert result.error is not None
        assert result.error.code is code, f"{name}: {result.error}"
        assert result.error.retryable is False
        assert result.audio is None
    metrics = worker.metrics()
    assert metrics.get("tts_engine_batch_size_count", 0.0) == 0.0, (
        "no engine time for invalid or expired requests"
    )
    assert metrics['tts_requests_total{lane="interactive",outcome="expired"}'] == 1.0
    assert metrics['tts_requests_total{lane="interactive",outcome="invalid"}'] == len(cases) - 1


def test_duplicates_across_three_workers_are_synthesised_once(
    kafka_config: dict[str, Any], make_lanes: Callable[..., Lanes], start_worker: Callable[..., WorkerProcess]
) -> None:
    lanes = make_lanes(partitions=3)
    workers = [start_worker(lanes, f"w{i}") for i in range(3)]
    wait_until(
        lambda: all(w.owned_partitions(lanes.requests) for w in workers), "a partition for each worker", 60
    )
    run = _run_id()
    unique = [f"Sentence number {i} of dedup run {run}." for i in range(8)]
    # Every text three times, once on each partition: the copies meet on different workers.
    from confluent_kafka import Producer

    from schemas.codec import request_codec

    codec = request_codec()
    producer = Producer(kafka_config)
    ids = []
    for copy in range(3):
        for text in unique:
            req = request(text)
            ids.append(req.request_id)
            producer.produce(lanes.requests, codec.encode(req), key=req.request_id.encode(), partition=copy)
    assert producer.flush(30) == 0

    results = ResultReader(kafka_config, lanes.results).poll_until(ids, timeout_s=90, settle_s=2)
    assert set(results) == set(ids)
    assert all(len(r) == 1 and r[0].status is ResultStatus.SUCCEEDED for r in results.values())
    synthesised = sum(w.metrics().get("tts_engine_batch_size_sum", 0.0) for w in workers)
    assert synthesised == len(unique), "one synthesis per unique text across the whole group"
    hits = sum(r[0].cache_hit for r in results.values())
    assert hits == len(ids) - len(unique)
    by_text_uri: dict[str, set[str]] = {}
    for r in results.values():
        assert r[0].audio is not None and r[0].cache_key is not None
        by_text_uri.setdefault(r[0].cache_key, set()).add(r[0].audio.uri)
    assert all(len(uris) == 1 for uris in by_text_uri.values()), "duplicates share one audio object"


def test_sigterm_during_a_batch_drains_and_commits(
    kafka_config: dict[str, Any], make_lanes: Callable[..., Lanes], start_worker: Callable[..., WorkerProcess]
) -> None:
    lanes = make_lanes(partitions=1)
    worker = start_worker(
        lanes, "w1", {"TTS_ENGINE": "null", "TTS_NULL_LATENCY_MS": "2500", "TTS_DRAIN_TIMEOUT_S": "15"}
    )
    run = _run_id()
    ids = send_requests(kafka_config, lanes.requests, [request(f"drain me {run} {i}") for i in range(4)])
    wait_until(lambda: worker.metrics().get("tts_engine_tasks", 0) == 4, "the batch inside the engine", 20)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    results = ResultReader(kafka_config, lanes.results).poll_until(ids, timeout_s=20)
    assert set(results) == set(ids), "the in-engine batch was finished and published before exit"
    from tests.support.kafka_io import committed_offsets

    assert committed_offsets(kafka_config, lanes.group, lanes.requests, 1) == {0: 4}
    stopped = [line for line in worker.log_lines() if line.get("msg") == "worker stopped"]
    assert stopped and stopped[0]["answered"] == 4


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_sigkill_mid_batch_loses_nothing(
    guarantee: str,
    kafka_config: dict[str, Any],
    make_lanes: Callable[..., Lanes],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    lanes = make_lanes(partitions=2)
    env = {
        "TTS_ENGINE": "null",
        "TTS_NULL_LATENCY_MS": "300",
        "TTS_GUARANTEE": guarantee,
        "TTS_MAX_BATCH_ITEMS": "4",
    }
    run = _run_id()
    ids = send_requests(kafka_config, lanes.requests, [request(f"kill test {run} {i}") for i in range(40)])
    worker = start_worker(lanes, "w1", env)
    reader = ResultReader(kafka_config, lanes.results)
    deadline = time.monotonic() + 30
    while len(reader.poll_for(0.2)) < 8 and time.monotonic() < deadline:
        pass
    worker.kill()  # SIGKILL: no drain, no commit, transaction left open
    answered_before = len(reader.results)
    assert 0 < answered_before < len(ids), "the kill landed mid-run"
    # The pod restarts under the same name: same static member, same transactional id.
    start_worker(lanes, "w1", env)
    results = reader.poll_until(ids, timeout_s=90, settle_s=3)
    assert set(results) == set(ids), "every request was answered"
    counts = [len(r) for r in results.values()]
    if guarantee == "exactly_once":
        assert counts == [1] * len(ids), "exactly one result per request for a read_committed subscriber"
    else:
        assert min(counts) >= 1
