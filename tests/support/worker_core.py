"""In-memory pieces for unit tests of the worker core (consumer/core): requests and jobs, the
pipeline's configuration, and Redis as the dedup store and crash ledger."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from consumer.core.messages import Answer, InboundMessage, Job, TopicPartition
from consumer.core.results import ResultFactory
from consumer.core.retry import RetryPolicies
from consumer.core.stage import PipelineConfig
from consumer.engine import BatchLimits
from consumer.ports import Acquired, CachedAudio, Claim, HeldElsewhere, Hit
from consumer.settings import CacheFailurePolicy, WorkerSettings
from schemas.model import ErrorCode, PresetVoice, SynthesisRequest, now_ms
from schemas.topics import Lane

TP = TopicPartition("req", 0)


def job(offset: int, tp: TopicPartition = TP, lane: Lane = Lane.INTERACTIVE) -> Job:
    return Job(InboundMessage(tp.topic, tp.partition, offset, b"k", b"v"), lane)


def results() -> ResultFactory:
    return ResultFactory(engine="null", model_version="m", worker_id="w", results_topic="res")


def request(**fields: Any) -> SynthesisRequest:
    base: dict[str, Any] = {
        "request_id": "r1",
        "text": "hello",
        "voice": PresetVoice("en-us"),
        "created_at_ms": now_ms(),
    }
    return SynthesisRequest(**{**base, **fields})


def request_job(offset: int, **fields: Any) -> Job:
    """A decoded job with a text of its own (so a cache key of its own)."""
    made = job(offset)
    made.request = request(**{"request_id": f"r{offset}", "text": f"hello {offset}", **fields})
    return made


def retry_policies() -> RetryPolicies:
    """The worker's policies, with engine retries at once (the fakes fail on purpose)."""
    return RetryPolicies.from_settings(WorkerSettings(engine_retry_backoff_ms=0))


def pipeline_config(**overrides: Any) -> PipelineConfig:
    config = PipelineConfig(
        instance_id="w",
        model_version="m",
        audio_bucket="b",
        audio_prefix="p",
        default_loudness_lufs=-16.0,
        lease_ttl_ms=30_000,
        cache_ttl_s=60,
        cache_failure_policy=CacheFailurePolicy.WAIT,
        batch_limits=BatchLimits(8, 1000),
        batch_max_wait_s=0.0,
        engine_max_retries=1,
        retry=retry_policies(),
        poison_max_attempts=2,
    )
    return dataclasses.replace(config, **overrides)


class MemoryRedis:
    """DedupStore and CrashLedger in memory: every key is free unless `held_elsewhere` says
    another worker has it; `claim_error` and `renew_error` make those calls raise. The crash
    ledger answers `crashes` and keeps what it was told is inside the engine (`in_engine`)."""

    def __init__(self) -> None:
        self.cached: dict[str, CachedAudio] = {}
        self.held_elsewhere = False
        self.released: list[str] = []
        self.claim_error: Exception | None = None
        self.renew_error: Exception | None = None
        self.crashes: dict[str, int] = {}
        self.in_engine: list[str] = []
        self.records: list[list[str]] = []

    def claim(self, keys: Sequence[str], owner: str, lease_ttl_ms: int) -> dict[str, Claim]:
        if self.claim_error is not None:
            raise self.claim_error
        return {key: self._claim(key) for key in keys}

    def _claim(self, key: str) -> Claim:
        if key in self.cached:
            return Hit(self.cached[key])
        return HeldElsewhere(10_000) if self.held_elsewhere else Acquired()

    def renew(self, keys: Sequence[str], owner: str, lease_ttl_ms: int) -> set[str]:
        if self.renew_error is not None:
            raise self.renew_error
        return set(keys)

    def complete(self, key: str, audio: CachedAudio, owner: str, cache_ttl_s: int) -> None:
        self.cached[key] = audio

    def complete_many(self, entries: Sequence[tuple[str, CachedAudio]], owner: str, cache_ttl_s: int) -> None:
        self.cached.update(entries)

    def release(self, keys: Sequence[str], owner: str) -> None:
        self.released.extend(keys)

    def count_lookups(self, hits: int, misses: int) -> None:
        return None

    def recover(self, instance_id: str) -> int:
        return 0

    def begin(self, instance_id: str, message_ids: Sequence[str]) -> dict[str, int]:
        self.in_engine = list(message_ids)
        self.records.append(self.in_engine)
        return {mid: self.crashes[mid] for mid in message_ids if mid in self.crashes}

    def end(self, instance_id: str) -> None:
        self.in_engine = []


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    """Look at observable state until it holds, briefly pausing between looks."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        pause.wait(0.005)


def failure_of(job: Job) -> tuple[ErrorCode, bool]:
    assert isinstance(job.outcome, Answer) and job.outcome.result.error is not None, "a failed result"
    return job.outcome.result.error.code, job.outcome.result.error.retryable


def succeeded(job: Job) -> bool:
    return isinstance(job.outcome, Answer) and job.outcome.result.error is None
