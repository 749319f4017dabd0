"""The Redis adapter of the result cache, single-flight leases and crash ledger, on real Redis."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from consumer.adapters.redis_store import CACHE_HITS_KEY, RedisStore
from consumer.ports import Acquired, CachedAudio, HeldElsewhere, Hit
from tests.support.stack import StackAddresses


@pytest.fixture
def store(stack: StackAddresses, redis_client: Any) -> RedisStore:
    return RedisStore.from_url(stack.redis_url, password=None, group_id=f"g-{uuid.uuid4().hex[:8]}")


def _audio() -> CachedAudio:
    return CachedAudio(
        "s3://b/k.wav", "audio/wav", 10, 1.5, 22050, "ab" * 32, 1, "espeak", "m1", "preset:en-us"
    )


def test_one_owner_at_a_time_and_the_result_for_everyone_after(store: RedisStore) -> None:
    key = uuid.uuid4().hex
    assert isinstance(store.claim([key], "w1|1", 5000)[key], Acquired)
    held = store.claim([key], "w2|1", 5000)[key]
    assert isinstance(held, HeldElsewhere) and 0 < held.expires_in_ms <= 5000
    assert isinstance(store.claim([key], "w1|1", 5000)[key], Acquired), "our own lease is refreshed"
    store.complete(key, _audio(), "w1|1", 60)
    hit = store.claim([key], "w2|1", 5000)[key]
    assert isinstance(hit, Hit) and hit.audio == _audio()


def test_a_restarted_instance_takes_over_its_dead_predecessors_leases(store: RedisStore) -> None:
    key = uuid.uuid4().hex
    assert isinstance(store.claim([key], "w1|100", 30_000)[key], Acquired)
    assert isinstance(store.claim([key], "w10|5", 30_000)[key], HeldElsewhere), (
        "a prefix of another id is not ours"
    )
    assert isinstance(store.claim([key], "w1|200", 30_000)[key], Acquired), "no 30 s wait after a restart"
    assert store.renew([key], "w1|100", 30_000) == set(), "the dead incarnation no longer holds it"
    assert store.renew([key], "w1|200", 30_000) == {key}


def test_release_frees_a_lease_only_for_its_owner(store: RedisStore) -> None:
    key = uuid.uuid4().hex
    store.claim([key], "w1|1", 30_000)
    store.release([key], "w2|1")
    assert isinstance(store.claim([key], "w2|1", 30_000)[key], HeldElsewhere)
    store.release([key], "w1|1")
    assert isinstance(store.claim([key], "w2|1", 30_000)[key], Acquired)


def test_lookup_counters_ride_on_the_next_claim(store: RedisStore, redis_client: Any) -> None:
    before = int(redis_client.get(CACHE_HITS_KEY) or 0)
    store.count_lookups(3, 1)
    assert int(redis_client.get(CACHE_HITS_KEY) or 0) == before, "nothing is sent on its own"
    store.claim([uuid.uuid4().hex], "w1|1", 1000)
    assert int(redis_client.get(CACHE_HITS_KEY) or 0) == before + 3


def test_crash_ledger_counts_what_was_in_the_engine_when_an_instance_died(store: RedisStore) -> None:
    assert store.begin("w1", ["t:0:1", "t:0:2"]) == {}
    # The process dies here: no end(). Its restart recovers the record.
    assert store.recover("w1") == 2
    assert store.begin("w1", ["t:0:1", "t:0:3"]) == {"t:0:1": 1}
    store.end("w1")
    assert store.recover("w1") == 0, "a finished batch leaves nothing behind"
