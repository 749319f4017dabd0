"""What the pipeline's stages share, one collaborator per job: how their threads run and stop
(StageRunner), the way answers go back to the loop (Answers), this incarnation's leases in the
dedup store (Leases), and what becomes of a task that failed (Settlement). Each stage is handed
the ones it uses, so its constructor says what it touches."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from consumer.core.flights import Flight, FlightBoard, FlightState
from consumer.core.messages import Job, Outcome
from consumer.core.results import ResultFactory
from consumer.core.retry import RetryPolicies, RetryPolicy
from consumer.engine import BatchLimits, FailureKind, TaskFailure
from consumer.errors import CacheUnavailable, FatalError, StageFailed
from consumer.metrics import Metrics
from consumer.ports import CachedAudio, Claim, DedupStore
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


class StageRunner:
    """How the stages' threads run, stop and die, and the progress /livez watches."""

    def __init__(self, board: FlightBoard, clock: Callable[[], float] = time.monotonic) -> None:
        self._board = board
        self.clock = clock
        self.stopping = threading.Event()
        self.fatal: FatalError | None = None
        self.last_progress = clock()

    def advanced(self) -> None:
        """A stage moved work on: it answered jobs, or a call to the engine, storage or the cache
        returned (even with an error: an outage being retried is not a hang). /livez watches
        this (Pipeline.progress)."""
        self.last_progress = self.clock()

    def sleep(self, seconds: float) -> bool:
        """Wait up to `seconds`; True when the pipeline is stopping."""
        return self.stopping.wait(seconds)

    def stop(self) -> None:
        self.stopping.set()
        self._board.close()

    def die(self, exc: FatalError) -> None:
        """A stage met an error the process cannot survive: the loop raises it and exits."""
        log.critical("pipeline stopping: %s", exc)
        if self.fatal is None:
            self.fatal = exc
        self.stop()

    def contain(self, name: str, fn: Callable[..., None], *args: object) -> None:
        """Run a stage's step or pool task. The stages answer or retry the flights they hold when
        something unexpected happens to them (`Settlement.give_back`); an exception that still
        gets here is one the stage could not pin on its work — its own bookkeeping (the board,
        lease renewal, the hand-over to storage) is in doubt. Logging and carrying on would leave
        work that nobody answers and leases renewed for ever, so the worker stops: the loop
        commits what finished and exits 1, and the restart consumes the rest again."""
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


class Answers:
    """The stages' only way to answer jobs; answered jobs wait here for the loop."""

    def __init__(self, results: ResultFactory, metrics: Metrics, on_answer: Callable[[], None]) -> None:
        self._results = results
        self._metrics = metrics
        self._on_answer = on_answer  # answering is progress (StageRunner.advanced)
        self._completed: queue.SimpleQueue[Job] = queue.SimpleQueue()

    def answer(self, answers: Iterable[tuple[Job, Outcome]]) -> None:
        """Answer jobs and hand them to the loop. A job that already has an answer keeps it
        (Job.answer refuses the second) and is not handed over again; the refusal is counted
        (tts_answers_refused_total)."""
        answered = False
        for job, outcome in answers:
            answered = True
            if job.answer(outcome):
                self._completed.put(job)
            else:
                self._metrics.answers_refused.inc()
        if answered:
            self._on_answer()

    def fail(self, jobs: Sequence[Job], code: ErrorCode, message: str, *, retryable: bool) -> None:
        self.answer((job, self._results.failure(job, code, message, retryable=retryable)) for job in jobs)

    def succeed(self, jobs: Sequence[Job], audio: CachedAudio, *, synthesis_ms: int | None = None) -> None:
        """Answer jobs that share one audio. With `synthesis_ms` the first was synthesised for
        it and the rest coalesced onto that synthesis (they count as cache hits); without, all of
        them were served from the cache."""
        self.answer(
            (
                job,
                self._results.success(
                    job,
                    audio,
                    cache_hit=synthesis_ms is None or i > 0,
                    synthesis_ms=synthesis_ms if synthesis_ms is not None and i == 0 else 0,
                ),
            )
            for i, job in enumerate(jobs)
        )

    def take(self) -> list[Job]:
        """Every job answered since the last call, for the loop to commit."""
        out: list[Job] = []
        while True:
            try:
                out.append(self._completed.get_nowait())
            except queue.Empty:
                return out


class Leases:
    """This incarnation's side of the dedup store: claims, renewals, completions and releases
    under one owner id."""

    def __init__(self, dedup: DedupStore, instance_id: str, lease_ttl_ms: int) -> None:
        self._dedup = dedup
        self._ttl_ms = lease_ttl_ms
        # "<instance>|<incarnation>": a restarted instance is a new owner, and takes over the leases
        # its dead predecessor left at once (see the claim script) instead of waiting them out.
        self.owner = f"{instance_id}|{time.time_ns()}"

    def claim(self, keys: Sequence[str]) -> dict[str, Claim]:
        return self._dedup.claim(keys, self.owner, self._ttl_ms)

    def renew(self, keys: Sequence[str]) -> set[str]:
        """The keys whose leases are still ours."""
        return self._dedup.renew(keys, self.owner, self._ttl_ms)

    def complete(self, entries: Sequence[tuple[str, CachedAudio]], cache_ttl_s: int) -> None:
        """Cache the results and give up their leases, in one round trip."""
        self._dedup.complete_many(entries, self.owner, cache_ttl_s)

    def count_lookups(self, hits: int, misses: int) -> None:
        self._dedup.count_lookups(hits, misses)

    def release(self, flights: Sequence[Flight]) -> None:
        keys = [f.key for f in flights if f.leased]
        if not keys:
            return
        try:
            self._dedup.release(keys, self.owner)
        except CacheUnavailable:
            log.warning("could not release %d leases (redis down); they expire on their own", len(keys))


class Settlement:
    """What becomes of flights whose task failed: retried with the engine's back-off, or every
    job answered with a failed result and the lease released."""

    def __init__(
        self,
        board: FlightBoard,
        answers: Answers,
        leases: Leases,
        metrics: Metrics,
        *,
        max_retries: int,
        backoff: RetryPolicy,
    ) -> None:
        self._board = board
        self._answers = answers
        self._leases = leases
        self._metrics = metrics
        self._max_retries = max_retries
        self._backoff = backoff

    def give_back(self, flights: Sequence[Flight], state: FlightState, failure: TaskFailure) -> None:
        """A stage met an unexpected error with `flights` in hand: those still on the board in
        `state` (not yet handed on, answered or requeued) are retried or failed per `failure`."""
        for flight in self._board.holding(flights, state):
            self.retry_or_fail(flight, failure)

    def retry_or_fail(self, flight: Flight, failure: TaskFailure) -> None:
        """A transient failure is retried with back-off up to the limit; anything else answers
        every job of the flight with a failed result."""
        if failure.kind is FailureKind.TRANSIENT and flight.retries < self._max_retries:
            flight.retries += 1
            self._metrics.engine_retries.inc()
            self._board.requeue(flight, delay_s=self._backoff.delay_s(flight.retries))
            return
        try:
            code = ErrorCode(failure.code)
        except ValueError:
            code = ErrorCode.ENGINE_ERROR
        retryable = failure.kind is FailureKind.TRANSIENT
        self._answers.fail(self._board.finish(flight), code, failure.message, retryable=retryable)
        self._leases.release([flight])


def unexpected(exc: Exception, stage: str) -> str:
    """What a result or a fatal error says about an error nobody anticipated: its type only,
    since its text may quote the request."""
    return f"unexpected {type(exc).__name__} in the {stage} stage"
