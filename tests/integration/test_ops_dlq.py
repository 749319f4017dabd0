"""Dead letters on the real broker: listing with filters, fetching, and a replay that happens once
(marker and records in one transaction), is recorded in headers, and refuses a second try."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer

from consumer.adapters.redis_store import RedisResultIndex
from schemas import dlq
from schemas.codec import request_codec
from schemas.topics import TopicNames
from tests.support.kafka_io import read_all, request
from tts_stream.ops.dlq import DlqFilter, Replayer, fetch, list_dead_letters, read_markers
from tts_stream.ops.errors import NotFound
from tts_stream.ops.kafka_read import TopicReader

CODEC = request_codec()


def dead_letter(
    kafka_config: dict[str, Any],
    topic: str,
    value: bytes,
    *,
    source: str,
    reason: str,
    failed_at_ms: int,
    key: bytes | None = b"routing-key",
) -> None:
    headers = [
        ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        (dlq.SOURCE_TOPIC, source.encode()),
        (dlq.SOURCE_PARTITION, b"0"),
        (dlq.SOURCE_OFFSET, b"12"),
        (dlq.SOURCE_TIMESTAMP, str(failed_at_ms - 5).encode()),
        (dlq.REASON, reason.encode()),
        (dlq.ERROR, b"test failure"),
        (dlq.FAILED_AT, str(failed_at_ms).encode()),
        (dlq.WORKER, b"worker-1"),
        (dlq.ATTEMPTS, b"3"),
    ]
    producer = Producer(kafka_config)
    producer.produce(topic, value, key=key, headers=headers, partition=0, timestamp=failed_at_ms)
    assert producer.flush(30) == 0


@pytest.fixture
def topics(make_topic: Callable[..., str]) -> TopicNames:
    return TopicNames(
        requests=make_topic("ops-req", 2),
        bulk=make_topic("ops-bulk", 2),
        results=make_topic("ops-res"),
        dlq=make_topic("ops-dlq"),
        dlq_replays=make_topic("ops-replays", 1, {"cleanup.policy": "compact"}),
    )


def test_list_filters_and_fetch(kafka_config: dict[str, Any], topics: TopicNames) -> None:
    now = int(time.time() * 1000)
    dead_letter(
        kafka_config,
        topics.dlq,
        b"\x07junk",
        source=topics.requests,
        reason="BAD_MAGIC",
        failed_at_ms=now - 3_600_000,
    )
    valid = CODEC.encode(request("hello"))
    dead_letter(
        kafka_config, topics.dlq, valid, source=topics.bulk, reason="CRASH_LOOP", failed_at_ms=now - 60_000
    )
    with TopicReader(kafka_config) as reader:
        everything = list_dead_letters(reader, topics.dlq, DlqFilter())
        assert [d.reason for d in everything.letters] == ["BAD_MAGIC", "CRASH_LOOP"]
        recent = list_dead_letters(reader, topics.dlq, DlqFilter(since_ms=now - 600_000))
        assert [d.id for d in recent.letters] == ["0:1"]
        by_reason = list_dead_letters(reader, topics.dlq, DlqFilter(reasons=frozenset({"BAD_MAGIC"})))
        assert [d.id for d in by_reason.letters] == ["0:0"]
        by_source = list_dead_letters(reader, topics.dlq, DlqFilter(source_topics=frozenset({topics.bulk})))
        assert [d.id for d in by_source.letters] == ["0:1"]
        limited = list_dead_letters(reader, topics.dlq, DlqFilter(), limit=1)
        assert (limited.matched, [d.id for d in limited.letters]) == (2, ["0:1"])

        one = fetch(reader, topics.dlq, "0:1")
        assert (one.source_topic, one.reason, one.worker, one.attempts) == (
            topics.bulk,
            "CRASH_LOOP",
            "worker-1",
            3,
        )
        with pytest.raises(NotFound, match=r"offsets 0\.\.1"):
            fetch(reader, topics.dlq, "0:5")
        with pytest.raises(NotFound, match="no partition 3"):
            fetch(reader, topics.dlq, "3:0")


def test_replay_happens_once_and_is_recorded(
    kafka_config: dict[str, Any], topics: TopicNames, redis_client: Any
) -> None:
    req = request("replay me", request_id=f"ops-{uuid.uuid4().hex}")
    dead_letter(
        kafka_config,
        topics.dlq,
        CODEC.encode(req),
        source=topics.requests,
        reason="CRASH_LOOP",
        failed_at_ms=int(time.time() * 1000),
    )
    replayer = Replayer(kafka_config, topics, CODEC, results=RedisResultIndex(redis_client))
    with TopicReader(kafka_config) as reader:
        letter = fetch(reader, topics.dlq, "0:0")

    (plan,) = replayer.replay([letter], dry_run=True)
    assert plan.status == "planned"
    assert read_all(kafka_config, topics.requests, idle_s=1) == []  # a dry run produces nothing

    (plan,) = replayer.replay([letter])
    assert (plan.status, plan.target_topic, plan.request_id, plan.replay_count) == (
        "replayed",
        topics.requests,
        req.request_id,
        1,
    )
    (replayed,) = read_all(kafka_config, topics.requests, idle_s=1)
    assert replayed.value() == letter.record.value and replayed.key() == b"routing-key"
    headers = dict(replayed.headers())
    assert headers["traceparent"].startswith(b"00-0af76519")
    assert headers[dlq.REPLAY_COUNT] == b"1" and int(headers[dlq.REPLAYED_AT]) > 0
    assert dlq.REASON not in headers and dlq.SOURCE_TOPIC not in headers
    with TopicReader(kafka_config) as reader:
        markers = read_markers(reader, topics.dlq_replays)
    assert markers[letter.coordinates].request_id == req.request_id

    (again,) = replayer.replay([letter])
    assert again.status == "skipped" and "already replayed" in again.note
    assert len(read_all(kafka_config, topics.requests, idle_s=1)) == 1

    (forced,) = replayer.replay([letter], force=True)
    assert forced.status == "replayed" and forced.replay_count == 2
    counts = sorted(
        dict(m.headers())[dlq.REPLAY_COUNT] for m in read_all(kafka_config, topics.requests, idle_s=1)
    )
    assert counts == [b"1", b"2"]


def test_a_request_with_a_result_is_not_replayed(
    kafka_config: dict[str, Any], topics: TopicNames, redis_client: Any
) -> None:
    req = request("already answered", request_id=f"ops-{uuid.uuid4().hex}")
    dead_letter(
        kafka_config,
        topics.dlq,
        CODEC.encode(req),
        source=topics.requests,
        reason="CRASH_LOOP",
        failed_at_ms=int(time.time() * 1000),
    )
    index = RedisResultIndex(redis_client)
    index.record([(req.request_id, b"a result")], ttl_s=60)
    replayer = Replayer(kafka_config, topics, CODEC, results=index)
    with TopicReader(kafka_config) as reader:
        letter = fetch(reader, topics.dlq, "0:0")
    (plan,) = replayer.replay([letter])
    assert plan.status == "skipped" and "already has a result" in plan.note
    assert read_all(kafka_config, topics.requests, idle_s=1) == []
