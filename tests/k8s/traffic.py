"""Traffic from outside the cluster and the exactly-once check on what comes back."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

from confluent_kafka import Producer

from schemas import model
from schemas.codec import request_codec
from schemas.keys import routing_key
from tests.support.kafka_io import ResultReader, request


def unique_requests(count: int, label: str) -> list[model.SynthesisRequest]:
    """Requests whose texts all differ, so each needs the engine (none is a cache hit)."""
    run = uuid.uuid4().hex[:6]
    return [request(f"{label} {run} sentence number {i}.") for i in range(count)]


def submit(kafka_config: dict[str, Any], topic: str, requests: list[model.SynthesisRequest]) -> list[str]:
    codec = request_codec()
    producer = Producer({**kafka_config, "enable.idempotence": True, "linger.ms": 20})
    for req in requests:
        producer.produce(topic, codec.encode(req), key=routing_key(req).encode())
        producer.poll(0)
    assert producer.flush(60) == 0, "requests were not delivered to the broker"
    return [r.request_id for r in requests]


class SteadyLoad:
    """Requests at a fixed rate from a background thread, until stopped."""

    def __init__(self, kafka_config: dict[str, Any], topic: str, per_second: float, label: str) -> None:
        self._config = kafka_config
        self._topic = topic
        self._interval_s = 1.0 / per_second
        self._label = label
        self._stop = threading.Event()
        self.ids: list[str] = []
        self._thread = threading.Thread(target=self._run, name=f"load-{label}", daemon=True)

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        codec = request_codec()
        producer = Producer({**self._config, "enable.idempotence": True})
        run = uuid.uuid4().hex[:6]
        i = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            req = request(f"{self._label} {run} steady request {i}.")
            producer.produce(self._topic, codec.encode(req), key=routing_key(req).encode())
            producer.poll(0)
            self.ids.append(req.request_id)
            i += 1
            next_at += self._interval_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        assert producer.flush(60) == 0


def assert_exactly_once(
    reader: ResultReader, ids: list[str], *, timeout_s: float, settle_s: float = 10.0
) -> dict[str, list[model.SynthesisResult]]:
    """Every id answered exactly once and successfully, as a read_committed subscriber sees it."""
    results = reader.poll_until(ids, timeout_s, settle_s=settle_s)
    missing = [i for i in ids if i not in results]
    assert not missing, f"{len(missing)} of {len(ids)} requests got no result, e.g. {missing[:3]}"
    counts = Counter({i: len(results[i]) for i in ids})
    twice = [i for i, n in counts.items() if n > 1]
    assert not twice, f"{len(twice)} requests were answered more than once, e.g. {twice[:3]}"
    failed = [results[i][0] for i in ids if results[i][0].status != model.ResultStatus.SUCCEEDED]
    assert not failed, f"{len(failed)} requests failed, e.g. {failed[:2]}"
    return results
