"""What the pipeline's stages share: the flight board, the way answers go back to the loop,
lease release, stopping, and how a task that failed in the engine is retried or answered."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from consumer.core.flights import Flight, FlightBoard, FlightState
from consumer.core.messages import Job, Outcome
from consumer.core.results import ResultFactory
from consumer.core.retry import RetryPolicies
from consumer.engine import BatchLimits, FailureKind, TaskFailure
from consumer.errors import CacheUnavailable, FatalError, StageFailed
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
    retry: RetryPolicies
    poison_max_attempts: int
    finish_threads: int = 2
    wait_poll_s: float = 0.05


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
    clock: Callable[[], float] = time.monotonic
    last_progress: float = field(init=False)

    def __post_init__(self) -> None:
        # "<instance>|<incarnation>": a restarted instance is a new owner, and takes over the leases
        # its dead predecessor left at once (see the claim script) instead of waiting them out.
        self.owner = f"{self.config.instance_id}|{time.time_ns()}"
        self.last_progress = self.clock()

    def advanced(self) -> None:
        """A stage moved work on: it answered jobs, or a call to the engine, storage or the cache
        returned (even with an error: an outage being retried is not a hang). /livez watches
        this (Pipeline.progress)."""
        self.last_progress = self.clock()

    def sleep(self, seconds: float) -> bool:
        """Wait up to `seconds`; True when the pipeline is stopping."""
        return self.stopping.wait(seconds)

    def answer(self, answers: Iterable[tuple[Job, Outcome]]) -> None:
        """Answer jobs and hand them to the loop: the stages' only way to answer. A job that
        already has an answer keeps it (Job.answer refuses the second) and is not handed over
        again; the refusal is counted (tts_answers_refused_total)."""
        answered = False
        for job, outcome in answers:
            answered = True
            if job.answer(outcome):
                self.completed.put(job)
            else:
                self.metrics.answers_refused.inc()
        if answered:
            self.advanced()

    def fail(self, jobs: Sequence[Job], code: ErrorCode, message: str, *, retryable: bool) -> None:
        self.answer((job, self.results.failure(job, code, message, retryable=retryable)) for job in jobs)

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

    def contain(self, name: str, fn: Callable[..., None], *args: object) -> None:
        """Run a stage's step or pool task. The stages answer or retry the flights they hold when
        something unexpected happens to them (`give_back`); an exception that still gets here is
        one the stage could not pin on its work — its own bookkeeping (the board, lease renewal,
        the hand-over to storage) is in doubt. Logging and carrying on would leave work that
        nobody answers and leases renewed for ever, so the worker stops: the loop commits what
        finished and exits 1, and the restart consumes the rest again."""
        try:
            fn(*args)
        except FatalError as exc:
            self.die(exc)
        except Exception as exc:
            log.exception("the %s stage cannot go on", name)
            self.die(StageFailed(unexpected(exc, name)))

    def forever(self, name: str, step: Callable[[], None]) -> None:
        """A stage thread's body: run `step` until stopping (or until `contain` stops it)."""
        while not self.stopping.is_set():
            self.contain(name, step)

    def give_back(self, flights: Sequence[Flight], state: FlightState, failure: TaskFailure) -> None:
        """A stage met an unexpected error with `flights` in hand: those still on the board in
        `state` (not yet handed on, answered or requeued) are retried or failed per `failure`."""
        for flight in self.board.holding(flights, state):
            self.retry_or_fail(flight, failure)

    def retry_or_fail(self, flight: Flight, failure: TaskFailure) -> None:
        """A transient failure is retried with the engine's back-off up to the limit; anything
        else answers every job of the flight with a failed result."""
        if failure.kind is FailureKind.TRANSIENT and flight.retries < self.config.engine_max_retries:
            flight.retries += 1
            self.metrics.engine_retries.inc()
            self.board.requeue(flight, delay_s=self.config.retry.engine.delay_s(flight.retries))
            return
        try:
            code = ErrorCode(failure.code)
        except ValueError:
            code = ErrorCode.ENGINE_ERROR
        retryable = failure.kind is FailureKind.TRANSIENT
        self.fail(self.board.finish(flight), code, failure.message, retryable=retryable)
        self.release([flight])


def unexpected(exc: Exception, stage: str) -> str:
    """What a result or a fatal error says about an error nobody anticipated: its type only,
    since its text may quote the request."""
    return f"unexpected {type(exc).__name__} in the {stage} stage"
