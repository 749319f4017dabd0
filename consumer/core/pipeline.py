"""The processing pipeline behind the poll loop: dedup → engine → finish and store.

Threads (the poll loop never waits on any of them):

* **dispatcher** — resolves voices, computes cache keys, coalesces duplicates into flights,
  claims keys in Redis in one round trip (hit / our lease / someone else's lease), re-checks
  flights waiting on another worker, and renews our leases.
* **engine** — draws batches from the flight board and runs the engine; while it synthesises
  batch N, batch N-1 is being finished and stored by the pool below.
* **finish pool** — post-processing and encoding (torch releases the GIL); **store pool** —
  uploads, cache writes and building the answers.

Finished jobs come back to the loop through `completed()`; nothing here touches Kafka.
Storage and cache outages are retried with backoff inside the stage that met them: the work
stays in flight, the loop's in-flight budget fills and it pauses partitions — nothing fails.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from consumer.core.flights import Flight, FlightBoard, FlightState
from consumer.core.messages import DeadLetter, Job, Lane, TopicPartition
from consumer.core.results import ResultFactory
from consumer.engine import (
    AudioBuffer,
    BatchLimits,
    Engine,
    EngineError,
    EngineOutOfMemory,
    FailureKind,
    SynthesisTask,
    TaskFailure,
    TaskOutcome,
)
from consumer.errors import CacheUnavailable, FatalError, PermanentError, RetryableError, VoiceResolutionError
from consumer.metrics import Metrics
from consumer.ports import (
    Acquired,
    AudioFinisher,
    CachedAudio,
    CrashLedger,
    DedupStore,
    EncodedAudio,
    FinishSpec,
    HeldElsewhere,
    Hit,
    ObjectStore,
    VoiceResolver,
)
from consumer.settings import CacheFailurePolicy
from schemas.dlq import DlqReason
from schemas.keys import CacheKeyInputs, cache_key, normalise_text
from schemas.model import ErrorCode, SynthesisRequest

log = logging.getLogger(__name__)

Sleeper = Callable[[float], bool]  # sleep up to N seconds; True when the pipeline is stopping


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
    store_threads: int = 8
    finish_threads: int = 2
    wait_poll_s: float = 0.05


def backoff_s(attempt: int, base_s: float = 0.2, cap_s: float = 5.0) -> float:
    return float(min(cap_s, base_s * (2 ** max(0, attempt - 1))))


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
    ) -> None:
        self._engine = engine
        self._finisher = finisher
        self._store = store
        self._dedup = dedup
        self._crashes = crashes
        self._voices = voices
        self._results = results
        self._metrics = metrics
        self._config = config
        self._deadline_passed = deadline_passed
        self._board = FlightBoard()
        self._inbound: queue.SimpleQueue[list[Job]] = queue.SimpleQueue()
        self._completed: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._finish_pool = ThreadPoolExecutor(config.finish_threads, thread_name_prefix="finish")
        self._store_pool = ThreadPoolExecutor(config.store_threads, thread_name_prefix="store")
        self._next_renewal = 0.0
        self._owner = f"{config.instance_id}:{time.time_ns()}"  # a restarted instance is a new owner
        self.engine_busy_s = 0.0
        self.fatal: FatalError | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for name, target in (("dispatcher", self._dispatch_forever), ("engine", self._engine_forever)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        self._board.close()
        for thread in self._threads:
            thread.join(timeout_s)
        self._finish_pool.shutdown(wait=True, cancel_futures=True)
        self._store_pool.shutdown(wait=True, cancel_futures=True)

    def _sleep(self, seconds: float) -> bool:
        return self._stopping.wait(seconds)

    def _die(self, exc: FatalError) -> None:
        """A stage met an error the process cannot survive: the loop raises it and exits."""
        log.critical("pipeline stopping: %s", exc)
        if self.fatal is None:
            self.fatal = exc
        self._stopping.set()
        self._board.close()

    def _guarded(self, fn: Callable[..., None], *args: object) -> None:
        """Run a pool task; a fatal error stops the pipeline instead of vanishing in the pool."""
        try:
            fn(*args)
        except FatalError as exc:
            self._die(exc)
        except Exception:
            log.exception("pipeline task failed")

    # ------------------------------------------------------------------ loop side

    def submit(self, jobs: list[Job]) -> None:
        if jobs:
            self._inbound.put(jobs)

    def completed(self) -> list[Job]:
        out: list[Job] = []
        while True:
            try:
                out.append(self._completed.get_nowait())
            except queue.Empty:
                return out

    def pending_jobs(self, lane: Lane) -> int:
        return self._board.pending_jobs(lane)

    def drop_partitions(self, tps: Sequence[TopicPartition], *, include_started: bool = False) -> None:
        """Revoked partitions: their work not yet in the engine is dropped and its leases released
        at once, so another worker can take over without waiting for the lease to expire. With
        `include_started` (after the drain window) running work stops answering them too."""
        emptied = self._board.drop_partitions(tps, include_started=include_started)
        self._release([f for f in emptied if f.leased])

    def abandon_queued(self) -> None:
        """Shutdown after the drain window: give up everything not yet in the engine."""
        self._release([f for f in self._board.drain_all() if f.leased])

    def _release(self, flights: list[Flight]) -> None:
        keys = [f.key for f in flights]
        if not keys:
            return
        try:
            self._dedup.release(keys, self._owner)
        except CacheUnavailable:
            log.warning("could not release %d leases (redis down); they expire on their own", len(keys))

    def _answer(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self._completed.put(job)

    # ------------------------------------------------------------------ dispatcher

    def _dispatch_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                timeout = self._dispatcher_timeout()
                try:
                    jobs = self._inbound.get(timeout=timeout)
                except queue.Empty:
                    jobs = []
                while True:  # take everything queued: one claim round trip for all of it
                    try:
                        jobs.extend(self._inbound.get_nowait())
                    except queue.Empty:
                        break
                if jobs:
                    self._dispatch(jobs)
                self._check_waiters()
                self._renew_leases()
            except FatalError as exc:
                self._die(exc)
            except Exception:  # a bug must not silently kill the thread: log, pause, carry on
                log.exception("dispatcher iteration failed")
                self._sleep(0.5)

    def _dispatcher_timeout(self) -> float:
        now = time.monotonic()
        nearest = min(self._next_renewal, self._board.next_waiter_check() or now + 0.1)
        return max(0.001, min(0.1, nearest - now))

    def _dispatch(self, jobs: list[Job]) -> None:
        new_flights: dict[str, Flight] = {}
        for job in jobs:
            flight_or_none = self._flight_for(job)
            if flight_or_none is None:
                continue
            key, flight = flight_or_none
            if flight is None:
                continue  # attached to an existing flight (coalesced)
            existing = new_flights.get(key)
            if existing is not None:
                existing.jobs.append(job)
                self._metrics.coalesced.inc()
            else:
                new_flights[key] = flight
        if new_flights:
            self._claim(list(new_flights.values()))

    def _flight_for(self, job: Job) -> tuple[str, Flight | None] | None:
        """The job's cache key and a new flight for it; (key, None) when it joined one in
        progress; None when it was answered (failed voice resolution)."""
        request = job.request
        assert request is not None
        try:
            resolution = self._voices.resolve(request.voice)
        except VoiceResolutionError as exc:
            job.outcome = self._results.failure(job, exc.code, exc.message)
            self._answer([job])
            return None
        except RetryableError as exc:
            # Object storage is down: answer nothing, retry the job shortly.
            log.warning("voice resolution failed, retrying: %s", exc)
            self._sleep(0.5)
            self._inbound.put([job])
            return None
        lufs = (
            request.loudness_lufs if request.loudness_lufs is not None else self._config.default_loudness_lufs
        )
        key = cache_key(
            CacheKeyInputs(
                engine=self._engine.name,
                model_version=self._config.model_version,
                voice=resolution.key_voice,
                text=request.text,
                language=request.language,
                style_instruction=request.style_instruction,
                speed=request.speed,
                output_format=request.output_format.value,
                sample_rate_hz=request.sample_rate_hz,
                postprocess=self._finisher.profile(lufs),
            )
        )
        job.cache_key = key
        if self._board.attach(key, job):
            self._metrics.coalesced.inc()
            return key, None
        task = SynthesisTask(
            key=key,
            text=normalise_text(request.text),
            language=request.language,
            preset=resolution.key_voice.preset,
            prompt=resolution.prompt,
            style_instruction=normalise_text(request.style_instruction)
            if request.style_instruction
            else None,
            speed=request.speed,
        )
        spec = FinishSpec(request.output_format, request.sample_rate_hz, lufs)
        return key, Flight(key, task, spec, [job], job.lane, voice_token=resolution.key_voice.token())

    def _claim(self, flights: list[Flight]) -> None:
        started = time.perf_counter()
        try:
            claims = self._dedup.claim([f.key for f in flights], self._owner, self._config.lease_ttl_ms)
        except CacheUnavailable as exc:
            self._metrics.dependency_errors.labels(dependency="redis").inc()
            self._metrics.cache_lookups.labels(result="error").inc(len(flights))
            if self._config.cache_failure_policy is CacheFailurePolicy.WAIT:
                log.warning("redis unavailable, waiting to claim %d keys: %s", len(flights), exc)
                self._sleep(1.0)
                self._inbound.put([j for f in flights for j in f.jobs])
                return
            log.warning("redis unavailable, synthesising %d keys without the cache: %s", len(flights), exc)
            self._metrics.cache_fail_open.inc(len(flights))
            for flight in flights:
                self._board.add(flight)
            return
        finally:
            self._metrics.cache_latency.labels(operation="claim").observe(time.perf_counter() - started)
        hits = sum(1 for claim in claims.values() if isinstance(claim, Hit))
        self._dedup.count_lookups(hits, len(flights) - hits)
        for flight in flights:
            claim = claims[flight.key]
            if isinstance(claim, Hit):
                self._metrics.cache_lookups.labels(result="hit").inc()
                self._complete_from_cache(flight, claim.audio, on_board=False)
                continue
            self._metrics.cache_lookups.labels(result="miss").inc()
            if isinstance(claim, Acquired):
                flight.leased = True
                self._board.add(flight)
            else:
                assert isinstance(claim, HeldElsewhere)
                self._metrics.singleflight_waits.inc(len(flight.jobs))
                flight.state = FlightState.WAITING
                flight.next_check = time.monotonic() + self._wait_interval(claim)
                self._board.add(flight)

    def _wait_interval(self, claim: HeldElsewhere) -> float:
        return min(self._config.wait_poll_s, max(0.005, claim.expires_in_ms / 1000.0))

    def _complete_from_cache(self, flight: Flight, audio: CachedAudio, *, on_board: bool) -> None:
        jobs = self._board.finish(flight) if on_board else list(flight.jobs)
        for job in jobs:
            job.outcome = self._results.success(job, audio, cache_hit=True, synthesis_ms=0)
        self._answer(jobs)

    def _check_waiters(self) -> None:
        due = self._board.due_waiters(time.monotonic())
        if not due:
            return
        try:
            claims = self._dedup.claim([f.key for f in due], self._owner, self._config.lease_ttl_ms)
        except CacheUnavailable:
            self._metrics.dependency_errors.labels(dependency="redis").inc()
            if self._config.cache_failure_policy is CacheFailurePolicy.FAIL_OPEN:
                for flight in due:
                    self._metrics.cache_fail_open.inc()
                    self._board.requeue(flight)
            else:
                for flight in due:
                    self._board.wait_elsewhere(flight, 1.0)
            return
        for flight in due:
            claim = claims[flight.key]
            if isinstance(claim, Hit):
                self._complete_from_cache(flight, claim.audio, on_board=True)
            elif isinstance(claim, Acquired):
                # The holder's lease expired without a result: it died. Take over.
                self._metrics.singleflight_takeovers.inc()
                flight.leased = True
                self._board.requeue(flight)
            else:
                assert isinstance(claim, HeldElsewhere)
                self._board.wait_elsewhere(flight, self._wait_interval(claim))

    def _renew_leases(self) -> None:
        now = time.monotonic()
        if now < self._next_renewal:
            return
        self._next_renewal = now + self._config.lease_ttl_ms / 3000.0
        keys = self._board.held_keys()
        if not keys:
            return
        try:
            kept = self._dedup.renew(keys, self._owner, self._config.lease_ttl_ms)
        except CacheUnavailable:
            self._metrics.dependency_errors.labels(dependency="redis").inc()
            return
        lost = len(keys) - len(kept)
        if lost:
            # Someone took a lease we were too slow to renew; both may synthesise, which is
            # harmless (content-addressed objects), only wasteful.
            log.warning("lost %d leases before finishing", lost)

    # ------------------------------------------------------------------ engine

    def _engine_forever(self) -> None:
        limits = self._config.batch_limits
        while not self._stopping.is_set():
            try:
                batch = self._board.next_batch(limits, self._config.batch_max_wait_s, timeout_s=0.2)
                if batch:
                    self._run_batch(batch)
            except FatalError as exc:
                self._die(exc)
            except Exception:
                log.exception("engine iteration failed")
                self._sleep(0.5)

    def _run_batch(self, batch: list[Flight]) -> None:
        batch = self._drop_expired(batch)
        batch = self._screen_crash_loops(batch)
        if not batch:
            return
        tasks = [f.task for f in batch]
        started = time.perf_counter()
        try:
            outcomes = self._engine.synthesize(tasks)
        except EngineOutOfMemory as exc:
            self._split_after_oom(batch, exc)
            return
        except EngineError as exc:
            log.warning("engine batch of %d failed: %s", len(batch), exc)
            for flight in batch:
                self._retry_or_fail(flight, TaskFailure(FailureKind.TRANSIENT, str(exc)))
            return
        finally:
            elapsed = time.perf_counter() - started
            self.engine_busy_s += elapsed
            self._metrics.engine_busy_seconds.inc(elapsed)
            self._end_crash_watch()
        if len(outcomes) != len(batch):
            raise EngineError(f"engine returned {len(outcomes)} outcomes for {len(batch)} tasks")
        self._record_batch(batch, outcomes, elapsed)
        produced: list[tuple[Flight, AudioBuffer]] = []
        for flight, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, AudioBuffer):
                produced.append((flight, outcome))
            else:
                self._retry_or_fail(flight, outcome)
        if produced:
            per_item_ms = int(elapsed * 1000 / len(batch))
            for flight, _ in produced:
                flight.state = FlightState.STORING
            self._finish_pool.submit(self._guarded, self._finish_batch, produced, per_item_ms)

    def _record_batch(self, batch: list[Flight], outcomes: list[TaskOutcome], elapsed: float) -> None:
        audio_s = sum(o.duration_seconds for o in outcomes if isinstance(o, AudioBuffer))
        self._metrics.batch_size.observe(len(batch))
        self._metrics.engine_seconds.observe(elapsed)
        self._metrics.audio_seconds.inc(audio_s)
        if audio_s > 0:
            self._metrics.realtime_factor.observe(elapsed / audio_s)
        log.debug(
            "engine batch",
            extra={"batch_size": len(batch), "engine_s": round(elapsed, 4), "audio_s": round(audio_s, 3)},
        )

    def _drop_expired(self, batch: list[Flight]) -> list[Flight]:
        """Deadlines are checked again just before the engine: time spent queued counts."""
        kept: list[Flight] = []
        for flight in batch:
            expired = [j for j in flight.jobs if j.request is not None and self._deadline_passed(j.request)]
            if expired:
                for job in expired:
                    flight.jobs.remove(job)
                    job.outcome = self._results.failure(
                        job, ErrorCode.EXPIRED, "the deadline passed while the request was queued"
                    )
                self._answer(expired)
            if flight.jobs:
                kept.append(flight)
            else:
                self._board.finish(flight)
                self._release([flight] if flight.leased else [])
        return kept

    def _screen_crash_loops(self, batch: list[Flight]) -> list[Flight]:
        """Messages that were in the engine when a worker died run alone; past the limit they
        go to the DLQ instead of taking the worker down again."""
        ids = [_message_id(j) for f in batch for j in f.jobs]
        try:
            crashes = self._crashes.begin(self._config.instance_id, ids)
        except CacheUnavailable:
            self._metrics.dependency_errors.labels(dependency="redis").inc()
            return batch  # fail open: no crash protection while Redis is down
        kept: list[Flight] = []
        for flight in batch:
            poisoned = [
                j for j in flight.jobs if crashes.get(_message_id(j), 0) >= self._config.poison_max_attempts
            ]
            for job in poisoned:
                flight.jobs.remove(job)
                count = crashes[_message_id(job)]
                job.outcome = DeadLetter(
                    DlqReason.CRASH_LOOP.value, f"in the engine during {count} worker crashes", attempts=count
                )
                log.error(
                    "dead-lettering a message that crashed the worker %d times",
                    count,
                    extra=job.log_context(),
                )
            self._answer(poisoned)
            if not flight.jobs:
                self._board.finish(flight)
                self._release([flight] if flight.leased else [])
                continue
            suspect = any(crashes.get(_message_id(j), 0) > 0 for j in flight.jobs)
            if suspect and len(batch) > 1:
                self._board.requeue(flight, quarantine=True)
                continue
            kept.append(flight)
        if len(kept) != len(batch):
            with contextlib.suppress(CacheUnavailable):  # only what enters the engine is in flight
                self._crashes.begin(self._config.instance_id, [_message_id(j) for f in kept for j in f.jobs])
        return kept

    def _end_crash_watch(self) -> None:
        try:
            self._crashes.end(self._config.instance_id)
        except CacheUnavailable:
            self._metrics.dependency_errors.labels(dependency="redis").inc()

    def _split_after_oom(self, batch: list[Flight], exc: EngineOutOfMemory) -> None:
        if len(batch) == 1:
            self._retry_or_fail(batch[0], TaskFailure(FailureKind.TRANSIENT, f"out of memory: {exc}"))
            return
        log.warning("engine out of memory on a batch of %d; retrying in halves", len(batch))
        # Halves run as singletons through quarantine only when down to one; otherwise the board
        # forms smaller batches naturally because we shrink the limit for these flights.
        for flight in batch:
            self._board.requeue(flight, quarantine=True)

    def _retry_or_fail(self, flight: Flight, failure: TaskFailure) -> None:
        if failure.kind is FailureKind.TRANSIENT and flight.retries < self._config.engine_max_retries:
            flight.retries += 1
            self._metrics.engine_retries.inc()
            self._board.requeue(
                flight, delay_s=self._config.engine_retry_backoff_s * (2 ** (flight.retries - 1))
            )
            return
        jobs = self._board.finish(flight)
        try:
            code = ErrorCode(failure.code)
        except ValueError:
            code = ErrorCode.ENGINE_ERROR
        retryable = failure.kind is FailureKind.TRANSIENT
        for job in jobs:
            job.outcome = self._results.failure(job, code, failure.message, retryable=retryable)
        self._answer(jobs)
        self._release([flight] if flight.leased else [])

    # ------------------------------------------------------------------ finish and store

    def _finish_batch(self, produced: list[tuple[Flight, AudioBuffer]], per_item_ms: int) -> None:
        try:
            encoded = self._finisher.finish([(audio, flight.spec) for flight, audio in produced])
        except FatalError:
            raise
        except Exception as exc:  # a finisher bug or unencodable audio must answer, not hang
            log.exception("post-processing failed for %d items", len(produced))
            for flight, _ in produced:
                self._retry_or_fail(
                    flight, TaskFailure(FailureKind.INVALID, f"post-processing failed: {exc}", "INTERNAL")
                )
            return
        for (flight, _), audio in zip(produced, encoded, strict=True):
            self._store_pool.submit(self._guarded, self._store_flight, flight, audio, per_item_ms)

    def _store_flight(self, flight: Flight, audio: EncodedAudio, synthesis_ms: int) -> None:
        extension = flight.spec.output_format.extension
        key = f"{self._config.audio_prefix}sha256/{audio.sha256[:2]}/{audio.sha256}.{extension}"
        uri = f"s3://{self._config.audio_bucket}/{key}"
        metadata = {
            "cache-key": flight.key,
            "engine": self._engine.name,
            "model-version": self._config.model_version,
            "duration-seconds": f"{audio.duration_seconds:.3f}",
            "sample-rate-hz": str(audio.sample_rate_hz),
        }
        attempt = 0
        while True:  # storage outage: keep the work, back off, retry (the loop pauses meanwhile)
            started = time.perf_counter()
            try:
                self._store.put(
                    self._config.audio_bucket,
                    key,
                    audio.data,
                    content_type=audio.content_type,
                    metadata=metadata,
                )
                self._metrics.storage_latency.labels(operation="put").observe(time.perf_counter() - started)
                break
            except RetryableError as exc:
                attempt += 1
                self._metrics.dependency_errors.labels(dependency="s3").inc()
                log.warning("upload failed (attempt %d), retrying: %s", attempt, exc)
                if self._sleep(backoff_s(attempt)):
                    return  # stopping: the jobs stay unanswered and are consumed again later
            except PermanentError as exc:
                self._retry_or_fail(
                    flight, TaskFailure(FailureKind.INVALID, f"storing the audio failed: {exc}", "INTERNAL")
                )
                return
        cached = CachedAudio(
            uri=uri,
            content_type=audio.content_type,
            size_bytes=len(audio.data),
            duration_seconds=audio.duration_seconds,
            sample_rate_hz=audio.sample_rate_hz,
            sha256=audio.sha256,
            created_at_ms=int(time.time() * 1000),
            engine=self._engine.name,
            model_version=self._config.model_version,
            voice=flight.voice_token,
        )
        self._write_cache(flight, cached)
        jobs = self._board.finish(flight)
        for index, job in enumerate(jobs):
            # The first job paid for the synthesis; duplicates that rode along count as hits.
            job.outcome = self._results.success(
                job, cached, cache_hit=index > 0, synthesis_ms=synthesis_ms if index == 0 else 0
            )
        self._answer(jobs)

    def _write_cache(self, flight: Flight, cached: CachedAudio) -> None:
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                self._dedup.complete(flight.key, cached, self._owner, self._config.cache_ttl_s)
                self._metrics.cache_latency.labels(operation="complete").observe(
                    time.perf_counter() - started
                )
                return
            except CacheUnavailable as exc:
                attempt += 1
                self._metrics.dependency_errors.labels(dependency="redis").inc()
                if self._config.cache_failure_policy is CacheFailurePolicy.FAIL_OPEN:
                    log.warning("redis unavailable; answering without caching the result: %s", exc)
                    return
                if self._sleep(backoff_s(attempt)):
                    return


def _message_id(job: Job) -> str:
    return f"{job.tp.topic}:{job.tp.partition}:{job.offset}"
