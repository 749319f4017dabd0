"""The processing pipeline behind the poll loop: dispatch → engine → finish and store.

Threads (the poll loop never waits on any of them):

* **dispatcher** (consumer/core/dispatch.py) — voices, cache keys, coalescing, one Redis round
  trip of claims per batch of jobs, waiting on other workers' leases, lease renewal;
* **engine** (consumer/core/synthesis.py) — batches from the flight board into the engine; while
  it synthesises batch N, batch N-1 is being finished and stored. An engine that batches between
  its own model steps is fed whenever it has room instead, and each task leaves it as soon as it
  is done (consumer/core/continuous.py);
* **finish and store pools** (consumer/core/storage.py) — post-processing and encoding, uploads,
  cache writes, answers.

Finished jobs come back to the loop through `completed()`; nothing here touches Kafka.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from consumer.core.continuous import ContinuousEngineStage
from consumer.core.dispatch import Dispatcher
from consumer.core.flights import FlightBoard
from consumer.core.messages import Job, TopicPartition
from consumer.core.results import ResultFactory
from consumer.core.stage import Answers, Leases, PipelineConfig, Settlement, StageRunner
from consumer.core.storage import StoreStage
from consumer.core.synthesis import EngineStage
from consumer.engine import ContinuousEngine, Engine
from consumer.errors import FatalError
from consumer.metrics import Metrics
from consumer.ports import AudioFinisher, CrashLedger, DedupStore, ObjectStore, VoiceResolver
from schemas.model import SynthesisRequest
from schemas.topics import Lane

__all__ = ["Pipeline", "PipelineConfig", "PipelineProgress"]


@dataclass(frozen=True, slots=True)
class PipelineProgress:
    """What /livez watches in the pipeline (consumer/health.py)."""

    # Flights that are this worker's to move on: queued for the engine, in it, or being stored.
    # Flights waiting for another worker's result do not count: that worker's /livez covers its
    # own hang, and counting them would restart its waiters along with it.
    busy: bool
    # Seconds since a stage last moved work on (an answer, or an engine, storage or cache call
    # that returned).
    idle_s: float


class Pipeline:
    def __init__(
        self,
        *,
        engine: Engine,
        finisher: AudioFinisher,
        store: ObjectStore,
        dedup: DedupStore,
        crashes: CrashLedger,
        voices: VoiceResolver,
        results: ResultFactory,
        metrics: Metrics,
        config: PipelineConfig,
        deadline_passed: Callable[[SynthesisRequest], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._board = board = FlightBoard()
        self._runner = runner = StageRunner(board, clock)
        self._answers = answers = Answers(results, metrics, on_answer=runner.advanced)
        self._leases = leases = Leases(dedup, config.instance_id, config.lease_ttl_ms)
        settlement = Settlement(
            board,
            answers,
            leases,
            metrics,
            max_retries=config.engine_max_retries,
            backoff=config.retry.engine,
        )
        self._dispatcher = Dispatcher(
            config,
            board=board,
            leases=leases,
            answers=answers,
            metrics=metrics,
            runner=runner,
            engine_name=engine.name,
            voices=voices,
            finisher=finisher,
        )
        self._store = StoreStage(
            config,
            board=board,
            leases=leases,
            answers=answers,
            settlement=settlement,
            metrics=metrics,
            runner=runner,
            engine_name=engine.name,
            finisher=finisher,
            store=store,
        )
        # An engine that batches between its own steps is fed whenever it has room; any other
        # gets one batch at a time. (The isinstance check is what lets the continuous stage,
        # which needs a ContinuousEngine, be called through the plain stage's signature.)
        continuous = isinstance(engine, ContinuousEngine)
        stage: type[EngineStage] = ContinuousEngineStage if continuous else EngineStage
        self._engine = stage(
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
            produced=self._store.submit,
        )
        self._threads: list[threading.Thread] = []

    @property
    def fatal(self) -> FatalError | None:
        return self._runner.fatal

    @property
    def engine_busy_s(self) -> float:
        return self._engine.busy_s

    def start(self) -> None:
        for name, step in (("dispatcher", self._dispatcher.step), ("engine", self._engine.step)):
            thread = threading.Thread(target=self._runner.forever, args=(name, step), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._runner.stop()
        for thread in self._threads:
            thread.join(timeout_s)
        self._store.close()

    # ------------------------------------------------------------------ the loop's side

    def submit(self, jobs: list[Job]) -> None:
        if jobs:
            self._dispatcher.inbound.put(jobs)

    def completed(self) -> list[Job]:
        return self._answers.take()

    def progress(self) -> PipelineProgress:
        runner = self._runner
        return PipelineProgress(busy=self._board.working(), idle_s=runner.clock() - runner.last_progress)

    def pending_jobs(self, lane: Lane) -> int:
        return self._board.pending_jobs(lane)

    def drop_partitions(self, tps: Sequence[TopicPartition], *, include_started: bool = False) -> None:
        """Revoked partitions: their work not yet in the engine is dropped and its leases released
        at once, so another worker can take over without waiting for the lease to expire. With
        `include_started` (after the drain window) running work stops answering them too."""
        self._leases.release(self._board.drop_partitions(tps, include_started=include_started))

    def abandon_queued(self) -> None:
        """Shutdown: give up everything not yet in the engine (leases released)."""
        self._leases.release(self._board.drain_all())
