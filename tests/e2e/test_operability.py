"""What operators see: metrics that add up, probes that tell the truth, logs without text, traces."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from consumer.adapters.kafka import KafkaConsumerAdapter
from consumer.app import RunLimits
from consumer.engines.null import NullEngine
from tests.e2e.conftest import InProcessWorker
from tests.support.kafka_io import Lanes, ResultReader, request, send_requests
from tests.support.worker import WorkerProcess, free_port


def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


def _wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_metrics_count_a_known_workload(
    kafka_config: dict[str, Any], lanes: Lanes, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(lanes, "w1", {"TTS_ENGINE": "null"})
    before = worker.metrics()
    run = uuid.uuid4().hex[:6]
    texts = [f"metrics {run} {i}" for i in range(6)]
    # 10 requests: 6 distinct texts, 4 of them repeated once.
    requests = [request(t) for t in texts] + [request(t) for t in texts[:4]]
    ids = send_requests(kafka_config, lanes.requests, requests[:6])
    ResultReader(kafka_config, lanes.results).poll_until(ids, timeout_s=30)
    ids += send_requests(kafka_config, lanes.requests, requests[6:])  # duplicates after the originals: cached
    ResultReader(kafka_config, lanes.results).poll_until(ids, timeout_s=30)
    _wait_for(
        lambda: worker.metrics()['tts_requests_total{lane="interactive",outcome="succeeded"}'] >= 10,
        10,
        "counters",
    )
    after = worker.metrics()

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta('tts_requests_total{lane="interactive",outcome="succeeded"}') == 10
    assert delta('tts_cache_lookups_total{result="miss"}') == 6
    assert delta('tts_cache_lookups_total{result="hit"}') == 4
    assert delta("tts_engine_batch_size_sum") == 6, "six syntheses"
    assert delta('tts_end_to_end_latency_seconds_count{lane="interactive"}') == 10
    assert delta("tts_audio_produced_seconds_total") > 0
    assert after["tts_ready"] == 1.0
    assert after["tts_in_flight_requests"] == 0.0
    assert after['tts_build_info{engine="null",model_version="silence-1",version="0.1.0"}'] == 1.0
    assert after['tts_consumer_lag_messages{lane="interactive"}'] == 0.0


class SlowWarmEngine(NullEngine):
    def __init__(self, release: threading.Event) -> None:
        super().__init__()
        self._release = release

    def warm_up(self) -> None:
        self._release.wait(30)


def test_readiness_and_startup_wait_for_warm_up(
    lanes: Lanes, in_process_worker: Callable[..., InProcessWorker]
) -> None:
    release = threading.Event()
    port = free_port()
    worker = in_process_worker(
        lanes, SlowWarmEngine(release), http_port=port, limits=RunLimits(idle_exit_s=2)
    )
    _wait_for(lambda: _get(port, "/livez")[0] == 200, 20, "the health server")
    time.sleep(0.5)
    assert _get(port, "/startupz")[0] == 503, "the model is still warming up"
    assert _get(port, "/readyz")[0] == 503
    release.set()
    _wait_for(lambda: _get(port, "/readyz")[0] == 200, 20, "readiness after warm-up")
    # Readiness is this pod's state; the dependency checks run beside it in the background.
    _wait_for(
        lambda: all(_get(port, "/readyz")[1].get(name) == "ok" for name in ("kafka", "redis", "s3")),
        20,
        "the background checks of Kafka, Redis and S3",
    )
    assert _get(port, "/startupz")[0] == 200
    worker.join(60)


def test_liveness_fails_when_the_loop_is_wedged(
    lanes: Lanes, in_process_worker: Callable[..., InProcessWorker], monkeypatch: pytest.MonkeyPatch
) -> None:
    wedge = threading.Event()
    unwedge = threading.Event()
    real_consume = KafkaConsumerAdapter.consume

    def consume(self: KafkaConsumerAdapter, max_messages: int, timeout_s: float) -> list[Any]:
        if wedge.is_set():
            unwedge.wait(30)  # as if librdkafka never returned
        return real_consume(self, max_messages, timeout_s)

    monkeypatch.setattr(KafkaConsumerAdapter, "consume", consume)
    port = free_port()
    worker = in_process_worker(lanes, NullEngine(), http_port=port, liveness_stall_s=1.0)
    _wait_for(lambda: _get(port, "/readyz")[0] == 200, 30, "readiness")
    assert _get(port, "/livez")[0] == 200
    wedge.set()
    _wait_for(lambda: _get(port, "/livez")[0] == 503, 10, "liveness to fail")
    _status, body = _get(port, "/livez")
    assert body["seconds_since_progress"] >= 1.0
    unwedge.set()
    _wait_for(lambda: _get(port, "/livez")[0] == 200, 10, "liveness to recover")
    worker.stop()


def test_logs_are_json_lines_with_ids_and_never_the_text(
    kafka_config: dict[str, Any], lanes: Lanes, start_worker: Callable[..., WorkerProcess]
) -> None:
    secret_text = f"my bank pin is {uuid.uuid4().hex}"
    worker = start_worker(lanes, "w1", {"TTS_ENGINE": "null", "TTS_LOG_LEVEL": "DEBUG"})
    ids = send_requests(kafka_config, lanes.requests, [request(secret_text), request("   ")])
    ResultReader(kafka_config, lanes.results).poll_until(ids, timeout_s=30)
    time.sleep(0.5)
    worker.stop()
    raw = worker.log_path.read_text()
    assert secret_text not in raw
    assert "ttsstream-local-secret" not in raw, "the S3 secret never reaches a log"
    lines = worker.log_lines()
    assert all("raw" not in line for line in lines), "every line is a JSON object"
    answered = [line for line in lines if line.get("msg") == "answered"]
    assert {line["request_id"] for line in answered} == set(ids)
    assert all({"cache_key", "topic", "partition", "offset"} <= set(line) for line in answered)
    committed = [line for line in lines if line.get("msg") == "batch committed"]
    assert committed, "a checkpoint logs its counts at DEBUG"
    assert all(line["level"] == "debug" for line in committed), "no INFO line per checkpoint"


def test_trace_context_flows_from_request_to_result_and_spans_are_exported(
    kafka_config: dict[str, Any], lanes: Lanes, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(lanes, "w1", {"TTS_ENGINE": "null", "TTS_TRACING_EXPORTER": "console"})
    trace_id = uuid.uuid4().hex
    parent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    ids = send_requests(
        kafka_config, lanes.requests, [request("traced")], headers=[("traceparent", parent.encode())]
    )
    reader = ResultReader(kafka_config, lanes.results)
    (result,) = reader.poll_until(ids, timeout_s=30)[ids[0]]
    assert result.traceparent is not None
    _, result_trace, result_span, _ = result.traceparent.split("-")
    assert result_trace == trace_id, "the result joins the caller's trace"
    (message,) = reader.raw
    assert dict(message.headers())["traceparent"] == result.traceparent.encode()
    worker.stop()  # flushes the batch span processor
    exported = worker.log_path.read_text()
    assert f'"trace_id": "0x{trace_id}"' in exported
    assert f'"span_id": "0x{result_span}"' in exported
