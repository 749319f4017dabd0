"""What the pipeline's stages share: the flight board, the way answers go back to the loop,
lease release, stopping, and how a task that failed in the engine is retried or answered."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from consumer.core.flights import Flight, FlightBoard
from consumer.core.messages import Job
from consumer.core.results import ResultFactory
from consumer.engine import BatchLimits, FailureKind, TaskFailure
from consumer.errors import CacheUnavailable, FatalError
from consumer.metrics import Metrics
from consumer.ports import DedupStore
from consumer.settings import CacheFailurePolicy
from schemas.model import ErrorCode

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    instance_id: str
    model_version: str
    audio_bucket: str
    audio_prefix: str
    default_loudness_lufs: float
    lease_ttl_ms: int
    cache_ttl_s: int
    cache_failure_policy: CacheFailurePolicy
    batch_limits: BatchLimits
    batch_max_wait_s: float
    engine_max_retries: int
    engine_retry_backoff_s: float
    poison_max_attempts: int
    finish_threads: int = 2
    wait_poll_s: float = 0.05


def backoff_s(attempt: int, base_s: float = 0.2, cap_s: float = 5.0) -> float:
    return float(min(cap_s, base_s * (2 ** max(0, attempt - 1))))


@dataclass
class StageContext:
    config: PipelineConfig
    dedup: DedupStore
    results: ResultFactory
    metrics: Metrics
    board: FlightBoard = field(default_factory=FlightBoard)
    completed: queue.SimpleQueue[Job] = field(default_factory=queue.SimpleQueue)
    stopping: threading.Event = field(default_factory=threading.Event)
    fatal: FatalError | None = None

    def __post_init__(self) -> None:
        # "<instance>|<incarnation>": a restarted instance is a new owner, and takes over the leases
        # its dead predecessor left at once (see the claim script) instead of waiting them out.
        self.owner = f"{self.config.instance_id}|{time.time_ns()}"

    def sleep(self, seconds: float) -> bool:
        """Wait up to `seconds`; True when the pipeline is stopping."""
        return self.stopping.wait(seconds)

    def answer(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self.completed.put(job)

    def release(self, flights: Sequence[Flight]) -> None:
        keys = [f.key for f in flights if f.leased]
        if not keys:
            return
        try:
            self.dedup.release(keys, self.owner)
        except CacheUnavailable:
            log.warning("could not release %d leases (redis down); they expire on their own", len(keys))

    def die(self, exc: FatalError) -> None:
        """A stage met an error the process cannot survive: the loop raises it and exits."""
        log.critical("pipeline stopping: %s", exc)
        if self.fatal is None:
            self.fatal = exc
        self.stopping.set()
        self.board.close()

    def guarded(self, fn: Callable[..., None], *args: object) -> None:
        """Run a pool task; a fatal error stops the pipeline instead of vanishing in the pool."""
        try:
            fn(*args)
        except FatalError as exc:
            self.die(exc)
        except Exception:
            log.exception("pipeline task failed")

    def forever(self, name: str, step: Callable[[], None]) -> None:
        """A stage thread's body: run `step` until stopping; a bug is logged and paused on,
        never allowed to kill the thread silently; a fatal error stops the pipeline."""
        while not self.stopping.is_set():
            try:
                step()
            except FatalError as exc:
                self.die(exc)
            except Exception:
                log.exception("%s iteration failed", name)
                self.sleep(0.5)

    def retry_or_fail(self, flight: Flight, failure: TaskFailure) -> None:
        """A transient failure is retried with doubling back-off up to the limit; anything else
        answers every job of the flight with a failed result."""
        if failure.kind is FailureKind.TRANSIENT and flight.retries < self.config.engine_max_retries:
            flight.retries += 1
            self.metrics.engine_retries.inc()
            self.board.requeue(
                flight, delay_s=self.config.engine_retry_backoff_s * (2 ** (flight.retries - 1))
            )
            return
        jobs = self.board.finish(flight)
        try:
            code = ErrorCode(failure.code)
        except ValueError:
            code = ErrorCode.ENGINE_ERROR
        retryable = failure.kind is FailureKind.TRANSIENT
        for job in jobs:
            job.outcome = self.results.failure(job, code, failure.message, retryable=retryable)
        self.answer(jobs)
        self.release([flight])
