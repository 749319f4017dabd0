"""What the chart's default ScaledObject does with real lag (issue 7, item 3).

Real topics on the local broker get real backlogs and real committed offsets; the lag is read the
way KEDA's scaler reads it (OffsetFetch for the group, ListOffsets latest per partition); the
rendered trigger metadata and KEDA's documented formula (tts_stream/ops/keda.py) turn it into a
replica count, which must match the promises of docs/deploy.md ("What the defaults do").

Only the topic names, the partition count, maxReplicas and the group differ from the defaults.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from producer.admin import init_group_offsets
from tests.helm.chart import load_values, render
from tts_stream.ops.keda import (
    KafkaTrigger,
    PartitionOffsets,
    ScaleDecision,
    desired_replicas,
    read_trigger,
)

PARTITIONS = 4
T = TypeVar("T")


def retrying(call: Callable[[], T], seconds: float = 15.0) -> T:
    """Retry the broker's transient answers (a new topic's leaders are still being elected)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except KafkaException as exc:
            if not exc.args[0].retriable() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class Lanes:
    """Two real lane topics, one consumer group, and the chart rendered for them."""

    def __init__(self, kafka_config: dict[str, Any], make_topic: Callable[..., str], **overrides: Any):
        self.kafka_config = kafka_config
        self.admin = AdminClient(kafka_config)
        self.interactive = make_topic("keda-interactive", partitions=PARTITIONS)
        self.bulk = make_topic("keda-bulk", partitions=PARTITIONS)
        self.group = f"keda-group-{uuid.uuid4().hex[:12]}"
        values: dict[str, Any] = {
            "kafka.bootstrapServers": kafka_config["bootstrap.servers"],
            "kafka.groupId": self.group,
            "redis.url": "redis://127.0.0.1:6390/0",
            "model.persistence.existingClaim": "tts-models",
            "topics.requests": self.interactive,
            "topics.bulk": self.bulk,
            "topics.partitions": PARTITIONS,
            "autoscaling.maxReplicas": PARTITIONS,
            **overrides,
        }
        rendered = render(values=values)
        self.scaled_object = rendered.one("ScaledObject")
        self.triggers = [
            KafkaTrigger.from_metadata(t["metadata"]) for t in self.scaled_object["spec"]["triggers"]
        ]
        assert [t.topic for t in self.triggers] == [self.interactive, self.bulk]
        assert {t.consumer_group for t in self.triggers} == {self.group}

    def produce(self, topic: str, per_partition: list[int]) -> None:
        producer = Producer({**self.kafka_config, "linger.ms": 5})
        for partition, count in enumerate(per_partition):
            for index in range(count):
                producer.produce(topic, value=b"{}", key=f"{partition}-{index}".encode(), partition=partition)
        assert producer.flush(30) == 0, "messages left undelivered"

    def produce_in_transaction(self, topic: str, per_partition: list[int]) -> None:
        producer = Producer({**self.kafka_config, "transactional.id": f"keda-test-{uuid.uuid4().hex[:12]}"})
        producer.init_transactions(30)
        producer.begin_transaction()
        for partition, count in enumerate(per_partition):
            for _ in range(count):
                producer.produce(topic, value=b"{}", partition=partition)
        producer.commit_transaction(30)

    def log_end_offsets(self, topic: str) -> dict[int, int]:
        def read() -> dict[int, int]:
            requests = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(PARTITIONS)}
            futures = self.admin.list_offsets(requests, request_timeout=15)
            return {tp.partition: future.result().offset for tp, future in futures.items()}

        return retrying(read)

    def committed_offsets(self, topic: str) -> dict[int, int | None]:
        request = ConsumerGroupTopicPartitions(
            self.group, [TopicPartition(topic, p) for p in range(PARTITIONS)]
        )

        def read() -> Any:  # a fresh request on each try
            return self.admin.list_consumer_group_offsets([request])[self.group].result()

        result = retrying(read)
        return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in result.topic_partitions}

    def commit(self, topic: str, offsets: dict[int, int]) -> None:
        request = ConsumerGroupTopicPartitions(
            self.group, [TopicPartition(topic, p, o) for p, o in offsets.items()]
        )

        def write() -> Any:
            return self.admin.alter_consumer_group_offsets([request])[self.group].result()

        retrying(write)

    def init_group(self) -> None:
        """`tts-stream topics init-group` itself: the log end, for a group that never committed."""
        init_group_offsets(self.kafka_config, self.group, [self.interactive, self.bulk])

    def decide(self, current: int | None = None) -> ScaleDecision:
        readings = []
        for trigger in self.triggers:
            committed = self.committed_offsets(trigger.topic)
            log_end = self.log_end_offsets(trigger.topic)
            partitions = [PartitionOffsets(p, committed[p], log_end[p]) for p in range(PARTITIONS)]
            readings.append((trigger, read_trigger(trigger, partitions)))
        return desired_replicas(self.scaled_object["spec"], readings, current)


@pytest.fixture
def lanes(kafka_config: dict[str, Any], make_topic: Callable[..., str]) -> Callable[..., Lanes]:
    return lambda **overrides: Lanes(kafka_config, make_topic, **overrides)


