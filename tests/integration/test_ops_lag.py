"""`tts-stream lag` logic on the real broker: lag per partition, consumption and arrival rates
between two readings, the drain estimate, and KEDA's replica count for the chart defaults."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from schemas.topics import TopicNames
from tests.support.kafka_io import Lanes, create_lanes, delete_lanes
from tts_stream.ops.errors import NotFound
from tts_stream.ops.keda import ChartScaling
from tts_stream.ops.lag import LagReader, report


def produce(kafka_config: dict[str, Any], topic: str, per_partition: list[int]) -> None:
    producer = Producer(kafka_config)
    for partition, count in enumerate(per_partition):
        for _ in range(count):
            producer.produce(topic, b"x", partition=partition)
    assert producer.flush(30) == 0


def commit(kafka_config: dict[str, Any], group: str, topic: str, offsets: dict[int, int]) -> None:
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p, o) for p, o in offsets.items()])
    admin = AdminClient(kafka_config)  # keep it alive until the future resolves
    admin.alter_consumer_group_offsets([request])[group].result(timeout=30)


@pytest.fixture
def lanes(kafka_config: dict[str, Any]) -> Iterator[Lanes]:
    created = create_lanes(kafka_config, partitions=3)
    yield created
    delete_lanes(kafka_config, created)


def test_lag_rates_eta_and_keda(kafka_config: dict[str, Any], lanes: Lanes) -> None:
    topics = TopicNames(**lanes.topic_names())
    produce(kafka_config, lanes.requests, [20, 20, 20])
    commit(kafka_config, lanes.group, lanes.requests, {0: 0, 1: 0, 2: 0})
    reader = LagReader(kafka_config, topics, lanes.group)

    first = reader.snapshot()
    assert [p.lag() for p in first.partitions["interactive"]] == [20, 20, 20]
    assert [p.committed for p in first.partitions["bulk"]] == [None, None, None]

    time.sleep(1.0)
    commit(kafka_config, lanes.group, lanes.requests, {0: 10, 1: 10, 2: 10})  # 30 consumed
    produce(kafka_config, lanes.requests, [3, 3, 3])  # 9 arrived
    second = reader.snapshot()
    result = report(second, ChartScaling(), first)
    interactive = result.lanes[0]
    assert interactive.lag == 39
    window = second.taken_at - first.taken_at
    assert interactive.consumed_per_s is not None and abs(interactive.consumed_per_s - 30 / window) < 0.01
    assert interactive.produced_per_s is not None and abs(interactive.produced_per_s - 9 / window) < 0.01
    assert interactive.eta_s is not None and abs(interactive.eta_s - 39 / (21 / window)) < 0.01
    assert interactive.keda_replicas == 2  # ceil(39 / 20)
    assert result.lanes[1].lag == 0 and result.lanes[1].keda_replicas == 0
    assert result.decision.replicas == 2
    assert result.members == 0  # nobody has joined the group


def test_unknown_lane_topic_is_reported(kafka_config: dict[str, Any]) -> None:
    missing = TopicNames(requests=f"missing-{uuid.uuid4().hex[:8]}")
    with pytest.raises(NotFound, match="does not exist"):
        LagReader(kafka_config, missing, "g").snapshot()
