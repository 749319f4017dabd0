"""A worker killed inside a transaction, replaced under its own name and under a new one.

The transactional id is `<group>.<instance id>`. A replacement under the same id fences its
predecessor in init_transactions, which aborts the transaction it left open at once. A
replacement under a new name (a Deployment's pod) cannot: the open transaction holds back the
last stable offset of the results partitions it wrote to, and every read_committed subscriber
waits for the broker to time it out. This is why the chart runs workers as a StatefulSet
(docs/deploy.md, "Worker identities").

Each scenario runs a real worker under a steady feed, stops it (SIGSTOP) until a results
partition shows an open transaction (its last stable offset below its end, still so a moment
later), kills it there, starts the replacement and measures how long the results partitions
stay blocked. Every request must then be answered exactly once, whatever the name: a dead
worker's replacement once restarted a partition at offset 0 (librdkafka read the committed
offset while the transaction was open) and answered its history again.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import IsolationLevel, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from schemas.codec import request_codec
from schemas.keys import routing_key
from tests.support.kafka_io import Lanes, ResultReader, request
from tests.support.worker import WorkerProcess, wait_until

pytestmark = pytest.mark.timeout(420)

# The dead member leaves the group (its session times out) before the broker aborts its
# transaction, as with the defaults (a 45 s session, a 60 s transaction), scaled down: the
# new-name replacement then takes the partitions while their committed offsets are unstable.
# The classic protocol, because the consumer protocol's session timeout is the broker's (45 s).
TRANSACTION_TIMEOUT_MS = 15_000
MODEL_LOAD_S = 20
WORKER_ENV = {
    "TTS_ENGINE": "null",
    "TTS_NULL_LATENCY_MS": "5",
    "TTS_GUARANTEE": "exactly_once",
    "TTS_TRANSACTION_TIMEOUT_MS": str(TRANSACTION_TIMEOUT_MS),
    "TTS_GROUP_PROTOCOL": "classic",
    "TTS_SESSION_TIMEOUT_MS": "6000",
}


class Feed:
    """An upstream service sending a request every few milliseconds until stopped."""

    def __init__(self, kafka_config: dict[str, Any], topic: str) -> None:
        self.ids: list[str] = []
        self._producer = Producer({**kafka_config, "enable.idempotence": True, "linger.ms": 2})
        self._topic = topic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feed", daemon=True)

    def start(self) -> Feed:
        self._thread.start()
        return self

    def _run(self) -> None:
        codec, run = request_codec(), uuid.uuid4().hex[:6]
        while not self._stop.is_set():
            req = request(f"identity {run} {len(self.ids)}")
            self._producer.produce(self._topic, codec.encode(req), key=routing_key(req).encode())
            self.ids.append(req.request_id)
            self._producer.poll(0)
            self._stop.wait(0.005)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(10)
        assert self._producer.flush(30) == 0
        return list(self.ids)


def _offsets(admin: AdminClient, topic: str, partitions: int, isolation: IsolationLevel) -> dict[int, int]:
    specs = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)}
    answers = admin.list_offsets(specs, isolation_level=isolation, request_timeout=10)
    return {tp.partition: future.result().offset for tp, future in answers.items()}


def _open_transaction(admin: AdminClient, lanes: Lanes) -> dict[int, int]:
    """Results partitions whose last stable offset is below their end: {partition: end}."""
    stable = _offsets(admin, lanes.results, lanes.partitions, IsolationLevel.READ_COMMITTED)
    end = _offsets(admin, lanes.results, lanes.partitions, IsolationLevel.READ_UNCOMMITTED)
    return {p: end[p] for p in end if stable[p] < end[p]}


def _kill_inside_a_transaction(worker: WorkerProcess, admin: AdminClient, lanes: Lanes) -> dict[int, int]:
    """SIGSTOP until a transaction is caught open, then SIGKILL. A commit already on its way
    ends within milliseconds, so an open transaction must still be open 300 ms later."""
    for _ in range(200):
        worker.signal(signal.SIGSTOP)
        if _open_transaction(admin, lanes):
            time.sleep(0.3)
            blocked = _open_transaction(admin, lanes)
            if blocked:
                worker.kill()
                return blocked
        worker.signal(signal.SIGCONT)
        time.sleep(0.013)
    raise AssertionError("never caught the worker inside a transaction")


def _blocked_for(admin: AdminClient, lanes: Lanes, blocked: dict[int, int], since: float) -> float:
    """Seconds from `since` until the last stable offset of every blocked partition passed the
    dead transaction (what read_committed subscribers wait for)."""

    def released() -> bool:
        stable = _offsets(admin, lanes.results, lanes.partitions, IsolationLevel.READ_COMMITTED)
        return all(stable[p] >= end for p, end in blocked.items())

    wait_until(released, "the dead transaction to end", timeout_s=TRANSACTION_TIMEOUT_MS / 1000 + 60)
    return time.monotonic() - since


@pytest.mark.parametrize("replacement", ["same-name", "new-name"])
def test_a_worker_killed_inside_a_transaction_is_replaced_without_duplicates(
    replacement: str,
    kafka_config: dict[str, Any],
    make_lanes: Callable[..., Lanes],
    start_worker: Callable[..., WorkerProcess],
    record_property: Callable[[str, object], None],
) -> None:
    lanes = make_lanes(3)
    admin = AdminClient(kafka_config)
    name = f"ident-{uuid.uuid4().hex[:6]}"
    first = start_worker(lanes, name, WORKER_ENV)
    feed = Feed(kafka_config, lanes.requests).start()
    wait_until(lambda: _answered(first) > 20, "the first answers", timeout_s=60)
    blocked = _kill_inside_a_transaction(first, admin, lanes)
    killed_at = time.monotonic()
    ids = feed.stop()
    # The replacement's model loads for longer than the transaction timeout: only a fence made
    # before the load beats the broker's own abort.
    successor_env = {**WORKER_ENV, "TTS_NULL_LOAD_SECONDS": str(MODEL_LOAD_S)}
    successor = start_worker(
        lanes, name if replacement == "same-name" else f"{name}-b", successor_env, ready=False
    )
    stall_s = _blocked_for(admin, lanes, blocked, killed_at)
    record_property("results_blocked_s", round(stall_s, 1))
    print(
        f"\n[identities] {replacement}: results partitions {sorted(blocked)} "
        f"blocked {stall_s:.1f} s after the kill"
    )

    reader = ResultReader(kafka_config, lanes.results)
    results = reader.poll_until(ids, timeout_s=120, settle_s=2)
    reader.close()
    missing = set(ids) - set(results)
    twice = {rid: len(r) for rid, r in results.items() if len(r) > 1}
    assert not missing, f"{len(missing)} of {len(ids)} requests unanswered:\n{successor.log_tail()}"
    assert not twice, f"{len(twice)} requests answered more than once:\n{successor.log_tail()}"
    if replacement == "same-name":
        assert stall_s < TRANSACTION_TIMEOUT_MS / 1000, (
            "the replacement under the same name fences its predecessor: its transaction is aborted "
            "at once, not when the broker times it out"
        )


def _answered(worker: WorkerProcess) -> float:
    try:
        metrics = worker.metrics()
    except OSError:
        return 0.0
    return sum(v for k, v in metrics.items() if k.startswith("tts_requests_total"))