def test_the_scenario_runs_on_chart_defaults(lanes: Callable[..., Lanes]) -> None:
    """Guard: the numbers below are the chart defaults; a change to values.yaml must update docs too."""
    defaults = load_values()["autoscaling"]
    assert defaults["minReplicas"] == 1
    assert defaults["keda"]["lanes"]["interactive"]["lagThreshold"] == 20
    assert defaults["keda"]["lanes"]["bulk"]["lagThreshold"] == 500
    assert defaults["keda"]["lanes"]["interactive"]["activationLagThreshold"] == 0
    assert load_values()["kafka"]["offsetResetPolicy"] == "earliest"
    chart = lanes()
    assert [t.lag_threshold for t in chart.triggers] == [20, 500]


def test_empty_group_runs_the_minimum_and_scales_to_zero_when_allowed(lanes: Callable[..., Lanes]) -> None:
    chart = lanes()
    decision = chart.decide()
    assert not decision.active
    assert decision.replicas == 1  # default minReplicas: one warm GPU

    to_zero = lanes(**{"autoscaling.minReplicas": 0})
    assert to_zero.decide().replicas == 0


def test_never_committed_group_with_waiting_requests_wakes_up(lanes: Callable[..., Lanes]) -> None:
    """offsetResetPolicy earliest: messages on a partition without a commit count in full."""
    chart = lanes(**{"autoscaling.minReplicas": 0})
    chart.produce(chart.interactive, [7, 0, 0, 0])
    assert chart.committed_offsets(chart.interactive) == dict.fromkeys(range(PARTITIONS))
    decision = chart.decide()
    assert decision.active
    assert decision.replicas == 1  # ceil(7 / 20)


def test_latest_policy_without_initialised_offsets_never_scales_to_zero(lanes: Callable[..., Lanes]) -> None:
    """Why the hook Job runs init-group: with `latest`, every uncommitted partition reports lag 1."""
    chart = lanes(
        **{
            "autoscaling.minReplicas": 0,
            "kafka.offsetResetPolicy": "latest",
            "topics.job.initGroupOffsets": True,
        }
    )
    decision = chart.decide()
    assert decision.active, "an idle, never-committed group keeps one GPU pod up"
    assert decision.replicas == 1

    chart.init_group()
    decision = chart.decide()
    assert not decision.active
    assert decision.replicas == 0


def test_small_backlog_scales_to_ceil_of_lag_over_threshold(lanes: Callable[..., Lanes]) -> None:
    chart = lanes()
    chart.produce(chart.interactive, [5, 5, 5, 5])  # history before the deploy
    chart.init_group()
    assert chart.decide().replicas == 1

    chart.produce(chart.interactive, [13, 12, 13, 12])  # 50 new requests
    decision = chart.decide()
    assert decision.active
    assert decision.per_trigger == (3, 0)  # interactive ceil(50 / 20); bulk idle
    assert decision.replicas == 3

    # The workers commit 30 of them: 20 left, one replica's worth.
    committed = chart.committed_offsets(chart.interactive)
    chart.commit(chart.interactive, {p: committed[p] + 8 for p in range(3)} | {3: committed[3] + 6})
    assert chart.decide(current=3).replicas == 1


def test_backlog_beyond_the_partition_cap_stops_at_max_replicas(lanes: Callable[..., Lanes]) -> None:
    chart = lanes()
    chart.init_group()
    chart.produce(chart.interactive, [120, 110, 100, 90])  # 420 >> 4 partitions x 20
    chart.produce(chart.bulk, [300, 300, 300, 300])  # 1200: ceil(1200 / 500) = 3
    decision = chart.decide()
    assert decision.per_trigger == (PARTITIONS, 3)  # interactive capped at P x T = 80
    assert decision.replicas == PARTITIONS == chart.scaled_object["spec"]["maxReplicaCount"]


def test_bulk_backlog_alone_grows_the_fleet_slowly(lanes: Callable[..., Lanes]) -> None:
    chart = lanes(**{"autoscaling.minReplicas": 0})
    chart.init_group()
    chart.produce(chart.bulk, [250, 250, 250, 250])
    decision = chart.decide()
    assert decision.active
    assert decision.per_trigger == (0, 2)  # ceil(1000 / 500)
    assert decision.replicas == 2


def test_transaction_markers_hold_one_pod_unless_the_group_commits_past_them(
    lanes: Callable[..., Lanes],
) -> None:
    """KEDA issue #5675, on the real broker: a commit marker counts as lag 1 per partition.

    A transactional producer (e.g. a backfill) ends each partition's batch with a control record.
    A group that commits "last processed offset + 1" stops one short of the log end, so the lane
    stays active and scale-to-zero never happens; committing the consumer's position (which
    librdkafka advances past control records) reads as no lag.
    """
    chart = lanes(**{"autoscaling.minReplicas": 0})
    chart.init_group()
    before = chart.committed_offsets(chart.bulk)
    chart.produce_in_transaction(chart.bulk, [3] * PARTITIONS)
    # The coordinator writes the markers just after the commit returns.
    expected = {p: before[p] + 4 for p in range(PARTITIONS)}  # 3 requests + 1 marker
    deadline = time.monotonic() + 10
    while (log_end := chart.log_end_offsets(chart.bulk)) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert log_end == expected

    chart.commit(chart.bulk, {p: before[p] + 3 for p in range(PARTITIONS)})  # last offset + 1
    decision = chart.decide()
    assert decision.active
    assert decision.replicas == 1

    chart.commit(chart.bulk, log_end)  # the consumer position after the batch
    assert chart.decide().replicas == 0
