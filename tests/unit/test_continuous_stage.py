"""The engine stage in front of an engine that batches between its own steps (ContinuousEngine),
with a double whose tasks the test finishes one by one, in any order."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import pytest

from consumer.core.messages import Job
from consumer.core.pipeline import Pipeline
from consumer.core.synthesis import message_id
from consumer.engine import (
    BatchLimits,
    ContinuousEngine,
    EngineBatchFailed,
    EngineOutOfMemory,
    SynthesisTask,
    TaskOutcome,
)
from consumer.engines.null import NullEngine
from consumer.errors import FatalError
from consumer.metrics import Metrics
from schemas.topics import Lane
from tests.support.fakes import PresetResolver, WavFinisher
from tests.support.memory_store import MemoryObjectStore
from tests.support.worker_core import (
    MemoryRedis,
    pipeline_config,
    request_job,
    results,
    succeeded,
    wait_for,
)


class SteppedEngine(NullEngine):
    """A ContinuousEngine double: tasks stay inside until the test finishes them; `room` is
    what `capacity` leaves."""

    def __init__(self, capacity: int = 4) -> None:
        super().__init__()
        self.capacity = capacity
        self.inside: dict[str, Future[TaskOutcome]] = {}
        self.submissions: list[list[str]] = []
        self.inside_at_submission: list[set[str]] = []
        self.most_inside = 0
        self._lock = threading.Lock()

    def submit(self, tasks: Sequence[SynthesisTask]) -> list[Future[TaskOutcome]]:
        futures: list[Future[TaskOutcome]] = [Future() for _ in tasks]
        with self._lock:
            self.inside_at_submission.append(set(self.inside))
            self.submissions.append([t.key for t in tasks])
            self.inside.update((t.key, f) for t, f in zip(tasks, futures, strict=True))
            self.most_inside = max(self.most_inside, len(self.inside))
        return futures

    def room(self) -> BatchLimits:
        with self._lock:
            free = max(0, self.capacity - len(self.inside))
        return BatchLimits(max_items=free, max_cost=free * 1000)

    def holds(self, *keys: str) -> bool:
        with self._lock:
            return all(k in self.inside for k in keys)

    def finish(self, key: str, error: BaseException | None = None) -> None:
        """The task leaves the engine with audio, or with `error`."""
        with self._lock:
            future = self.inside.pop(key)
        if error is None:
            future.set_result(NullEngine.synthesize(self, [SynthesisTask(key=key, text="x")])[0])
        else:
            future.set_exception(error)


@dataclass
class Running:
    pipeline: Pipeline
    engine: SteppedEngine
    redis: MemoryRedis
    answered: list[Job] = field(default_factory=list)

    def submit(self, *jobs: Job) -> list[Job]:
        self.pipeline.submit(list(jobs))
        return list(jobs)

    def answers(self) -> list[Job]:
        self.answered.extend(self.pipeline.completed())
        return self.answered

    def wait_answered(self, *jobs: Job) -> None:
        wait_for(lambda: all(j in self.answers() for j in jobs), f"{len(jobs)} answers")


@pytest.fixture
def start() -> Iterator[Callable[..., Running]]:
    started: list[Pipeline] = []

    def make(capacity: int = 4) -> Running:
        engine, redis = SteppedEngine(capacity), MemoryRedis()
        pipeline = Pipeline(
            engine=engine,
            finisher=WavFinisher(),
            store=MemoryObjectStore(),
            dedup=redis,
            crashes=redis,
            voices=PresetResolver(),
            results=results(),
            metrics=Metrics(),
            config=pipeline_config(),
            deadline_passed=lambda _request: False,
        )
        pipeline.start()
        started.append(pipeline)
        return Running(pipeline, engine, redis)

    yield make
    for pipeline in started:
        pipeline.stop(timeout_s=1.0)


def test_the_double_is_a_continuous_engine() -> None:
    assert isinstance(SteppedEngine(), ContinuousEngine)
    assert not isinstance(NullEngine(), ContinuousEngine)


def test_a_task_that_arrives_while_others_run_joins_them_and_leaves_on_its_own(
    start: Callable[..., Running],
) -> None:
    running = start()
    (first,) = running.submit(request_job(0))
    wait_for(lambda: running.engine.holds(first.cache_key), "the first task inside the engine")
    (second,) = running.submit(request_job(1))
    wait_for(lambda: running.engine.holds(second.cache_key), "the second task to join")
    assert running.engine.inside_at_submission[-1] == {first.cache_key}, "joined while the first ran"
    running.engine.finish(second.cache_key)
    running.wait_answered(second)
    assert first not in running.answers(), "a short task is not held back by a long one"
    running.engine.finish(first.cache_key)
    running.wait_answered(first)
    assert succeeded(first) and succeeded(second)


def test_the_stage_hands_over_no_more_than_the_engine_has_room_for(start: Callable[..., Running]) -> None:
    running = start(capacity=2)
    jobs = running.submit(*(request_job(i) for i in range(5)))
    for job in jobs:
        wait_for(lambda job=job: running.engine.holds(job.cache_key), "the task inside the engine")
        running.engine.finish(job.cache_key)
    running.wait_answered(*jobs)
    assert running.engine.most_inside == 2
    assert all(succeeded(job) for job in jobs)


@pytest.mark.parametrize("error", [EngineOutOfMemory("out of memory"), EngineBatchFailed("a step failed")])
def test_a_failed_step_sends_each_of_its_tasks_back_to_run_alone(
    start: Callable[..., Running], error: Exception
) -> None:
    running = start()
    jobs = running.submit(request_job(0), request_job(1))
    wait_for(lambda: len(running.engine.inside) == 2, "both tasks inside the engine")
    keys = [job.cache_key for job in jobs]
    for key in keys:
        running.engine.finish(key, error)
    for _ in keys:  # each comes back alone, with nothing else inside
        wait_for(lambda: len(running.engine.inside) == 1, "a task to come back alone")
        (key,) = running.engine.inside
        assert running.engine.inside_at_submission[-1] == set()
        running.engine.finish(key)
    running.wait_answered(*jobs)
    assert all(succeeded(job) for job in jobs)


def test_a_suspect_from_a_crash_waits_for_the_engine_to_empty_and_runs_alone(
    start: Callable[..., Running],
) -> None:
    running = start()
    (busy,) = running.submit(request_job(0))
    wait_for(lambda: running.engine.holds(busy.cache_key), "a task inside the engine")
    suspect, other = request_job(1), request_job(2)
    running.redis.crashes[message_id(suspect)] = 1  # it was inside when a worker died
    running.submit(suspect, other)
    wait_for(lambda: running.engine.holds(other.cache_key), "the innocent task to join")
    assert suspect.cache_key is not None
    assert not running.engine.holds(suspect.cache_key), "the suspect waits while others run"
    running.engine.finish(busy.cache_key)
    running.engine.finish(other.cache_key)
    wait_for(lambda: running.engine.holds(suspect.cache_key), "the suspect to start")
    assert running.engine.inside_at_submission[-1] == set(), "alone"
    (late,) = running.submit(request_job(3))
    running.engine.finish(suspect.cache_key)
    wait_for(lambda: running.engine.holds(late.cache_key), "work after the suspect")
    assert running.engine.submissions[-2] == [suspect.cache_key], "nothing joined the suspect"
    running.engine.finish(late.cache_key)
    running.wait_answered(busy, suspect, other, late)


def test_the_crash_ledger_holds_everything_inside_the_engine(start: Callable[..., Running]) -> None:
    running = start()
    first, second = request_job(0), request_job(1)
    running.submit(first)
    wait_for(lambda: running.engine.holds(first.cache_key), "the first task inside")
    running.submit(second)
    wait_for(lambda: running.engine.holds(second.cache_key), "the second task inside")
    wait_for(
        lambda: sorted(running.redis.in_engine) == sorted([message_id(first), message_id(second)]),
        "both recorded as in flight",
    )
    running.engine.finish(first.cache_key)
    wait_for(lambda: running.redis.in_engine == [message_id(second)], "the record to shrink")
    running.engine.finish(second.cache_key)
    running.wait_answered(first, second)
    wait_for(lambda: running.redis.in_engine == [], "the record to clear")


def test_a_fatal_error_from_a_task_stops_the_pipeline(start: Callable[..., Running]) -> None:
    running = start()
    (job,) = running.submit(request_job(0))
    wait_for(lambda: running.engine.holds(job.cache_key), "the task inside the engine")
    running.engine.finish(job.cache_key, FatalError("the GPU is gone"))
    wait_for(lambda: running.pipeline.fatal is not None, "the pipeline to stop")
    assert "the GPU is gone" in str(running.pipeline.fatal)
    assert running.pipeline.pending_jobs(Lane.INTERACTIVE) == 1, "unanswered: it stays for the restart"
