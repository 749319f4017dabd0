"""The Redis adapter of the result cache, single-flight leases and crash ledger, on real Redis:
one server, a Sentinel-managed master and a Redis Cluster, each started by scripts/stack.sh.
On the cluster every key of a script shares its hash tag, so each script runs on one node."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from consumer.adapters.redis_connect import RedisTopology
from consumer.adapters.redis_store import CACHE_HITS_KEY, RedisResultIndex, RedisStore
from consumer.ports import Acquired, CachedAudio, HeldElsewhere, Hit


@pytest.fixture
def store(redis_topology: RedisTopology) -> RedisStore:
    return RedisStore.from_topology(redis_topology, group_id=f"g-{uuid.uuid4().hex[:8]}")


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


def test_lookup_counters_ride_on_the_next_claim(store: RedisStore) -> None:
    client: Any = store.client
    before = int(client.get(CACHE_HITS_KEY) or 0)
    store.count_lookups(3, 1)
    assert int(client.get(CACHE_HITS_KEY) or 0) == before, "nothing is sent on its own"
    store.claim([uuid.uuid4().hex], "w1|1", 1000)
    assert int(client.get(CACHE_HITS_KEY) or 0) == before + 3


def _script_exists_calls(client: Any) -> int:
    """SCRIPT EXISTS calls the server (every node of a cluster) has answered so far."""
    info = client.info("commandstats")
    nodes = [info] if any(str(k).startswith("cmdstat_") for k in info) else list(info.values())
    return sum(int(node.get("cmdstat_script|exists", {}).get("calls", 0)) for node in nodes)


def test_the_dedup_calls_cost_one_round_trip_with_no_script_check_in_front(store: RedisStore) -> None:
    """Handing redis-py Script objects made its pipeline ask SCRIPT EXISTS before every claim,
    renewal and completion; the store sends bare EVALSHA and reloads only on NOSCRIPT."""
    client: Any = store.client
    keys = [uuid.uuid4().hex for _ in range(5)]
    store.claim(keys, "w1|1", 5000)  # loads the scripts if this server has not seen them yet
    before = _script_exists_calls(client)
    store.claim(keys, "w1|1", 5000)
    store.renew(keys, "w1|1", 5000)
    store.complete_many([(k, _audio()) for k in keys], "w1|1", 60)
    store.release(keys, "w1|1")
    assert _script_exists_calls(client) == before


def test_lookup_counters_are_sent_once_when_a_claim_is_retried_after_noscript(store: RedisStore) -> None:
    """The counters ride on a non-transactional pipeline: when its scripts were missing they
    were counted all the same, and the retry must not count them again."""
    client: Any = store.client
    before = int(client.get(CACHE_HITS_KEY) or 0)
    store.count_lookups(3, 1)
    client.script_flush()
    key = uuid.uuid4().hex
    assert isinstance(store.claim([key], "w1|1", 1000)[key], Acquired)
    assert int(client.get(CACHE_HITS_KEY) or 0) == before + 3


def test_crash_ledger_counts_what_was_in_the_engine_when_an_instance_died(store: RedisStore) -> None:
    assert store.begin("w1", ["t:0:1", "t:0:2"]) == {}
    # The process dies here: no end(). Its restart recovers the record.
    assert store.recover("w1") == 2
    assert store.begin("w1", ["t:0:1", "t:0:3"]) == {"t:0:1": 1}
    store.end("w1")
    assert store.recover("w1") == 0, "a finished batch leaves nothing behind"


def test_a_batch_of_keys_spread_over_every_node_is_one_call(store: RedisStore) -> None:
    """Two hundred cache keys land in slots of all three cluster masters: one pipeline still
    answers each of them, the lookup counters riding along."""
    keys = [uuid.uuid4().hex for _ in range(200)]
    store.count_lookups(1, 1)
    assert all(isinstance(c, Acquired) for c in store.claim(keys, "w1|1", 30_000).values())
    store.complete_many([(k, _audio()) for k in keys[:100]], "w1|1", 60)
    claims = store.claim(keys, "w2|1", 30_000)
    assert sum(isinstance(c, Hit) for c in claims.values()) == 100
    assert sum(isinstance(c, HeldElsewhere) for c in claims.values()) == 100
    assert store.renew(keys, "w1|1", 30_000) == set(keys[100:])
    store.release(keys, "w1|1")
    assert all(isinstance(c, (Acquired, Hit)) for c in store.claim(keys, "w2|1", 30_000).values())


def test_the_result_index_stores_and_finds_results_by_request_id(store: RedisStore) -> None:
    index = RedisResultIndex(store.client)
    ids = [uuid.uuid4().hex for _ in range(50)]
    index.record([(rid, rid.encode()) for rid in ids], 60)
    assert all(index.get(rid) == rid.encode() for rid in ids)
    assert index.get(uuid.uuid4().hex) is None


def test_scripts_a_node_forgot_are_loaded_again(store: RedisStore) -> None:
    """A promoted replica or a restarted node starts without our scripts (SCRIPT FLUSH stands in
    for it): a single server's pipeline reloads them itself, a cluster pipeline reported NOSCRIPT
    for every key until the store learnt to load them on every primary."""
    client: Any = store.client
    client.script_flush()
    key = uuid.uuid4().hex
    assert isinstance(store.claim([key], "w1|1", 5000)[key], Acquired)
    client.script_flush()
    store.complete_many([(key, _audio())], "w1|1", 60)
    client.script_flush()
    assert isinstance(store.claim([key], "w2|1", 5000)[key], Hit)
