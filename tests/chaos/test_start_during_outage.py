"""A worker (re)started while Redis or S3 is down must come up and serve once it can.

Kubernetes restarts pods at any time -- a node drain, an OOM kill -- and not only when every
dependency is healthy. Under the default fail_open policy Redis is optional: a worker started
without it answers requests without the cache. Storage is required: the worker starts, holds
the requests (ready all along: readiness is the pod's own state, the outage shows in
tts_dependency_up) and answers everything once storage is back.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from schemas.model import ResultStatus
from tests.chaos.private_stack import PrivateStack
from tests.support.kafka_io import Lanes, ResultReader, request, send_requests
from tests.support.worker import WorkerProcess, wait_until

pytestmark = pytest.mark.timeout(300)

NULL_ENGINE = {"TTS_ENGINE": "null", "TTS_NULL_LATENCY_MS": "20"}


def _worker(stack: PrivateStack, lanes: Lanes, log_dir: Path, instance_id: str) -> WorkerProcess:
    return WorkerProcess(stack.addresses, {**lanes.env(), **NULL_ENGINE}, log_dir, instance_id=instance_id)


def _in_flight(worker: WorkerProcess) -> float:
    try:
        return worker.metrics().get("tts_in_flight_requests", 0.0)
    except OSError:  # the health server is not listening yet
        return 0.0


@pytest.mark.slow  # `make test` covers it inside the short chaos scenario
def test_a_worker_started_while_redis_is_down_serves_without_the_cache(
    healthy_stack: PrivateStack,
    private_lanes: Callable[..., Lanes],
    private_kafka_config: dict[str, Any],
    tmp_path: Path,
) -> None:
    lanes = private_lanes(2)
    run = uuid.uuid4().hex[:6]
    healthy_stack.stop("redis")
    worker = _worker(healthy_stack, lanes, tmp_path, "no-redis")
    try:
        worker.start()
        worker.wait_ready(90)  # readiness is the pod's own state: a dependency down is not a reason
        ids = send_requests(
            private_kafka_config, lanes.requests, [request(f"redis is down {run} {i}") for i in range(5)]
        )
        reader = ResultReader(private_kafka_config, lanes.results)
        results = reader.poll_until(ids, timeout_s=60, settle_s=1)
        assert set(results) == set(ids)
        assert all(len(r) == 1 and r[0].status is ResultStatus.SUCCEEDED for r in results.values())
        metrics = worker.metrics()
        assert metrics.get("tts_cache_fail_open_total", 0) >= 5, "the fail-open path was taken"
        status, body = worker.get("/readyz")
        assert status == 200 and json.loads(body)["redis"] == "down"
        assert metrics['tts_dependency_up{dependency="redis"}'] == 0
        reader.close()
    finally:
        worker.stop(20)
        healthy_stack.start("redis")


@pytest.mark.slow
def test_a_worker_started_while_storage_is_down_answers_once_it_is_back(
    healthy_stack: PrivateStack,
    private_lanes: Callable[..., Lanes],
    private_kafka_config: dict[str, Any],
    tmp_path: Path,
) -> None:
    lanes = private_lanes(2)
    run = uuid.uuid4().hex[:6]
    healthy_stack.stop("s3")
    worker = _worker(healthy_stack, lanes, tmp_path, "no-s3")
    try:
        worker.start()
        ids = send_requests(
            private_kafka_config, lanes.requests, [request(f"storage is down {run} {i}") for i in range(5)]
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _in_flight(worker) < 5:
            assert worker.alive(), worker.log_tail()
            time.sleep(0.5)
        assert _in_flight(worker) == 5, "the worker took the requests and holds them"
        reader = ResultReader(private_kafka_config, lanes.results)
        assert reader.poll_for(5) == {}, "nothing is answered while the audio cannot be stored"
        wait_until(
            lambda: worker.metrics().get('tts_dependency_up{dependency="s3"}') == 0, "the storage check", 30
        )
        status, _ = worker.get("/readyz")
        assert status == 200, "the pod is fine: the work waits for storage, the pod stays ready"
        healthy_stack.start("s3")
        results = reader.poll_until(ids, timeout_s=60, settle_s=1)
        assert set(results) == set(ids)
        assert all(len(r) == 1 and r[0].status is ResultStatus.SUCCEEDED for r in results.values())
        worker.wait_ready(30)
        reader.close()
    finally:
        worker.stop(20)
        if not healthy_stack.running("s3"):
            healthy_stack.start("s3")
