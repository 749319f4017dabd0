"""The engine stage: batches from the flight board into the engine, results to the store stage.

Before a batch enters the engine its deadlines are checked again (time spent queued counts) and
its messages are screened against the crash ledger: a message that was in the engine when a
worker died runs alone, and one past the limit goes to the DLQ instead of taking the worker down
again. Transient failures are retried, out-of-memory splits the batch, invalid inputs fail.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from consumer.core.flights import Flight, FlightBoard, FlightState
from consumer.core.messages import DeadLetter, Job, Outcome
from consumer.core.stage import Answers, Leases, PipelineConfig, Settlement, StageRunner, unexpected
from consumer.engine import (
    AudioBuffer,
    Engine,
    EngineBatchFailed,
    EngineError,
    EngineOutOfMemory,
    FailureKind,
    TaskFailure,
    TaskOutcome,
)
from consumer.errors import CacheUnavailable, FatalError
from consumer.metrics import Metrics
from consumer.ports import CrashLedger
from schemas.dlq import DlqReason
from schemas.model import ErrorCode, SynthesisRequest

log = logging.getLogger(__name__)

Produced = list[tuple[Flight, AudioBuffer]]


def message_id(job: Job) -> str:
    return f"{job.tp.topic}:{job.tp.partition}:{job.offset}"


class EngineStage:
    def __init__(
        self,
        config: PipelineConfig,
        *,
        board: FlightBoard,
        leases: Leases,
        answers: Answers,
        settlement: Settlement,
        metrics: Metrics,
        runner: StageRunner,
        engine: Engine,
        crashes: CrashLedger,
        deadline_passed: Callable[[SynthesisRequest], bool],
        produced: Callable[[Produced, int], None],
    ) -> None:
        self._config = config
        self._board = board
        self._leases = leases
        self._answers = answers
        self._settlement = settlement
        self._metrics = metrics
        self._runner = runner
        self._engine = engine
        self._crashes = crashes
        self._deadline_passed = deadline_passed
        self._produced = produced
        self.busy_s = 0.0

    def step(self) -> None:
        config = self._config
        batch = self._board.next_batch(config.batch_limits, config.batch_max_wait_s, timeout_s=0.2)
        if batch:
            self._run(batch)

    def _run(self, batch: list[Flight]) -> None:
        try:
            self._synthesise(batch)
        except FatalError:
            raise
        except Exception as exc:
            # An engine that raised something other than EngineError, or a bug around the call:
            # treated as a failed batch, like EngineError — retried with back-off up to
            # TTS_ENGINE_MAX_RETRIES, then failed (ENGINE_ERROR, retryable) — since it may well
            # pass (a driver hiccup) and the bound means it can never hold the flights for ever.
            # An engine that knows its accelerator is gone raises a FatalError instead.
            log.exception("engine stage failed on a batch of %d", len(batch))
            failure = TaskFailure(FailureKind.TRANSIENT, unexpected(exc, "engine"))
            self._settlement.give_back(batch, FlightState.RUNNING, failure)

    def _synthesise(self, batch: list[Flight]) -> None:
        batch = self._screen_crash_loops(self._drop_expired(batch))
        if not batch:
            return
        started = time.perf_counter()
        self._metrics.engine_tasks.set(len(batch))
        try:
            outcomes = self._engine.synthesize([f.task for f in batch])
            if len(outcomes) != len(batch):
                # An engine bug, not a bad input: a failed batch like any other (retried, then
                # failed), raised here so that the handler below answers every flight of it.
                raise EngineError(f"engine returned {len(outcomes)} outcomes for {len(batch)} tasks")
        except (EngineOutOfMemory, EngineBatchFailed) as exc:
            self._split(batch, exc)
            return
        except EngineError as exc:
            log.warning("engine batch of %d failed: %s", len(batch), exc)
            for flight in batch:
                self._settlement.retry_or_fail(flight, TaskFailure(FailureKind.TRANSIENT, str(exc)))
            return
        finally:
            self._metrics.engine_tasks.set(0)
            elapsed = time.perf_counter() - started
            self.busy_s += elapsed
            self._metrics.engine_busy_seconds.inc(elapsed)
            self._runner.advanced()  # the call returned: whatever it said, the engine is not hung
            self._end_crash_watch()
        self._record(batch, outcomes, elapsed)
        produced: Produced = []
        for flight, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, AudioBuffer):
                produced.append((flight, outcome))
            else:
                self._settlement.retry_or_fail(flight, outcome)
        if produced:
            self._hand_over(produced, int(elapsed * 1000 / len(batch)))

    def _hand_over(self, produced: Produced, synthesis_ms: int) -> None:
        for flight, _ in produced:
            flight.state = FlightState.STORING
        try:
            self._produced(produced, synthesis_ms)
        except Exception:
            for flight, _ in produced:  # not taken: still ours to retry (see `_run`)
                flight.state = FlightState.RUNNING
            raise

    def _record(self, batch: list[Flight], outcomes: list[TaskOutcome], elapsed: float) -> None:
        audio_s = sum(o.duration_seconds for o in outcomes if isinstance(o, AudioBuffer))
        self._observe(len(batch), elapsed, audio_s)

    def _observe(self, size: int, elapsed: float, audio_s: float) -> None:
        """A batch's metrics: its size, its time in the engine and the audio it made."""
        metrics = self._metrics
        metrics.batch_size.observe(size)
        metrics.engine_seconds.observe(elapsed)
        metrics.audio_seconds.inc(audio_s)
        if audio_s > 0:
            metrics.realtime_factor.observe(elapsed / audio_s)
        log.debug(
            "engine batch",
            extra={"batch_size": size, "engine_s": round(elapsed, 4), "audio_s": round(audio_s, 3)},
        )

    def _drop_expired(self, batch: list[Flight]) -> list[Flight]:
        kept: list[Flight] = []
        for flight in batch:
            expired = [j for j in flight.jobs if j.request is not None and self._deadline_passed(j.request)]
            for job in expired:
                flight.jobs.remove(job)
            late = "the deadline passed while the request was queued"
            self._answers.fail(expired, ErrorCode.EXPIRED, late, retryable=False)
            if flight.jobs:
                kept.append(flight)
            else:
                self._board.finish(flight)
                self._leases.release([flight])
        return kept

    def _screen_crash_loops(self, batch: list[Flight], in_engine: Sequence[str] = ()) -> list[Flight]:
        """`batch` less the messages past the crash limit (dead-lettered) and, in a batch of
        several, the suspects (requeued to run alone). What enters the engine is recorded as in
        flight, along with `in_engine` (the ids of work already inside it)."""
        if not batch:
            return batch
        try:
            crashes = self._crashes.begin(
                self._config.instance_id, [*in_engine, *(message_id(j) for f in batch for j in f.jobs)]
            )
        except CacheUnavailable:
            self._metrics.dependency_errors.labels(dependency="redis").inc()
            return batch  # fail open: no crash protection while Redis is down
        kept: list[Flight] = []
        for flight in batch:
            poisoned = [
                j for j in flight.jobs if crashes.get(message_id(j), 0) >= self._config.poison_max_attempts
            ]
            dead_letters: list[tuple[Job, Outcome]] = []
            for job in poisoned:
                flight.jobs.remove(job)
                count = crashes[message_id(job)]
                reason = f"in the engine during {count} worker crashes"
                dead_letters.append((job, DeadLetter(DlqReason.CRASH_LOOP.value, reason, attempts=count)))
                log.error(
                    "dead-lettering a message that crashed the worker %d times",
                    count,
                    extra=job.log_context(),
                )
            self._answers.answer(dead_letters)
            if not flight.jobs:
                self._board.finish(flight)
                self._leases.release([flight])
                continue
            suspect = any(crashes.get(message_id(j), 0) > 0 for j in flight.jobs)
            if suspect and len(batch) > 1:
                self._board.requeue(flight, quarantine=True)
                continue
            kept.append(flight)
        if len(kept) != len(batch):
            with contextlib.suppress(CacheUnavailable):  # only what enters the engine is in flight
                self._crashes.begin(
                    self._config.instance_id, [*in_engine, *(message_id(j) for f in kept for j in f.jobs)]
                )
        return kept

    def _end_crash_watch(self) -> None:
        try:
            self._crashes.end(self._config.instance_id)
        except CacheUnavailable:
            self._metrics.dependency_errors.labels(dependency="redis").inc()

    def _split(self, batch: list[Flight], exc: EngineError) -> None:
        """Out of memory, or a failure no one task can be blamed for: each task again, alone
        (a task that was alone is retried with back-off, then failed)."""
        if len(batch) == 1:
            self._settlement.retry_or_fail(batch[0], TaskFailure(FailureKind.TRANSIENT, _why(exc)))
            return
        log.warning(
            "engine batch of %d failed (%s); retrying each task alone", len(batch), type(exc).__name__
        )
        for flight in batch:
            self._board.requeue(flight, quarantine=True)


def _why(exc: EngineError) -> str:
    return f"out of memory: {exc}" if isinstance(exc, EngineOutOfMemory) else str(exc)
