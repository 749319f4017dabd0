"""Backlog of the workers' consumer group per lane: lag, throughput, time to drain, and the
replica count KEDA would ask for with the chart's settings (tts_stream/ops/keda.py).

Lag is read the way KEDA reads it: the group's committed offsets (OffsetFetch) against each
partition's log end (ListOffsets). Throughput is the difference between two readings: what the
group committed per second (consumed) and what arrived per second (produced). Offsets count
transaction markers too, so a transactional producer (backfill) makes both rates read slightly
high; the drain estimate divides the lag by consumed minus produced.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from schemas.topics import TopicNames
from tts_stream.ops.errors import NotFound, ServiceUnavailable
from tts_stream.ops.keda import (
    LANES,
    ChartScaling,
    PartitionOffsets,
    ScaleDecision,
    TriggerReading,
    desired_replicas,
    read_trigger,
)

T = TypeVar("T")


@dataclass(frozen=True)
class PartitionState:
    partition: int
    committed: int | None  # None: the group never committed here
    log_start: int
    log_end: int

    def lag(self, offset_reset_policy: str = "earliest") -> int:
        """Messages the group has still to read from this partition."""
        if self.committed is None:
            return self.log_end - self.log_start if offset_reset_policy == "earliest" else 0
        return max(0, self.log_end - max(self.committed, self.log_start))


@dataclass(frozen=True)
class Snapshot:
    taken_at: float  # time.time()
    group: str
    topics: dict[str, str]  # lane -> topic
    partitions: dict[str, tuple[PartitionState, ...]]  # lane -> partitions
    members: int | None  # consumers in the group now (one per worker pod); None: unknown


@dataclass(frozen=True)
class LaneReport:
    lane: str
    topic: str
    partitions: tuple[PartitionState, ...]
    lag: int
    consumed_per_s: float | None
    produced_per_s: float | None
    eta_s: float | None  # None: not draining, or no rate yet
    keda: TriggerReading | None
    keda_replicas: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "lane": self.lane,
            "topic": self.topic,
            "lag": self.lag,
            "consumed_per_s": _round(self.consumed_per_s),
            "produced_per_s": _round(self.produced_per_s),
            "eta_s": _round(self.eta_s),
            "keda_metric": self.keda.metric if self.keda else None,
            "keda_active": self.keda.active if self.keda else None,
            "keda_replicas": self.keda_replicas,
            "partitions": [
                {"partition": p.partition, "committed": p.committed, "log_end": p.log_end, "lag": p.lag()}
                for p in self.partitions
            ],
        }


@dataclass(frozen=True)
class LagReport:
    group: str
    lanes: tuple[LaneReport, ...]
    members: int | None
    window_s: float | None
    decision: ScaleDecision
    chart: ChartScaling

    @property
    def total_lag(self) -> int:
        return sum(lane.lag for lane in self.lanes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "members": self.members,
            "window_s": _round(self.window_s),
            "total_lag": self.total_lag,
            "keda_desired_replicas": self.decision.replicas,
            "keda_active": self.decision.active,
            "min_replicas": self.chart.min_replicas,
            "max_replicas": self.chart.max_replicas,
            "lanes": [lane.as_dict() for lane in self.lanes],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def retrying(call: Callable[[], T], seconds: float) -> T:
    """Retry the broker's transient answers (coordinator loading, leader election)."""
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            retriable = bool(error is not None and hasattr(error, "retriable") and error.retriable())
            if not retriable or time.monotonic() > deadline:
                raise ServiceUnavailable(f"Kafka: {exc}") from exc
            time.sleep(0.2)


