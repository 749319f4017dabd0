"""Workers on Redis with Sentinel and on a Redis Cluster, as operators configure them: only the
TTS_REDIS_* variables change. Two worker processes share the cache and the single-flight leases
through the deployment (scripts/stack.sh starts it on free ports): every request is answered once,
a text asked twice is synthesised once, and the entries are where the operator tools look."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from consumer.adapters.redis_store import CACHE_MISSES_KEY
from schemas.model import ResultStatus
from tests.support.kafka_io import Lanes, ResultReader, request, send_requests
from tests.support.redis_topologies import RedisDeployment
from tests.support.worker import WorkerProcess
from tts_stream.ops.cache import CacheAdmin

NULL_ENGINE = {"TTS_ENGINE": "null", "TTS_NULL_LATENCY_MS": "30", "TTS_MAX_BATCH_ITEMS": "4"}


@pytest.mark.parametrize("mode", ["sentinel", "cluster"])
def test_two_workers_share_one_cache_through_the_deployment(
    mode: str,
    request: pytest.FixtureRequest,
    kafka_config: dict[str, Any],
    make_lanes: Callable[..., Lanes],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    deployment: RedisDeployment = request.getfixturevalue(f"{mode}_redis")
    lanes = make_lanes(partitions=4)
    engine = f"null-{uuid.uuid4().hex[:6]}"  # our entries, told apart from other tests'
    env = {**NULL_ENGINE, **deployment.env, "TTS_MODEL_VERSION": engine}
    workers = [start_worker(lanes, f"{mode}-{i}", env) for i in range(2)]
    for worker in workers:  # both hold partitions before the first request goes out
        _wait_for_partitions(worker)
    client: Any = deployment.topology(socket_timeout=5).client()
    misses_before = int(client.get(CACHE_MISSES_KEY) or 0)

    run = uuid.uuid4().hex[:6]
    texts = [f"redis {mode} {run} sentence {i}" for i in range(12)]
    first = send_requests(kafka_config, lanes.requests, [request_of(t) for t in texts])
    reader = ResultReader(kafka_config, lanes.results)
    reader.poll_until(first, timeout_s=90)
    again = send_requests(kafka_config, lanes.requests, [request_of(t) for t in texts[:6]])
    results = reader.poll_until(first + again, timeout_s=90, settle_s=2.0)

    assert all(len(results[rid]) == 1 for rid in first + again), "one result per request"
    assert all(results[rid][0].status is ResultStatus.SUCCEEDED for rid in first + again)
    assert all(results[rid][0].cache_hit for rid in again), "the repeats come from the shared cache"
    assert {results[rid][0].worker_id for rid in first} == {w.instance_id for w in workers}
    stats = CacheAdmin(client).stats()
    assert stats.by_producer[("null", engine)] == 12, "every entry is found, on whichever node holds it"
    assert int(client.get(CACHE_MISSES_KEY) or 0) >= misses_before + 12
    for worker in workers:
        mode_logged = [line for line in worker.log_lines() if line.get("msg") == "redis"]
        assert mode_logged and mode_logged[0]["mode"] == mode
        assert "ttsstream-local-redis" not in worker.log_path.read_text(), "the password is never logged"


def request_of(text: str) -> Any:
    return request(text)


def _wait_for_partitions(worker: WorkerProcess, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(
            line.get("msg") == "partitions assigned" and line.get("partitions") for line in worker.log_lines()
        ):
            return
        time.sleep(0.2)
    raise AssertionError(
        f"{worker.instance_id} got no partition within {timeout_s:.0f}s:\n{worker.log_tail()}"
    )
