"""Crash-loop poison: a message that kills the worker process is dead-lettered, not retried forever.

The null engine aborts the process (SIGABRT, as a segfaulting native library would) on any task
whose text contains TTS_TEST_CRASH_MARKER. A supervisor restarts the worker under the same
instance id after each crash, as Kubernetes restarts the container. After
TTS_POISON_MAX_ATTEMPTS crashes the message goes to the DLQ with reason CRASH_LOOP, its
neighbours -- which shared an engine batch with it -- are answered exactly once, and the
partition's committed offset moves past it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from schemas import dlq
from schemas.codec import request_codec
from schemas.model import ResultStatus
from tests.chaos.harness import Supervisor
from tests.chaos.private_stack import PrivateStack
from tests.support.kafka_io import Lanes, ResultReader, committed_offsets, read_all, request
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.timeout(600)

MAX_ATTEMPTS = 3


def _run_crash_loop(
    guarantee: str,
    stack: PrivateStack,
    make_lanes: Callable[..., Lanes],
    kafka_config: dict[str, Any],
    log_dir: Path,
) -> None:
    lanes = make_lanes(1)
    marker = f"CRASH-{uuid.uuid4().hex[:8]}"
    run = uuid.uuid4().hex[:6]
    before = [request(f"neighbour before {run} {i}") for i in range(6)]
    poison = request(f"this sentence takes the worker down {marker}")
    after = [request(f"neighbour after {run} {i}") for i in range(6)]
    codec = request_codec()
    producer = Producer(kafka_config)
    sent = [*before, poison, *after]
    for req in sent:  # one partition, in this order: the poison is offset 6
        producer.produce(lanes.requests, codec.encode(req), key=req.request_id.encode())
    assert producer.flush(30) == 0
    poison_bytes = codec.encode(poison)

    env = {
        **lanes.env(),
        "TTS_ENGINE": "null",
        "TTS_NULL_LATENCY_MS": "150",
        "TTS_MAX_BATCH_ITEMS": "4",
        "TTS_BATCH_MAX_WAIT_MS": "100",
        "TTS_GUARANTEE": guarantee,
        "TTS_POISON_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        # A restarted instance is a new lease owner: it waits out its dead predecessor's leases
        # on the keys that were in the engine. Short leases keep the test short.
        "TTS_LEASE_TTL_MS": "3000",
        "TTS_TEST_CRASH_MARKER": marker,
    }
    worker = WorkerProcess(stack.addresses, env, log_dir, instance_id="crashy")
    started = time.monotonic()
    supervisor = Supervisor([worker], lambda: time.monotonic() - started, restart_delay_s=0.5)
    reader = ResultReader(kafka_config, lanes.results)
    neighbours = [r.request_id for r in before + after]
    try:
        worker.start()
        supervisor.start()
        results = reader.poll_until(neighbours, timeout_s=240, settle_s=3)
        # The last incarnation dead-lettered the poison and committed past it.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if committed_offsets(kafka_config, lanes.group, lanes.requests, 1) == {0: len(sent)}:
                break
            time.sleep(0.5)
        worker.wait_ready(60)
        final_metrics = worker.metrics()
    finally:
        supervisor.stop()
        worker.stop(20)
        reader.close()

    crashes = [e for e in supervisor.exits if e.cause == "exit"]
    assert [e.returncode for e in crashes] == [-6] * MAX_ATTEMPTS, (
        f"exactly {MAX_ATTEMPTS} crashes (SIGABRT), then the poison is out of the way: {supervisor.exits}"
    )
    assert set(results) == set(neighbours), "every neighbour was answered"
    for request_id in neighbours:
        answers = results[request_id]
        assert all(a.status is ResultStatus.SUCCEEDED for a in answers)
        if guarantee == "exactly_once":
            assert len(answers) == 1, f"{request_id} answered {len(answers)} times"
    assert poison.request_id not in results, "the poison gets no result: it never finished"

    dead = read_all(kafka_config, lanes.dlq)
    assert len(dead) == 1
    (letter,) = dead
    assert letter.value() == poison_bytes, "the original bytes are kept"
    headers = dict(letter.headers())
    assert headers[dlq.REASON] == b"CRASH_LOOP"
    assert headers[dlq.ATTEMPTS] == str(MAX_ATTEMPTS).encode()
    assert headers[dlq.SOURCE_OFFSET] == b"6"
    assert headers[dlq.SOURCE_TOPIC] == lanes.requests.encode()
    assert committed_offsets(kafka_config, lanes.group, lanes.requests, 1) == {0: len(sent)}, (
        "the partition moved on"
    )
    assert final_metrics.get('tts_dlq_messages_total{reason="CRASH_LOOP"}') == 1.0


def test_a_message_that_crashes_the_worker_is_dead_lettered_after_the_limit(
    healthy_stack: PrivateStack,
    private_lanes: Callable[..., Lanes],
    private_kafka_config: dict[str, Any],
    tmp_path: Path,
) -> None:
    _run_crash_loop("exactly_once", healthy_stack, private_lanes, private_kafka_config, tmp_path)


@pytest.mark.slow
def test_crash_loop_detection_under_at_least_once(
    healthy_stack: PrivateStack,
    private_lanes: Callable[..., Lanes],
    private_kafka_config: dict[str, Any],
    tmp_path: Path,
) -> None:
    _run_crash_loop("at_least_once", healthy_stack, private_lanes, private_kafka_config, tmp_path)
