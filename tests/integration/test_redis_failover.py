"""A Redis master dies (SIGKILL): the store finds the new master by itself, through the sentinels
or the cluster's slot map, and a promoted replica serves the scripts it never loaded.

Each test starts a deployment of its own (scripts/stack.sh, free ports): the kill changes who is
master, which the shared session deployments must not see. Under load, with workers, the same
faults are in tests/chaos/test_ha.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from consumer.adapters.redis_store import RedisStore
from consumer.errors import CacheUnavailable
from consumer.ports import Acquired, CachedAudio, Hit
from tests.support.redis_topologies import RedisDeployment

pytestmark = pytest.mark.timeout(180)

# Sentinel: down-after 2 s, then an election; Cluster: node timeout 3 s, then the replica's
# election. Either is normally over in well under this.
FAILOVER_BOUND_S = 30.0


def _short_timeouts(deployment: RedisDeployment) -> Any:
    return deployment.topology(socket_timeout=1, socket_connect_timeout=1)


def _audio() -> CachedAudio:
    return CachedAudio("s3://b/k.wav", "audio/wav", 10, 1.5, 22050, "ab" * 32, 1, "null", "m", "preset:en-us")


@pytest.fixture
def deployment(request: pytest.FixtureRequest) -> Iterator[RedisDeployment]:
    mode = request.param
    try:
        started = RedisDeployment.start(mode)
    except RuntimeError as exc:
        pytest.fail(f"could not start Redis ({mode}): {exc}")
    yield started
    started.stop()


def _until_served(store: RedisStore, key: str, started: float) -> tuple[Any, float]:
    """Claim `key` until Redis answers again; the answer and the seconds it took."""
    errors = 0
    while time.monotonic() - started < FAILOVER_BOUND_S:
        try:
            return store.claim([key], "w2|1", 5000)[key], time.monotonic() - started
        except CacheUnavailable:
            errors += 1
            time.sleep(0.2)
    raise AssertionError(f"Redis did not answer within {FAILOVER_BOUND_S:.0f}s of the kill ({errors} errors)")


def _replicated(client: Any) -> None:
    """Wait until the master's replica has every write so far (replication is asynchronous: a
    write the replica never got is lost in a failover, which a cache can afford but a test
    asserting on it cannot). A replica that just started may still be syncing."""
    deadline = time.monotonic() + 20
    while client.execute_command("WAIT", 1, 500) < 1:
        assert time.monotonic() < deadline, "the replica never acknowledged the writes"


@pytest.mark.parametrize("deployment", ["sentinel"], indirect=True)
def test_sentinel_failover_the_store_follows_the_new_master(deployment: RedisDeployment) -> None:
    store = RedisStore.from_topology(
        deployment.topology(socket_timeout=1, socket_connect_timeout=1), group_id="g"
    )
    key = uuid.uuid4().hex
    assert isinstance(store.claim([key], "w1|1", 60_000)[key], Acquired)
    store.complete_many([(key, _audio())], "w1|1", 600)
    _replicated(store.client)

    deployment.kill("redis-master")
    claim, took_s = _until_served(store, key, time.monotonic())
    assert isinstance(claim, Hit) and claim.audio == _audio(), "the promoted replica has the entry"
    print(f"\nsentinel failover: the store was served again {took_s:.1f}s after the master's SIGKILL")
    assert isinstance(store.claim([uuid.uuid4().hex], "w1|1", 1000).popitem()[1], Acquired), "writable"


@pytest.mark.parametrize("deployment", ["cluster"], indirect=True)
def test_cluster_master_killed_its_replica_takes_the_slots_and_runs_our_scripts(
    deployment: RedisDeployment,
) -> None:
    store = RedisStore.from_topology(
        deployment.topology(socket_timeout=1, socket_connect_timeout=1), group_id="g"
    )
    client: Any = store.client
    key = uuid.uuid4().hex
    assert isinstance(store.claim([key], "w1|1", 60_000)[key], Acquired)
    store.complete_many([(key, _audio())], "w1|1", 600)
    node = client.get_node_from_key(f"tts:{{{key}}}:result")
    _replicated(client.get_redis_connection(node))

    deployment.kill(deployment.node_of_port(node.port))
    claim, took_s = _until_served(store, key, time.monotonic())
    assert isinstance(claim, Hit) and claim.audio == _audio()
    print(f"\ncluster failover: the key's slot was served again {took_s:.1f}s after its master's SIGKILL")
    others = [uuid.uuid4().hex for _ in range(60)]  # every slot range, the promoted one included
    assert all(isinstance(c, Acquired) for c in store.claim(others, "w1|1", 1000).values())
