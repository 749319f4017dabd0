"""How long to wait before the next try: one policy (exponential, capped, jittered) for every
retry of the worker — S3, Redis, Kafka commits, the schema registry and the engine.

Only the delay is computed here. The retries themselves stay where they are, because none of
them is "call this function again": an upload retries only the objects that failed, the engine
requeues a flight on the board with a not-before time, a checkpoint is retried by the poll loop
(which must keep polling meanwhile), an undecodable-yet message pauses its partition, and every
wait ends early when the worker stops. Jitter keeps replicas that met the same outage from
retrying in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from consumer.settings import WorkerSettings

# 2**62 is far beyond any cap; bounding the exponent keeps the arithmetic in floats.
_MAX_EXPONENT = 62


class Jitter(StrEnum):
    FULL = "full"  # anywhere in [0, ceiling]: spreads retries the most
    EQUAL = "equal"  # in [ceiling / 2, ceiling]: spread, yet never an immediate retry
    NONE = "none"  # the ceiling itself


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempt n (1, 2, ...) waits up to min(cap_s, base_s * 2**(n-1)), jittered."""

    base_s: float
    cap_s: float
    jitter: Jitter = Jitter.EQUAL
    rand: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.base_s <= self.cap_s:
            raise ValueError(f"a retry policy needs 0 <= base_s <= cap_s, got {self.base_s}, {self.cap_s}")

    def ceiling_s(self, attempt: int) -> float:
        """The longest wait before try `attempt + 1` (attempt counts the failures so far)."""
        exponent = min(_MAX_EXPONENT, max(0, attempt - 1))
        return min(self.cap_s, self.base_s * 2.0**exponent)

    def delay_s(self, attempt: int) -> float:
        ceiling = self.ceiling_s(attempt)
        if self.jitter is Jitter.FULL:
            return ceiling * self.rand()
        if self.jitter is Jitter.EQUAL:
            return ceiling / 2.0 + ceiling / 2.0 * self.rand()
        return ceiling


@dataclass(frozen=True, slots=True)
class RetryPolicies:
    """The worker's retry policies, one per dependency, built from its settings in one place."""

    s3: RetryPolicy  # uploads and voice reads: the work waits in flight
    redis: RetryPolicy  # cache writes and (cache_failure_policy=wait) claims
    kafka: RetryPolicy  # a failed checkpoint; the poll loop keeps polling meanwhile
    registry: RetryPolicy  # a message that cannot be decoded yet: its partition pauses
    engine: RetryPolicy  # a transient engine failure, at most TTS_ENGINE_MAX_RETRIES times

    @classmethod
    def from_settings(
        cls, settings: WorkerSettings, *, random_source: Callable[[], float] = random.random
    ) -> RetryPolicies:
        def policy(base_s: float, cap_s: float) -> RetryPolicy:
            return RetryPolicy(base_s, max(base_s, cap_s), Jitter.EQUAL, random_source)

        return cls(
            s3=policy(0.2, 5.0),
            redis=policy(0.2, 5.0),
            # No longer than the fixed second it replaces: a checkpoint waiting on a broker that
            # is back delays every answer of the worker.
            kafka=policy(0.1, 1.0),
            registry=policy(1.0, 10.0),
            engine=policy(settings.engine_retry_backoff_ms / 1000.0, 30.0),
        )
