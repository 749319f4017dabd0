"""The dispatcher stage: from jobs to flights, with one Redis round trip per batch of jobs.

Resolves each voice (presets need no I/O), computes the authoritative cache key, coalesces
duplicates into flights, and claims new keys: a cached result answers at once, a free lease is
ours (the flight goes to the engine queue), another worker's lease means waiting — re-claiming
every few tens of milliseconds, and taking over when the holder's lease expires unfinished.
It also renews the leases of every flight we hold.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable

from consumer.core.flights import Flight, FlightBoard, FlightState
from consumer.core.messages import Job
from consumer.core.stage import Answers, Leases, PipelineConfig, StageRunner, unexpected
from consumer.engine import SynthesisTask
from consumer.errors import CacheUnavailable, FatalError, RetryableError, VoiceResolutionError
from consumer.metrics import Metrics
from consumer.ports import Acquired, AudioFinisher, CachedAudio, FinishSpec, HeldElsewhere, Hit, VoiceResolver
from consumer.settings import CacheFailurePolicy
from schemas.keys import CacheKeyInputs, cache_key, normalise_text
from schemas.model import ErrorCode

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(
        self,
        config: PipelineConfig,
        *,
        board: FlightBoard,
        leases: Leases,
        answers: Answers,
        metrics: Metrics,
        runner: StageRunner,
        engine_name: str,
        voices: VoiceResolver,
        finisher: AudioFinisher,
    ) -> None:
        self._config = config
        self._board = board
        self._leases = leases
        self._answers = answers
        self._metrics = metrics
        self._runner = runner
        self._engine_name = engine_name
        self._voices = voices
        self._finisher = finisher
        self.inbound: queue.SimpleQueue[list[Job]] = queue.SimpleQueue()
        self._next_renewal = 0.0
        # Consecutive outages, for the back-off: voice reads (S3) and claims (Redis, under `wait`).
        self._resolution_failures = 0
        self._claim_failures = 0

    def step(self) -> None:
        try:
            jobs = self.inbound.get(timeout=self._timeout())
        except queue.Empty:
            jobs = []
        while True:  # take everything queued: one claim round trip for all of it
            try:
                jobs.extend(self.inbound.get_nowait())
            except queue.Empty:
                break
        if jobs:
            self._dispatch(jobs)
        self._check_waiters()
        self._renew_leases()

    def _timeout(self) -> float:
        now = time.monotonic()
        nearest = min(self._next_renewal, self._board.next_waiter_check() or now + 0.1)
        return max(0.001, min(0.1, nearest - now))

    def _dispatch(self, jobs: list[Job]) -> None:
        new_flights: dict[str, Flight] = {}
        retry: list[Job] = []
        for job in jobs:
            try:
                flight = self._flight_for(job)
            except RetryableError as exc:  # object storage down while resolving a voice
                log.warning("voice resolution failed, retrying: %s", exc)
                retry.append(job)
                continue
            except FatalError:
                raise
            except Exception as exc:
                # This request fails alone (INTERNAL), not retried: its voice and key depend on
                # it only, and the outages met on the way arrive as RetryableError above; any
                # other error would come back on every retry while its neighbours go on.
                log.exception("dispatching a request failed", extra=job.log_context())
                self._answers.fail([job], ErrorCode.INTERNAL, unexpected(exc, "dispatcher"), retryable=False)
                continue
            if flight is None:
                continue  # answered already, or joined a flight in progress
            existing = new_flights.get(flight.key)
            if existing is not None:
                existing.jobs.append(job)
                self._metrics.coalesced.inc()
            else:
                new_flights[flight.key] = flight
        if new_flights:
            self._claiming(self._claim, list(new_flights.values()))
        if retry:
            self._resolution_failures += 1
            self._runner.sleep(self._config.retry.s3.delay_s(self._resolution_failures))
            self.inbound.put(retry)
        else:
            self._resolution_failures = 0

    def _flight_for(self, job: Job) -> Flight | None:
        """A new flight for the job; None when it was answered (its voice cannot be used) or
        when it joined a flight already in progress for its key."""
        request = job.request
        assert request is not None
        try:
            resolution = self._voices.resolve(request.voice)
        except VoiceResolutionError as exc:
            self._answers.fail([job], exc.code, exc.message, retryable=False)
            return None
        lufs = (
            request.loudness_lufs if request.loudness_lufs is not None else self._config.default_loudness_lufs
        )
        key = cache_key(
            CacheKeyInputs.for_request(
                request,
                engine=self._engine_name,
                model_version=self._config.model_version,
                voice=resolution.key_voice,
                postprocess=self._finisher.profile(lufs),
            )
        )
        job.cache_key = key
        if self._board.attach(key, job):
            self._metrics.coalesced.inc()
            return None
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
        return Flight(key, task, spec, [job], job.lane, voice_token=resolution.key_voice.token())

    def _claiming(self, claim: Callable[[list[Flight]], None], flights: list[Flight]) -> None:
        """Run `claim` (new keys, or the keys of waiting flights) over `flights`."""
        try:
            claim(flights)
        except FatalError:
            raise
        except Exception:
            # Every Redis error already arrives as CacheUnavailable (handled by the cache policy
            # inside the claims); what is left is a bug on the cache's side — an entry that cannot
            # be read, say — which claiming again would meet again, for ever. So what the claim
            # left undecided is synthesised here without a lease, as under fail_open: answered,
            # a duplicate synthesis elsewhere is harmless (content-addressed audio), and the
            # store stage's cache write replaces the entry.
            log.exception("claiming %d keys failed; synthesising them without the cache", len(flights))
            self._synthesise_here(flights)

    def _synthesise_here(self, flights: list[Flight]) -> None:
        board = self._board
        for flight in board.holding(flights, FlightState.WAITING):
            board.requeue(flight)
        for flight in flights:
            if not board.has(flight) and any(job.outcome is None for job in flight.jobs):
                flight.state = FlightState.QUEUED
                board.add(flight)

    def _claim(self, flights: list[Flight]) -> None:
        started = time.perf_counter()
        try:
            claims = self._leases.claim([f.key for f in flights])
        except CacheUnavailable as exc:
            self._metrics.dependency_errors.labels(dependency="redis").inc()
            self._metrics.lookups_by["error"].inc(len(flights))
            if self._config.cache_failure_policy is CacheFailurePolicy.WAIT:
                log.warning("redis unavailable, waiting to claim %d keys: %s", len(flights), exc)
                self._claim_failures += 1
                self._runner.sleep(self._config.retry.redis.delay_s(self._claim_failures))
                self.inbound.put([j for f in flights for j in f.jobs])
                return
            log.warning("redis unavailable, synthesising %d keys without the cache: %s", len(flights), exc)
            self._metrics.cache_fail_open.inc(len(flights))
            for flight in flights:
                self._board.add(flight)
            return
        finally:
            self._metrics.cache_latency.labels(operation="claim").observe(time.perf_counter() - started)
        self._claim_failures = 0
        hits = sum(1 for claim in claims.values() if isinstance(claim, Hit))
        self._leases.count_lookups(hits, len(flights) - hits)
        for flight in flights:
            claim = claims[flight.key]
            if isinstance(claim, Hit):
                self._metrics.lookups_by["hit"].inc()
                self._complete_from_cache(flight, claim.audio, on_board=False)
                continue
            self._metrics.lookups_by["miss"].inc()
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
        self._answers.succeed(jobs, audio)

    def _check_waiters(self) -> None:
        due = self._board.due_waiters(time.monotonic())
        if due:
            self._claiming(self._reclaim, due)

    def _reclaim(self, due: list[Flight]) -> None:
        try:
            claims = self._leases.claim([f.key for f in due])
        except CacheUnavailable:
            self._metrics.dependency_errors.labels(dependency="redis").inc()
            fail_open = self._config.cache_failure_policy is CacheFailurePolicy.FAIL_OPEN
            for flight in due:
                if fail_open:
                    self._metrics.cache_fail_open.inc()
                    self._board.requeue(flight)
                else:
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
            kept = self._leases.renew(keys)
        except CacheUnavailable:
            self._metrics.dependency_errors.labels(dependency="redis").inc()
            return
        # A flight the store stage finished while this renewal was on its way gave its lease up
        # with its result (the completion deletes it): not a loss. Only keys still held count.
        still_held = set(self._board.held_keys())
        lost = sum(1 for key in keys if key not in kept and key in still_held)
        if lost:
            # Someone took a lease we were too slow to renew; both may synthesise, which is
            # harmless (content-addressed objects), only wasteful.
            log.warning("lost %d leases before finishing", lost)
