"""Producing requests and reading results the way an upstream service and a subscriber would,
with plain confluent-kafka clients (so the tests do not depend on our own client library)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from schemas import model
from schemas.codec import request_codec, result_codec
from schemas.keys import routing_key
from tests.support.stack import unique_name


def subscriber(
    kafka_config: dict[str, Any],
    topics: str | list[str],
    *,
    name: str = "reader",
    isolation: str = "read_committed",
    **extra: Any,
) -> Consumer:
    """A consumer in a group of its own that reads `topics` from the beginning, seeing what a
    result subscriber sees (read_committed unless `isolation` says otherwise)."""
    consumer = Consumer(
        {
            **kafka_config,
            "group.id": unique_name(name),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            **extra,
        }
    )
    consumer.subscribe([topics] if isinstance(topics, str) else topics)
    return consumer


@dataclass(frozen=True)
class Lanes:
    """A private set of topics and a consumer group for one test."""

    requests: str
    bulk: str
    results: str
    dlq: str
    group: str
    partitions: int

    def env(self) -> dict[str, str]:
        return {
            "TTS_TOPICS_REQUESTS": self.requests,
            "TTS_TOPICS_BULK": self.bulk,
            "TTS_TOPICS_RESULTS": self.results,
            "TTS_TOPICS_DLQ": self.dlq,
            "TTS_GROUP_ID": self.group,
        }

    def topic_names(self) -> dict[str, str]:
        return {"requests": self.requests, "bulk": self.bulk, "results": self.results, "dlq": self.dlq}

    @property
    def all_topics(self) -> list[str]:
        return [self.requests, self.bulk, self.results, self.dlq]


def create_lanes(
    kafka_config: dict[str, Any], partitions: int = 3, *, replication_factor: int = 1, min_insync: int = 1
) -> Lanes:
    suffix = uuid.uuid4().hex[:10]
    lanes = Lanes(
        requests=f"req-{suffix}",
        bulk=f"bulk-{suffix}",
        results=f"res-{suffix}",
        dlq=f"dlq-{suffix}",
        group=f"workers-{suffix}",
        partitions=partitions,
    )
    admin = AdminClient(kafka_config)
    config = {"min.insync.replicas": str(min_insync)} if replication_factor > 1 else {}
    futures = admin.create_topics(
        [NewTopic(t, partitions, replication_factor, config=config) for t in lanes.all_topics],
        operation_timeout=30,
    )
    for future in futures.values():
        future.result()
    return lanes


def delete_lanes(kafka_config: dict[str, Any], lanes: Lanes) -> None:
    admin = AdminClient(kafka_config)
    for future in admin.delete_topics(lanes.all_topics, operation_timeout=30).values():
        try:
            future.result()
        except Exception:  # leftovers are harmless
            pass


def request(text: str, voice: model.Voice | None = None, **fields: Any) -> model.SynthesisRequest:
    return model.SynthesisRequest(
        request_id=fields.pop("request_id", None) or str(uuid.uuid4()),
        text=text,
        voice=voice or model.PresetVoice("en-us"),
        created_at_ms=fields.pop("created_at_ms", None) or model.now_ms(),
        **fields,
    )


def send_requests(
    kafka_config: dict[str, Any],
    topic: str,
    requests: Iterable[model.SynthesisRequest],
    *,
    headers: Sequence[tuple[str, bytes]] = (),
) -> list[str]:
    codec = request_codec()
    producer = Producer({**kafka_config, "enable.idempotence": True})
    ids = []
    for req in requests:
        producer.produce(topic, codec.encode(req), key=routing_key(req).encode(), headers=list(headers))
        ids.append(req.request_id)
    assert producer.flush(30) == 0
    return ids


def send_raw(
    kafka_config: dict[str, Any],
    topic: str,
    value: bytes,
    key: bytes | None = None,
    partition: int | None = None,
) -> None:
    producer = Producer(kafka_config)
    if partition is None:
        producer.produce(topic, value, key=key)
    else:
        producer.produce(topic, value, key=key, partition=partition)
    assert producer.flush(30) == 0


class ResultReader:
    """Reads a results topic from the beginning (read_committed by default), accumulating."""

    def __init__(
        self, kafka_config: dict[str, Any], topic: str, *, isolation: str = "read_committed"
    ) -> None:
        self._consumer = subscriber(kafka_config, topic, isolation=isolation)
        self._codec = result_codec()
        self.results: dict[str, list[model.SynthesisResult]] = {}
        self.raw: list[Any] = []

    def poll_until(
        self, expected: Iterable[str], timeout_s: float, *, settle_s: float = 0.0
    ) -> dict[str, list[model.SynthesisResult]]:
        """Read until every expected id has a result (then `settle_s` more, to catch duplicates)."""
        wanted = set(expected)
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < deadline:
            if settle_until is None and wanted <= set(self.results):
                settle_until = time.monotonic() + settle_s
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            message = self._consumer.poll(0.2)
            if message is None or message.error():
                continue
            self.raw.append(message)
            result = self._codec.decode(message.value())
            self.results.setdefault(result.request_id, []).append(result)
        return self.results

    def poll_for(self, seconds: float) -> dict[str, list[model.SynthesisResult]]:
        """Read whatever arrives within `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self._consumer.poll(0.1)
            if message is None or message.error():
                continue
            self.raw.append(message)
            result = self._codec.decode(message.value())
            self.results.setdefault(result.request_id, []).append(result)
        return self.results

    def close(self) -> None:
        self._consumer.close()


def read_all(
    kafka_config: dict[str, Any], topic: str, *, idle_s: float = 3.0, timeout_s: float = 30.0
) -> list[Any]:
    """Every message currently in `topic` (read_uncommitted is not used: this is what a
    read_committed subscriber sees)."""
    consumer = subscriber(kafka_config, topic, name="dump")
    out = []
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last < idle_s:
        message = consumer.poll(0.2)
        if message is None or message.error():
            continue
        out.append(message)
        last = time.monotonic()
    consumer.close()
    return out


def committed_offsets(
    kafka_config: dict[str, Any], group: str, topic: str, partitions: int
) -> dict[int, int]:
    consumer = Consumer({**kafka_config, "group.id": group, "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in committed}
