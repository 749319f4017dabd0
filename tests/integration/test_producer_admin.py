"""`topics init-group` against the real broker: log-end offsets for a new group, nothing else
(a group with any committed offset is left untouched)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from producer.admin import PartitionInitState, TopicMissing, init_group_offsets
from tests.support.stack import unique_name


def _committed(kafka_config: dict[str, Any], group: str, topic: str, partitions: int) -> dict[int, int]:
    admin = AdminClient(kafka_config)
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])
    result = admin.list_consumer_group_offsets([request])[group].result()
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def _produce(kafka_config: dict[str, Any], topic: str, per_partition: dict[int, int]) -> None:
    producer = Producer(kafka_config)
    for partition, count in per_partition.items():
        for i in range(count):
            producer.produce(topic, f"m{i}".encode(), partition=partition)
    producer.flush(30)


def test_a_new_group_gets_the_log_end_and_a_rerun_changes_nothing(
    kafka_config: dict[str, Any], make_topic: Callable[..., str]
) -> None:
    requests, bulk = make_topic("req", 3), make_topic("bulk", 2)
    _produce(kafka_config, requests, {0: 5, 1: 0, 2: 2})
    _produce(kafka_config, bulk, {0: 1, 1: 3})
    group = unique_name("workers")

    first = init_group_offsets(kafka_config, group, [requests, bulk])
    assert {(r.topic, r.partition, r.state, r.offset) for r in first} == {
        (requests, 0, PartitionInitState.INITIALISED, 5),
        (requests, 1, PartitionInitState.INITIALISED, 0),
        (requests, 2, PartitionInitState.INITIALISED, 2),
        (bulk, 0, PartitionInitState.INITIALISED, 1),
        (bulk, 1, PartitionInitState.INITIALISED, 3),
    }
    assert _committed(kafka_config, group, requests, 3) == {0: 5, 1: 0, 2: 2}

    _produce(kafka_config, requests, {0: 4})  # new traffic is lag now
    second = init_group_offsets(kafka_config, group, [requests, bulk])
    assert {r.state for r in second} == {PartitionInitState.KEPT}
    assert _committed(kafka_config, group, requests, 3) == {0: 5, 1: 0, 2: 2}, "lag is left in place"


def test_a_group_with_one_committed_offset_gets_no_others(
    kafka_config: dict[str, Any], make_topic: Callable[..., str]
) -> None:
    topic = make_topic("req", 3)
    _produce(kafka_config, topic, {0: 2, 1: 3, 2: 4})
    group = unique_name("workers")
    admin = AdminClient(kafka_config)
    admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 1)])])[
        group
    ].result()

    reports = init_group_offsets(kafka_config, group, [topic])
    assert {(r.partition, r.state, r.offset) for r in reports} == {
        (0, PartitionInitState.KEPT, 1),
        (1, PartitionInitState.GROUP_COMMITTED, None),
        (2, PartitionInitState.GROUP_COMMITTED, None),
    }
    assert _committed(kafka_config, group, topic, 3) == {0: 1, 1: -1001, 2: -1001}, "the backlog stays work"


def test_an_open_transaction_is_not_skipped(
    kafka_config: dict[str, Any], make_topic: Callable[..., str]
) -> None:
    topic = make_topic("req", 1)
    _produce(kafka_config, topic, {0: 3})
    producer = Producer({**kafka_config, "transactional.id": unique_name("open-tx")})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"in flight", partition=0)
    producer.flush(30)
    try:
        group = unique_name("workers")
        [report] = init_group_offsets(kafka_config, group, [topic])
        # The last stable offset: the open transaction's message will still be consumed.
        assert report.offset == 3
    finally:
        producer.commit_transaction(30)


def test_a_group_with_members_is_left_alone(
    kafka_config: dict[str, Any], make_topic: Callable[..., str]
) -> None:
    topic = make_topic("req", 2)
    group = unique_name("workers")
    member = Consumer({**kafka_config, "group.id": group, "enable.auto.commit": False})
    member.subscribe([topic])
    deadline = time.monotonic() + 30
    while not member.assignment() and time.monotonic() < deadline:
        member.poll(0.2)
    try:
        reports = init_group_offsets(kafka_config, group, [topic])
        assert {r.state for r in reports} == {PartitionInitState.GROUP_ACTIVE}
        assert set(_committed(kafka_config, group, topic, 2).values()) == {-1001}
    finally:
        member.close()


def test_a_missing_topic_is_reported(kafka_config: dict[str, Any]) -> None:
    with pytest.raises(TopicMissing, match="topics ensure"):
        init_group_offsets(kafka_config, unique_name("g"), [unique_name("nope")])
