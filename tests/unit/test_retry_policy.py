"""The one retry policy: exponential, capped, jittered; and the worker's policies per dependency."""

from __future__ import annotations

import random

import pytest

from consumer.core.retry import Jitter, RetryPolicies, RetryPolicy
from consumer.settings import WorkerSettings


def test_without_jitter_the_delay_doubles_from_the_base_up_to_the_cap() -> None:
    policy = RetryPolicy(0.2, 5.0, Jitter.NONE)
    assert [policy.delay_s(n) for n in range(1, 8)] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])


@pytest.mark.parametrize("jitter", list(Jitter))
def test_every_delay_stays_within_zero_and_the_ceiling(jitter: Jitter) -> None:
    policy = RetryPolicy(0.1, 2.0, jitter, random.Random(7).random)
    for attempt in range(1, 40):
        ceiling = policy.ceiling_s(attempt)
        assert ceiling <= 2.0
        for _ in range(20):
            assert 0.0 <= policy.delay_s(attempt) <= ceiling


def test_equal_jitter_never_waits_less_than_half_the_ceiling() -> None:
    low = RetryPolicy(1.0, 8.0, Jitter.EQUAL, lambda: 0.0)
    high = RetryPolicy(1.0, 8.0, Jitter.EQUAL, lambda: 1.0)
    assert [low.delay_s(n) for n in (1, 2, 3, 4, 9)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [high.delay_s(n) for n in (1, 2, 3, 4, 9)] == [1.0, 2.0, 4.0, 8.0, 8.0]


def test_full_jitter_uses_the_whole_range() -> None:
    assert RetryPolicy(1.0, 8.0, Jitter.FULL, lambda: 0.0).delay_s(3) == 0.0
    assert RetryPolicy(1.0, 8.0, Jitter.FULL, lambda: 0.25).delay_s(3) == 1.0


@pytest.mark.parametrize("jitter", [Jitter.FULL, Jitter.EQUAL])
def test_jitter_spreads_the_delays_of_one_attempt(jitter: Jitter) -> None:
    policy = RetryPolicy(0.2, 5.0, jitter, random.Random(1).random)
    delays = [policy.delay_s(4) for _ in range(200)]
    ceiling = policy.ceiling_s(4)
    assert len(set(delays)) > 150, "replicas that failed together do not retry together"
    assert max(delays) - min(delays) > ceiling * (0.8 if jitter is Jitter.FULL else 0.4)


def test_the_cap_holds_for_any_attempt() -> None:
    policy = RetryPolicy(0.5, 3.0, Jitter.EQUAL, lambda: 1.0)
    assert policy.delay_s(10_000) == 3.0
    assert policy.delay_s(0) == policy.delay_s(1) == 0.5


def test_a_base_above_the_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="base_s <= cap_s"):
        RetryPolicy(2.0, 1.0)
    with pytest.raises(ValueError):
        RetryPolicy(-1.0, 1.0)


def test_the_worker_policies_come_from_its_settings() -> None:
    policies = RetryPolicies.from_settings(
        WorkerSettings(engine_retry_backoff_ms=750), random_source=lambda: 1.0
    )
    assert [policies.engine.delay_s(n) for n in (1, 2, 3)] == pytest.approx([0.75, 1.5, 3.0])
    assert policies.engine.cap_s == 30.0
    # S3 and Redis keep the back-off the store stage always had (0.2 s doubling to 5 s).
    assert policies.s3.ceiling_s(1) == policies.redis.ceiling_s(1) == 0.2
    assert policies.s3.ceiling_s(99) == policies.redis.ceiling_s(99) == 5.0
    # A checkpoint never waits longer than the second it used to.
    assert policies.kafka.ceiling_s(99) == 1.0
    assert all(
        p.jitter is Jitter.EQUAL for p in (policies.s3, policies.redis, policies.kafka, policies.registry)
    )


def test_an_engine_back_off_longer_than_the_cap_raises_the_cap() -> None:
    policies = RetryPolicies.from_settings(WorkerSettings(engine_retry_backoff_ms=60_000))
    assert policies.engine.ceiling_s(5) == 60.0
