"""The store stage: one task per engine batch — post-process and encode it, upload every object
at once (content-addressed by the audio's sha256), write every cache entry in one Redis round
trip (releasing the leases), and answer the jobs.

Storage and cache outages are retried here with back-off: the work stays in flight, the loop's
in-flight budget fills and it pauses partitions — no request fails because a dependency blinked.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from consumer.core.flights import Flight, FlightBoard, FlightState
from consumer.core.stage import Answers, Leases, PipelineConfig, Settlement, StageRunner, unexpected
from consumer.core.synthesis import Produced
from consumer.engine import FailureKind, TaskFailure
from consumer.errors import CacheUnavailable, FatalError, PermanentError, RetryableError
from consumer.metrics import Metrics
from consumer.ports import AudioFinisher, CachedAudio, EncodedAudio, ObjectStore, PutObject
from consumer.settings import CacheFailurePolicy

log = logging.getLogger(__name__)


class StoreStage:
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
        engine_name: str,
        finisher: AudioFinisher,
        store: ObjectStore,
    ) -> None:
        self._config = config
        self._board = board
        self._leases = leases
        self._answers = answers
        self._settlement = settlement
        self._metrics = metrics
        self._runner = runner
        self._engine_name = engine_name
        self._finisher = finisher
        self._store = store
        # Two batches in parallel: one being encoded while another waits on storage.
        self._pool = ThreadPoolExecutor(self._config.finish_threads, thread_name_prefix="store")
        # Back-pressure on the engine: a batch waiting here holds its raw audio. When storage is
        # slower than the engine, at most this many batches wait (being stored or queued), not
        # every batch the in-flight budget lets in: the soak's null engine, faster than S3, held
        # 1.3 GB of audio without it. A GPU slower than storage never waits on this.
        self._slots = threading.Semaphore(2 * self._config.finish_threads)

    def submit(self, produced: Produced, synthesis_ms: int) -> None:
        """Called by the engine stage: the engine moves on to its next batch at once, unless
        storage is already that far behind (then it waits for a slot)."""
        while not self._slots.acquire(timeout=0.1):
            if self._runner.stopping.is_set():
                return  # shutting down: like a queued batch the pool cancels, it stays uncommitted
        self._pool.submit(self._store_then_free_slot, produced, synthesis_ms)

    def _store_then_free_slot(self, produced: Produced, synthesis_ms: int) -> None:
        try:
            self._runner.contain("store", self._store_or_give_back, produced, synthesis_ms)
        finally:
            self._slots.release()

    def _store_or_give_back(self, produced: Produced, synthesis_ms: int) -> None:
        try:
            self._store_batch(produced, synthesis_ms)
        except FatalError:
            raise
        except Exception as exc:
            # Failed (INTERNAL), not retried: the engine's work is done, and the outages this
            # stage knows (S3, Redis) are retried in place above; what is left is a bug in
            # storing, which a retry would meet again after paying for the synthesis again —
            # the choice already made for a post-processing failure.
            log.exception("storing a batch of %d failed", len(produced))
            failure = TaskFailure(FailureKind.INVALID, unexpected(exc, "store"), "INTERNAL")
            self._settlement.give_back([flight for flight, _ in produced], FlightState.STORING, failure)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _store_batch(self, produced: Produced, synthesis_ms: int) -> None:
        encoded = self._encode(produced)
        if encoded is None:
            return
        flights = [flight for flight, _ in produced]
        stored = self._upload(flights, encoded)
        if not stored:
            return
        entries = [(flight, self._cached(flight, audio)) for flight, audio in stored]
        self._write_cache(entries)
        for flight, cached in entries:
            jobs = self._board.finish(flight)
            # The first job paid for the synthesis; duplicates that rode along count as hits.
            self._answers.succeed(jobs, cached, synthesis_ms=synthesis_ms)

    def _encode(self, produced: Produced) -> list[EncodedAudio] | None:
        try:
            return self._finisher.finish([(audio, flight.spec) for flight, audio in produced])
        except FatalError:
            raise
        except Exception as exc:  # a finisher bug or unencodable audio must answer, not hang
            log.exception("post-processing failed for %d items", len(produced))
            for flight, _ in produced:
                self._settlement.retry_or_fail(
                    flight, TaskFailure(FailureKind.INVALID, f"post-processing failed: {exc}", "INTERNAL")
                )
            return None

    def _object(self, flight: Flight, audio: EncodedAudio) -> PutObject:
        config = self._config
        extension = flight.spec.output_format.extension
        return PutObject(
            key=f"{config.audio_prefix}sha256/{audio.sha256[:2]}/{audio.sha256}.{extension}",
            data=audio.data,
            content_type=audio.content_type,
            metadata={
                "cache-key": flight.key,
                "engine": self._engine_name,
                "model-version": config.model_version,
                "duration-seconds": f"{audio.duration_seconds:.3f}",
                "sample-rate-hz": str(audio.sample_rate_hz),
            },
        )

    def _upload(
        self, flights: list[Flight], encoded: list[EncodedAudio]
    ) -> list[tuple[Flight, EncodedAudio]]:
        """Upload everything; retry what failed for an outage until it succeeds (or we stop)."""
        pending = list(zip(flights, encoded, strict=True))
        stored: list[tuple[Flight, EncodedAudio]] = []
        attempt = 0
        while pending:
            started = time.perf_counter()
            errors = self._store.put_many(self._config.audio_bucket, [self._object(f, a) for f, a in pending])
            self._metrics.storage_latency.labels(operation="put").observe(time.perf_counter() - started)
            self._runner.advanced()  # an S3 outage retried here is not a hang
            retry: list[tuple[Flight, EncodedAudio]] = []
            for item, error in zip(pending, errors, strict=True):
                if error is None:
                    stored.append(item)
                elif isinstance(error, FatalError):
                    raise error
                elif isinstance(error, PermanentError):
                    self._settlement.retry_or_fail(
                        item[0],
                        TaskFailure(FailureKind.INVALID, f"storing the audio failed: {error}", "INTERNAL"),
                    )
                else:
                    assert isinstance(error, RetryableError)
                    retry.append(item)
            if retry:
                attempt += 1
                self._metrics.dependency_errors.labels(dependency="s3").inc()
                log.warning("%d uploads failed (attempt %d), retrying: %s", len(retry), attempt, errors[0])
                if self._runner.sleep(self._config.retry.s3.delay_s(attempt)):
                    return []  # stopping: those jobs stay unanswered and are consumed again later
            pending = retry
        return stored

    def _cached(self, flight: Flight, audio: EncodedAudio) -> CachedAudio:
        config = self._config
        return CachedAudio(
            uri=f"s3://{config.audio_bucket}/{self._object(flight, audio).key}",
            content_type=audio.content_type,
            size_bytes=len(audio.data),
            duration_seconds=audio.duration_seconds,
            sample_rate_hz=audio.sample_rate_hz,
            sha256=audio.sha256,
            created_at_ms=int(time.time() * 1000),
            engine=self._engine_name,
            model_version=config.model_version,
            voice=flight.voice_token,
        )

    def _write_cache(self, entries: list[tuple[Flight, CachedAudio]]) -> None:
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                self._leases.complete([(f.key, c) for f, c in entries], self._config.cache_ttl_s)
                self._metrics.cache_latency.labels(operation="complete").observe(
                    time.perf_counter() - started
                )
                for flight, _ in entries:
                    flight.leased = False  # the completion deleted the lease: nothing left to renew
                return
            except CacheUnavailable as exc:
                self._runner.advanced()  # a Redis outage retried here is not a hang
                attempt += 1
                self._metrics.dependency_errors.labels(dependency="redis").inc()
                if self._config.cache_failure_policy is CacheFailurePolicy.FAIL_OPEN:
                    log.warning("redis unavailable; answering without caching the results: %s", exc)
                    return
                if self._runner.sleep(self._config.retry.redis.delay_s(attempt)):
                    return