class LagReader:
    """Reads the group's committed offsets and the lanes' log ends with one admin client."""

    def __init__(self, config: dict[str, Any], topics: TopicNames, group: str, *, timeout_s: float = 15.0):
        from confluent_kafka.admin import AdminClient

        self._admin = AdminClient(config)
        self._topics = {lane: topics.lane(lane) for lane in LANES}
        self._group = group
        self._timeout_s = timeout_s

    def _partitions(self, topic: str) -> list[int]:
        try:
            metadata = self._admin.list_topics(topic, timeout=self._timeout_s)
        except Exception as exc:  # KafkaException: no broker answered
            raise ServiceUnavailable(f"Kafka did not answer: {exc}") from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise NotFound(f"lane topic {topic} does not exist (tts-stream topics ensure creates it)")
        return sorted(found.partitions)

    def _offsets(self, topic: str, partitions: Sequence[int], spec: Any) -> dict[int, int]:
        from confluent_kafka import TopicPartition

        def read() -> dict[int, int]:
            wanted = {TopicPartition(topic, p): spec for p in partitions}
            futures = self._admin.list_offsets(wanted, request_timeout=self._timeout_s)
            return {tp.partition: int(f.result().offset) for tp, f in futures.items()}

        return retrying(read, self._timeout_s)

    def _committed(self, topic: str, partitions: Sequence[int]) -> dict[int, int | None]:
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

        def read() -> dict[int, int | None]:
            request = ConsumerGroupTopicPartitions(
                self._group, [TopicPartition(topic, p) for p in partitions]
            )
            result = self._admin.list_consumer_group_offsets([request], request_timeout=self._timeout_s)
            answer = result[self._group].result()
            return {
                tp.partition: (int(tp.offset) if tp.offset >= 0 else None) for tp in answer.topic_partitions
            }

        return retrying(read, self._timeout_s)

    def _members(self) -> int | None:
        try:
            future = self._admin.describe_consumer_groups([self._group], request_timeout=self._timeout_s)
            return len(future[self._group].result().members)
        except Exception:  # a group that was never joined, or an old broker: unknown, not fatal
            return None

    def lane(self, lane: str) -> tuple[PartitionState, ...]:
        """The group's position in one lane's partitions (the gateway's backpressure reads the
        interactive lane only)."""
        from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]

        earliest: Any = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
        latest: Any = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        topic = self._topics[lane]
        partitions = self._partitions(topic)
        committed = self._committed(topic, partitions)
        starts = self._offsets(topic, partitions, earliest)
        ends = self._offsets(topic, partitions, latest)
        return tuple(PartitionState(p, committed.get(p), starts[p], ends[p]) for p in partitions)

    def snapshot(self) -> Snapshot:
        states = {lane: self.lane(lane) for lane in self._topics}
        return Snapshot(time.time(), self._group, dict(self._topics), states, self._members())


def _rates(
    now: tuple[PartitionState, ...], before: tuple[PartitionState, ...] | None, seconds: float | None
) -> tuple[float | None, float | None]:
    if before is None or not seconds or seconds <= 0:
        return None, None
    previous = {p.partition: p for p in before}
    consumed = produced = 0
    for state in now:
        old = previous.get(state.partition)
        if old is None:
            continue
        produced += state.log_end - old.log_end
        if state.committed is not None:
            consumed += state.committed - (old.committed if old.committed is not None else old.log_start)
    return max(0.0, consumed / seconds), max(0.0, produced / seconds)


def eta_seconds(lag: int, consumed_per_s: float | None, produced_per_s: float | None) -> float | None:
    """Time to drain `lag` at the net rate; 0 when there is nothing to drain, None when the
    backlog is not shrinking (or no rate is known yet)."""
    if lag == 0:
        return 0.0
    if consumed_per_s is None or produced_per_s is None:
        return None
    net = consumed_per_s - produced_per_s
    if net <= 0 or math.isclose(net, 0.0, abs_tol=1e-9):
        return None
    return lag / net


def report(
    snapshot: Snapshot,
    chart: ChartScaling,
    previous: Snapshot | None = None,
    current_replicas: int | None = None,
) -> LagReport:
    """Lag, rates (when `previous` is given) and KEDA's answer for `snapshot`.

    `current_replicas` feeds the HPA's tolerance; by default the group's member count.
    """
    window = snapshot.taken_at - previous.taken_at if previous is not None else None
    lanes: list[LaneReport] = []
    readings = []
    for lane in LANES:
        states = snapshot.partitions[lane]
        consumed, produced = _rates(states, previous.partitions.get(lane) if previous else None, window)
        lag = sum(p.lag(chart.offset_reset_policy) for p in states)
        reading: TriggerReading | None = None
        if chart.lane(lane).enabled:
            trigger = chart.trigger(lane, snapshot.topics[lane], snapshot.group)
            reading = read_trigger(
                trigger, [PartitionOffsets(p.partition, p.committed, p.log_end) for p in states]
            )
            readings.append((trigger, reading))
        lanes.append(
            LaneReport(
                lane,
                snapshot.topics[lane],
                states,
                lag,
                consumed,
                produced,
                eta_seconds(lag, consumed, produced),
                reading,
                None,
            )
        )
    current = current_replicas if current_replicas is not None else snapshot.members
    decision = desired_replicas(chart.scaled_object_spec(), readings, current)
    proposals = iter(decision.per_trigger)
    lanes = [
        replace(lane, keda_replicas=next(proposals)) if lane.keda is not None else lane for lane in lanes
    ]
    return LagReport(snapshot.group, tuple(lanes), snapshot.members, window, decision, chart)
