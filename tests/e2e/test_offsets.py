"""Offsets: a stalled head is never committed past, and duplicates cost one synthesis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from consumer.adapters.redis_store import lease_key
from consumer.app import RunLimits, build_finisher
from consumer.engines.null import NullEngine
from consumer.errors import FatalError
from consumer.settings import WorkerSettings
from schemas.keys import CacheKeyInputs, ResolvedVoice, cache_key
from schemas.model import ResultStatus
from tests.e2e.conftest import InProcessWorker
from tests.support.kafka_io import Lanes, ResultReader, committed_offsets, request, send_requests


def _null_cache_key(text: str) -> str:
    """The key the worker will compute for a preset en-us WAV request on the null engine."""
    settings = WorkerSettings(http_port=0)
    return cache_key(
        CacheKeyInputs(
            engine="null",
            model_version=NullEngine().model_version,
            voice=ResolvedVoice(preset="en-us"),
            text=text,
            language=None,
            style_instruction=None,
            speed=1.0,
            output_format="WAV",
            sample_rate_hz=None,
            postprocess=build_finisher(settings).profile(settings.loudness_lufs),
        )
    )


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_slow_head_fast_tail_never_commits_past_the_head(
    guarantee: str,
    kafka_config: dict[str, Any],
    make_lanes: Callable[..., Lanes],
    in_process_worker: Callable[..., InProcessWorker],
    redis_client: Any,
) -> None:
    lanes = make_lanes(partitions=1)
    run = uuid.uuid4().hex[:6]
    head_text = f"the slow head {run}"
    # Another (stuck) worker holds the head's single-flight lease: the head waits for it while
    # the tail flows past.
    stuck = lease_key(_null_cache_key(head_text))
    redis_client.set(stuck, "a-stuck-worker", px=120_000)
    head = request(head_text)
    tail = [request(f"fast tail {run} {i}") for i in range(5)]
    send_requests(kafka_config, lanes.requests, [head, *tail])
    worker = in_process_worker(lanes, NullEngine(), guarantee=guarantee, limits=RunLimits(idle_exit_s=3))

    reader = ResultReader(kafka_config, lanes.results)
    tail_ids = [t.request_id for t in tail]
    if guarantee == "at_least_once":
        # Answers of the tail are published as they finish...
        reader.poll_until(tail_ids, timeout_s=30)
        assert set(tail_ids) <= set(reader.results)
        time.sleep(1.0)
    else:
        # ...but under exactly_once they wait for the head: publishing them before their
        # offsets can be committed would answer them twice after a crash.
        reader.poll_for(4.0)
        assert reader.results == {}
    assert head.request_id not in reader.results
    # ...and in both modes the commit stops at the head (offset 0: nothing committed).
    assert committed_offsets(kafka_config, lanes.group, lanes.requests, 1)[0] < 0

    redis_client.delete(stuck)  # the stuck worker's lease expires: ours takes over
    results = reader.poll_until([head.request_id, *tail_ids], timeout_s=30, settle_s=1)
    assert all(len(results[i]) == 1 and results[i][0].status is ResultStatus.SUCCEEDED for i in results), [
        (i == head.request_id, [(x.status, x.error) for x in r])
        for i, r in results.items()
        if len(r) != 1 or r[0].status is not ResultStatus.SUCCEEDED
    ]
    worker.join(60)
    assert committed_offsets(kafka_config, lanes.group, lanes.requests, 1) == {0: 6}
    assert worker.app.metrics.singleflight_takeovers._value.get() == 1


def test_duplicates_in_one_worker_are_synthesised_once(
    kafka_config: dict[str, Any], lanes: Lanes, in_process_worker: Callable[..., InProcessWorker]
) -> None:
    run = uuid.uuid4().hex[:6]
    texts = [f"coalesce {run} {i}" for i in range(6)]
    requests = [request(text) for text in texts for _ in range(4)]  # every text four times
    ids = send_requests(kafka_config, lanes.requests, requests)
    engine = NullEngine()
    worker = in_process_worker(lanes, engine, limits=RunLimits(idle_exit_s=3))
    results = ResultReader(kafka_config, lanes.results).poll_until(ids, timeout_s=30, settle_s=1)
    worker.join(60)
    assert engine.invocations.tasks == len(texts), "the engine ran once per unique text"
    assert sorted(engine.invocations.keys) == sorted({r[0].cache_key for r in results.values()})
    assert sum(r[0].cache_hit for r in results.values()) == len(ids) - len(texts)


class BrokenAccelerator(NullEngine):
    def synthesize(self, tasks: Any) -> Any:
        raise FatalError("CUDA context lost")


def test_a_fatal_engine_error_stops_the_worker_and_commits_nothing_unfinished(
    kafka_config: dict[str, Any],
    make_lanes: Callable[..., Lanes],
    in_process_worker: Callable[..., InProcessWorker],
) -> None:
    lanes = make_lanes(partitions=1)
    send_requests(kafka_config, lanes.requests, [request(f"doomed {uuid.uuid4().hex}")])
    worker = in_process_worker(lanes, BrokenAccelerator())
    with pytest.raises(FatalError, match="CUDA context lost"):
        worker.join(60)
    assert committed_offsets(kafka_config, lanes.group, lanes.requests, 1)[0] < 0, (
        "the request stays for a restart"
    )
