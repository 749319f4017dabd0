"""The engine stage for an engine that batches between its own model steps (ContinuousEngine:
the batched CosyVoice engine).

The batch-at-a-time stage (synthesis.py) hands the engine one batch and waits for all of it:
a request that arrives a moment later waits for the whole batch, and a short request waits for
the longest one in its batch. Here the stage hands the engine whatever the board has whenever
the engine has room (`room()`, in the same units as the board's batch limits: sequences and
characters), and takes each task back as soon as that task is done. Everything else is the
batch stage's: expired requests are answered before they reach the engine, the crash ledger
records what is inside it (now the union of every task in flight), out-of-memory and failures
no task can be blamed for send each task back to run alone, and a suspect from a crash runs
with nothing beside it (the engine is left to empty first).
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from consumer.core.flights import Flight, FlightBoard, FlightState
from consumer.core.stage import Answers, Leases, PipelineConfig, Settlement, StageRunner, unexpected
from consumer.core.synthesis import EngineStage, Produced, message_id
from consumer.engine import (
    AudioBuffer,
    ContinuousEngine,
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
from schemas.model import SynthesisRequest

log = logging.getLogger(__name__)

_POLL_S = 0.01  # how long the board is asked to wait while tasks are inside the engine
_IDLE_S = 0.2


@dataclass(eq=False)
class _Group:
    """Tasks handed over together: a "batch" for the metrics."""

    size: int
    started: float
    left: int
    audio_s: float = 0.0


@dataclass(eq=False)
class _Running:
    flight: Flight
    group: _Group
    started: float = field(default_factory=time.perf_counter)


class ContinuousEngineStage(EngineStage):
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
        engine: ContinuousEngine,
        crashes: CrashLedger,
        deadline_passed: Callable[[SynthesisRequest], bool],
        produced: Callable[[Produced, int], None],
    ) -> None:
        super().__init__(
            config,
            board=board,
            leases=leases,
            answers=answers,
            settlement=settlement,
            metrics=metrics,
            runner=runner,
            engine=engine,
            crashes=crashes,
            deadline_passed=deadline_passed,
            produced=produced,
        )
        self._continuous = engine
        self._running: dict[Future[TaskOutcome], _Running] = {}
        self._done: queue.SimpleQueue[Future[TaskOutcome]] = queue.SimpleQueue()
        self._solo: Flight | None = None  # a suspect waiting for the engine to empty
        self._busy_since: float | None = None

    def step(self) -> None:
        self._collect()
        if self._solo is not None or any(r.flight.quarantine for r in self._running.values()):
            self._run_alone()
            return
        room = self._continuous.room()
        if room.max_items <= 0:
            self._await_one(_IDLE_S)
            return
        config = self._config
        batch = self._board.next_batch(
            room, config.batch_max_wait_s, timeout_s=_POLL_S if self._running else _IDLE_S
        )
        if len(batch) == 1 and batch[0].quarantine and self._running:
            self._solo = batch[0]  # it runs once what is inside has finished
            return
        if batch:
            self._start(batch)

    # ------------------------------------------------------------------ handing over --

    def _run_alone(self) -> None:
        """A suspect runs with nothing beside it: wait for the engine to empty, start it, and
        take nothing else until it is done."""
        if self._solo is not None and not self._running:
            solo, self._solo = self._solo, None
            self._start([solo])
            return
        self._await_one(_IDLE_S)

    def _start(self, batch: list[Flight]) -> None:
        in_engine = [message_id(j) for r in self._running.values() for j in r.flight.jobs]
        try:
            batch = self._screen_crash_loops(self._drop_expired(batch), in_engine)
            if not batch:
                return
            futures = self._continuous.submit([f.task for f in batch])
            if len(futures) != len(batch):
                raise EngineError(f"engine returned {len(futures)} futures for {len(batch)} tasks")
        except FatalError:
            raise
        except Exception as exc:  # as the batch stage: retried with back-off, then failed
            log.exception("engine stage failed to start a batch of %d", len(batch))
            self._settlement.give_back(
                batch, FlightState.RUNNING, TaskFailure(FailureKind.TRANSIENT, unexpected(exc, "engine"))
            )
            return
        if not self._running:
            self._busy_since = time.perf_counter()
        group = _Group(size=len(batch), started=time.perf_counter(), left=len(batch))
        for flight, future in zip(batch, futures, strict=True):
            self._running[future] = _Running(flight, group)
            future.add_done_callback(self._done.put)
        self._metrics.engine_tasks.set(len(self._running))

    # ------------------------------------------------------------------ taking back --

    def _await_one(self, timeout_s: float) -> None:
        try:
            self._done.put(self._done.get(timeout=timeout_s))  # back in line for _collect
        except queue.Empty:
            return
        self._collect()

    def _collect(self) -> None:
        finished: list[tuple[Future[TaskOutcome], _Running]] = []
        while True:
            try:
                future = self._done.get_nowait()
            except queue.Empty:
                break
            running = self._running.pop(future, None)
            if running is not None:
                finished.append((future, running))
        if not finished:
            return
        now = time.perf_counter()
        self._runner.advanced()  # the engine answered: whatever it said, it is not hung
        produced: Produced = []
        spent_ms: list[float] = []
        fatal: FatalError | None = None
        for future, running in finished:
            try:
                outcome = self._outcome(future, running)
            except FatalError as exc:
                fatal = fatal or exc
                continue
            running.group.left -= 1
            if isinstance(outcome, AudioBuffer):
                running.group.audio_s += outcome.duration_seconds
                produced.append((running.flight, outcome))
                spent_ms.append((now - running.started) * 1000)
            elif outcome is not None:
                self._settlement.retry_or_fail(running.flight, outcome)
            if running.group.left == 0:
                self._observe(running.group.size, now - running.group.started, running.group.audio_s)
        self._metrics.engine_tasks.set(len(self._running))
        self._account_busy(now)
        self._update_crash_watch()
        if produced:
            self._hand_over(produced, int(sum(spent_ms) / len(spent_ms)))
        if fatal is not None:
            raise fatal

    def _outcome(self, future: Future[TaskOutcome], running: _Running) -> TaskOutcome | None:
        """The task's outcome, or None when it was sent back to the board. Raises FatalError."""
        flight = running.flight
        try:
            return future.result()
        except FatalError:
            raise
        except (EngineOutOfMemory, EngineBatchFailed) as exc:
            if flight.quarantine:  # it already ran alone
                self._settlement.retry_or_fail(flight, TaskFailure(FailureKind.TRANSIENT, str(exc)))
            else:
                log.warning("engine task failed with its batch (%s); retrying it alone", type(exc).__name__)
                self._board.requeue(flight, quarantine=True)
            return None
        except EngineError as exc:
            return TaskFailure(FailureKind.TRANSIENT, str(exc))
        except Exception as exc:
            log.error("engine task failed unexpectedly", exc_info=exc)
            return TaskFailure(FailureKind.TRANSIENT, unexpected(exc, "engine"))

    def _account_busy(self, now: float) -> None:
        if self._running or self._busy_since is None:
            return
        busy = now - self._busy_since
        self._busy_since = None
        self.busy_s += busy
        self._metrics.engine_busy_seconds.inc(busy)

    def _update_crash_watch(self) -> None:
        """The crash ledger holds what is inside the engine now."""
        try:
            if self._running:
                self._crashes.begin(self._config.instance_id, self._in_engine())
            else:
                self._crashes.end(self._config.instance_id)
        except CacheUnavailable:
            self._metrics.dependency_errors.labels(dependency="redis").inc()

    def _in_engine(self) -> Sequence[str]:
        return [message_id(j) for r in self._running.values() for j in r.flight.jobs]
