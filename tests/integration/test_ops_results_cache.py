"""`results get` and `cache stats|purge` logic against the real Redis and broker: one Redis
server, a Sentinel-managed master and a Redis Cluster (where a scan visits every master).

Redis is shared with other suites and workers: every entry here carries a unique engine name or
cache key, and nothing here purges by anything broader.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import pytest
from confluent_kafka import Producer

from consumer.adapters.redis_connect import RedisTopology
from consumer.adapters.redis_store import CACHE_HITS_KEY, RedisResultIndex, lease_key, result_key
from consumer.ports import CachedAudio
from schemas.codec import result_codec
from schemas.model import ResultStatus, SynthesisResult, Timings, now_ms
from tts_stream.ops.cache import CacheAdmin, Selector
from tts_stream.ops.kafka_read import TopicReader
from tts_stream.ops.results import lookup_index, scan_results

CODEC = result_codec()


@pytest.fixture
def redis_client(redis_topology: RedisTopology) -> Any:
    """The operator tools' client for each deployment (tts_stream/ops/settings.redis_client)."""
    return redis_topology.client()


def a_result(request_id: str) -> SynthesisResult:
    return SynthesisResult(request_id, ResultStatus.SUCCEEDED, "espeak", "1", Timings(1, 2, 3), now_ms())


def test_lookup_by_request_id_in_the_index(redis_client: Any) -> None:
    request_id = f"ops-{uuid.uuid4().hex}"
    index = RedisResultIndex(redis_client)
    assert lookup_index(index, CODEC, request_id) is None
    index.record([(request_id, CODEC.encode(a_result(request_id)))], ttl_s=60)
    found = lookup_index(index, CODEC, request_id)
    assert found is not None and found.source == "index" and found.result.request_id == request_id


def test_scan_finds_a_result_the_index_no_longer_has(
    kafka_config: dict[str, Any], make_topic: Callable[..., str]
) -> None:
    topic = make_topic("ops-results", 3)
    wanted = f"ops-{uuid.uuid4().hex}"
    producer = Producer(kafka_config)
    for request_id in (f"other-{uuid.uuid4().hex}", wanted, f"other-{uuid.uuid4().hex}"):
        producer.produce(topic, CODEC.encode(a_result(request_id)), key=request_id.encode())
    assert producer.flush(30) == 0
    with TopicReader(kafka_config) as reader:
        found = scan_results(reader, topic, CODEC, wanted, since_ms=now_ms() - 60_000)
        assert found is not None and found.source == "topic" and found.result.request_id == wanted
        assert scan_results(reader, topic, CODEC, wanted, since_ms=now_ms() + 60_000) is None


def entry(engine: str, model: str, voice: str) -> bytes:
    audio = CachedAudio(
        "s3://tts-audio/audio/x.wav", "audio/wav", 1000, 1.0, 24000, "0" * 64, now_ms(), engine, model, voice
    )
    return json.dumps(asdict(audio)).encode()


def test_purge_by_engine_model_and_voice_and_by_key(redis_client: Any) -> None:
    engine = f"ops-test-{uuid.uuid4().hex[:8]}"
    keys = {name: uuid.uuid4().hex + uuid.uuid4().hex for name in ("v1-alice", "v1-bob", "v2-alice", "exact")}
    redis_client.set(result_key(keys["v1-alice"]), entry(engine, "v1", "content:" + "a" * 64), ex=300)
    redis_client.set(result_key(keys["v1-bob"]), entry(engine, "v1", "content:" + "b" * 64), ex=300)
    redis_client.set(result_key(keys["v2-alice"]), entry(engine, "v2", "content:" + "a" * 64), ex=300)
    redis_client.set(result_key(keys["exact"]), entry(engine, "v3", "preset:en-us"), ex=300)
    redis_client.set(lease_key(keys["exact"]), b"owner", ex=300)
    admin = CacheAdmin(redis_client)

    stats = admin.stats()
    assert stats.by_producer[(engine, "v1")] == 2 and stats.entries >= 4 and stats.leases >= 1
    assert stats.audio_bytes >= 4000

    dry = admin.purge(Selector(engine=engine, model_version="v1"), dry_run=True)
    assert (dry.matched, dry.deleted) == (2, 0)
    assert redis_client.exists(result_key(keys["v1-alice"]))

    by_voice = admin.purge(Selector(engine=engine, voices=frozenset({"content:" + "a" * 64})))
    assert (by_voice.matched, by_voice.deleted) == (2, 2)
    assert not redis_client.exists(result_key(keys["v1-alice"])) and not redis_client.exists(
        result_key(keys["v2-alice"])
    )
    assert redis_client.exists(result_key(keys["v1-bob"]))

    exact = admin.purge(Selector(cache_keys=frozenset({keys["exact"], "f" * 64})))
    assert (exact.matched, exact.deleted) == (1, 1)
    assert redis_client.exists(lease_key(keys["exact"]))  # leases belong to working workers
    assert admin.purge(Selector(engine=engine)).deleted == 1  # bob's
    assert admin.stats().by_producer[(engine, "v1")] == 0


def test_hit_ratio_comes_from_the_workers_counters(redis_client: Any) -> None:
    before_hits, before_misses = CacheAdmin(redis_client).counters()
    redis_client.incrby(CACHE_HITS_KEY, 3)
    hits, misses = CacheAdmin(redis_client).counters()
    assert hits >= before_hits + 3 and misses >= before_misses
    stats = CacheAdmin(redis_client).stats(scan=False)
    assert stats.hit_ratio is not None and 0 < stats.hit_ratio <= 1
