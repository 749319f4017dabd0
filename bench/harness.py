"""Shared machinery of the benchmark scenarios: private topics, worker and baseline processes,
preloading backlogs, and reading results with their arrival times."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from schemas import model
from schemas.codec import request_codec, result_codec
from schemas.keys import routing_key
from tests.support.kafka_io import Lanes, create_lanes, delete_lanes, subscriber
from tests.support.stack import ROOT, StackAddresses
from tests.support.worker import WorkerProcess

STACK = StackAddresses.from_env()
KAFKA: dict[str, Any] = {"bootstrap.servers": STACK.kafka_bootstrap}
LOGS = Path(tempfile.mkdtemp(prefix="tts-bench-logs-"))


def run_id() -> str:
    return uuid.uuid4().hex[:8]


@contextmanager
def private_lanes(partitions: int = 6) -> Iterator[Lanes]:
    lanes = create_lanes(KAFKA, partitions)
    try:
        yield lanes
    finally:
        delete_lanes(KAFKA, lanes)


def make_requests(texts: Iterable[str]) -> list[model.SynthesisRequest]:
    now = model.now_ms()
    return [
        model.SynthesisRequest(
            request_id=str(uuid.uuid4()), text=t, voice=model.PresetVoice("en-us"), created_at_ms=now
        )
        for t in texts
    ]


def preload(topic: str, requests: Sequence[model.SynthesisRequest], *, keyed: bool = True) -> None:
    """Produce a backlog as fast as possible (routing-key partitioning unless told otherwise)."""
    codec = request_codec()
    producer = Producer({**KAFKA, "linger.ms": 20, "enable.idempotence": True})
    for i, req in enumerate(requests):
        key = routing_key(req).encode() if keyed else req.request_id.encode()
        while True:
            try:
                producer.produce(topic, codec.encode(req), key=key)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


@dataclass
class Arrival:
    result: model.SynthesisResult
    received_ms: int


def collect(topic: str, expected: int, timeout_s: float) -> list[Arrival]:
    """Read `expected` results (read_committed), noting when each arrived."""
    consumer = subscriber(KAFKA, topic, name="bench-reader")
    codec = result_codec()
    out: list[Arrival] = []
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(seen) < expected and time.monotonic() < deadline:
            # consume(n, t) waits for n messages or t: stamp arrivals at once instead.
            first = consumer.poll(0.2)
            batch = [] if first is None else [first, *consumer.consume(1000, 0)]
            for message in batch:
                if message.error():
                    continue
                result = codec.decode(message.value())
                out.append(Arrival(result, int(time.time() * 1000)))
                seen.add(result.request_id)
    finally:
        consumer.close()
    if len(seen) < expected:
        raise RuntimeError(f"only {len(seen)} of {expected} results arrived within {timeout_s:.0f}s")
    return out


def rate_from_completion(arrivals: Sequence[Arrival]) -> float:
    """Requests per second from the first request taken to the last one answered, on the
    worker's own clock (taken = created_at + queued_ms): start-up and the reader's timing do not
    count, every request's whole processing does."""
    taken = min(
        a.result.completed_at_ms - a.result.timings.total_ms + a.result.timings.queued_ms for a in arrivals
    )
    finished = max(a.result.completed_at_ms for a in arrivals)
    return len(arrivals) / max(0.001, (finished - taken) / 1000.0)


def start_worker(lanes: Lanes, instance: str, env: dict[str, str] | None = None) -> WorkerProcess:
    worker = WorkerProcess(
        STACK, {**lanes.env(), "TTS_LOG_LEVEL": "WARNING", **(env or {})}, LOGS, instance_id=instance
    )
    worker.start()
    worker.wait_ready(120)
    return worker


def start_module(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log = (LOGS / f"{module.rsplit('.', 1)[-1]}-{run_id()}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env={**os.environ, **STACK.worker_env(), **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def summary(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "runs": len(ordered),
    }


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100.0 * (len(ordered) - 1))))
    return ordered[index]
