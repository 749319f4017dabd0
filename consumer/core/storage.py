"""The store stage: post-process and encode a batch, then per flight upload the audio (content-
addressed by its sha256), write the cache entry (releasing the lease) and answer the jobs.

Storage and cache outages are retried here with back-off: the work stays in flight, the loop's
in-flight budget fills and it pauses partitions — no request fails because a dependency blinked.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

from consumer.core.flights import Flight
from consumer.core.stage import StageContext, backoff_s
from consumer.core.synthesis import Produced
from consumer.engine import FailureKind, TaskFailure
from consumer.errors import CacheUnavailable, FatalError, PermanentError, RetryableError
from consumer.ports import AudioFinisher, CachedAudio, EncodedAudio, ObjectStore
from consumer.settings import CacheFailurePolicy

log = logging.getLogger(__name__)


class StoreStage:
    def __init__(
        self, ctx: StageContext, *, engine_name: str, finisher: AudioFinisher, store: ObjectStore
    ) -> None:
        self._ctx = ctx
        self._engine_name = engine_name
        self._finisher = finisher
        self._store = store
        self._finish_pool = ThreadPoolExecutor(ctx.config.finish_threads, thread_name_prefix="finish")
        self._store_pool = ThreadPoolExecutor(ctx.config.store_threads, thread_name_prefix="store")

    def submit(self, produced: Produced, synthesis_ms: int) -> None:
        """Called by the engine stage: the engine moves on to its next batch at once."""
        self._finish_pool.submit(self._ctx.guarded, self._finish, produced, synthesis_ms)

    def close(self) -> None:
        self._finish_pool.shutdown(wait=True, cancel_futures=True)
        self._store_pool.shutdown(wait=True, cancel_futures=True)

    def _finish(self, produced: Produced, synthesis_ms: int) -> None:
        try:
            encoded = self._finisher.finish([(audio, flight.spec) for flight, audio in produced])
        except FatalError:
            raise
        except Exception as exc:  # a finisher bug or unencodable audio must answer, not hang
            log.exception("post-processing failed for %d items", len(produced))
            for flight, _ in produced:
                self._ctx.retry_or_fail(
                    flight, TaskFailure(FailureKind.INVALID, f"post-processing failed: {exc}", "INTERNAL")
                )
            return
        for (flight, _), audio in zip(produced, encoded, strict=True):
            self._store_pool.submit(self._ctx.guarded, self._store_flight, flight, audio, synthesis_ms)

    def _store_flight(self, flight: Flight, audio: EncodedAudio, synthesis_ms: int) -> None:
        ctx = self._ctx
        config = ctx.config
        extension = flight.spec.output_format.extension
        key = f"{config.audio_prefix}sha256/{audio.sha256[:2]}/{audio.sha256}.{extension}"
        metadata = {
            "cache-key": flight.key,
            "engine": self._engine_name,
            "model-version": config.model_version,
            "duration-seconds": f"{audio.duration_seconds:.3f}",
            "sample-rate-hz": str(audio.sample_rate_hz),
        }
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                self._store.put(
                    config.audio_bucket, key, audio.data, content_type=audio.content_type, metadata=metadata
                )
                ctx.metrics.storage_latency.labels(operation="put").observe(time.perf_counter() - started)
                break
            except RetryableError as exc:
                attempt += 1
                ctx.metrics.dependency_errors.labels(dependency="s3").inc()
                log.warning("upload failed (attempt %d), retrying: %s", attempt, exc)
                if ctx.sleep(backoff_s(attempt)):
                    return  # stopping: the jobs stay unanswered and are consumed again later
            except PermanentError as exc:
                ctx.retry_or_fail(
                    flight, TaskFailure(FailureKind.INVALID, f"storing the audio failed: {exc}", "INTERNAL")
                )
                return
        cached = CachedAudio(
            uri=f"s3://{config.audio_bucket}/{key}",
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
        self._write_cache(flight, cached)
        jobs = ctx.board.finish(flight)
        for index, job in enumerate(jobs):
            # The first job paid for the synthesis; duplicates that rode along count as hits.
            job.outcome = ctx.results.success(
                job, cached, cache_hit=index > 0, synthesis_ms=synthesis_ms if index == 0 else 0
            )
        ctx.answer(jobs)

    def _write_cache(self, flight: Flight, cached: CachedAudio) -> None:
        ctx = self._ctx
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                ctx.dedup.complete(flight.key, cached, ctx.owner, ctx.config.cache_ttl_s)
                ctx.metrics.cache_latency.labels(operation="complete").observe(time.perf_counter() - started)
                return
            except CacheUnavailable as exc:
                attempt += 1
                ctx.metrics.dependency_errors.labels(dependency="redis").inc()
                if ctx.config.cache_failure_policy is CacheFailurePolicy.FAIL_OPEN:
                    log.warning("redis unavailable; answering without caching the result: %s", exc)
                    return
                if ctx.sleep(backoff_s(attempt)):
                    return
