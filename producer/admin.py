"""Idempotent topic creation: `tts-stream topics ensure`.

Creates what is missing with the documented settings, leaves what exists alone, and reports
every difference it finds on existing topics. A partition count that differs is reported as a
problem (the caller exits non-zero): it changes key-to-partition mapping and the KEDA replica
cap, so it must never be accepted silently. Config differences are reported, not changed:
an operator may have tuned them on purpose.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
    OffsetSpec,
)

from producer.ports import transient
from schemas.topics import TopicSpec

log = logging.getLogger(__name__)


class TopicState(enum.StrEnum):
    CREATED = "created"
    OK = "ok"
    DIFFERS = "differs"  # exists; some config differs (reported, not changed)
    WRONG_PARTITIONS = "wrong-partitions"  # exists with another partition count: a problem


@dataclass(frozen=True, slots=True)
class TopicReport:
    name: str
    state: TopicState
    partitions: int
    expected_partitions: int
    config_differences: dict[str, tuple[str | None, str]] = field(default_factory=dict)

    @property
    def is_problem(self) -> bool:
        return self.state is TopicState.WRONG_PARTITIONS

    def describe(self) -> str:
        if self.state is TopicState.CREATED:
            return f"{self.name}: created with {self.partitions} partitions"
        if self.state is TopicState.WRONG_PARTITIONS:
            return (
                f"{self.name}: exists with {self.partitions} partitions but {self.expected_partitions} "
                "are expected; change the setting or the topic deliberately (kafka-topics --alter)"
            )
        text = f"{self.name}: exists with {self.partitions} partitions"
        for key, (actual, wanted) in sorted(self.config_differences.items()):
            text += f"; {key}={actual} (recommended {wanted})"
        return text


class TopicAdminError(Exception):
    """The cluster refused or could not be reached while ensuring topics."""


class TopicMissing(TopicAdminError):
    """A topic the operation needs does not exist."""


def ensure_topics(
    admin_config: dict[str, Any], specs: Sequence[TopicSpec], *, timeout_s: float = 30.0
) -> list[TopicReport]:
    admin = AdminClient(admin_config)
    try:
        existing = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise TopicAdminError(f"cannot reach Kafka to list topics: {exc}") from exc

    missing = [spec for spec in specs if spec.name not in existing]
    reports: dict[str, TopicReport] = {}
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions,
                    replication_factor=s.replication_factor,
                    config=s.config,
                )
                for s in missing
            ],
            operation_timeout=timeout_s,
            request_timeout=timeout_s,
        )
        for spec in missing:
            try:
                futures[spec.name].result()
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # lost a race with another ensure
                    raise TopicAdminError(f"creating {spec.name} failed: {exc.args[0].str()}") from exc
            reports[spec.name] = TopicReport(spec.name, TopicState.CREATED, spec.partitions, spec.partitions)
            log.info(
                "created topic %s",
                spec.name,
                extra={"topic": spec.name, "partitions": spec.partitions},
            )

    present = [spec for spec in specs if spec.name in existing]
    if present:
        configs = _describe_configs(admin, [s.name for s in present], timeout_s)
        for spec in present:
            partitions = len(existing[spec.name].partitions)
            actual = configs.get(spec.name, {})
            differences = {
                key: (actual.get(key), wanted)
                for key, wanted in spec.config.items()
                if actual.get(key) != wanted
            }
            if partitions != spec.partitions:
                state = TopicState.WRONG_PARTITIONS
            elif differences:
                state = TopicState.DIFFERS
            else:
                state = TopicState.OK
            reports[spec.name] = TopicReport(spec.name, state, partitions, spec.partitions, differences)
    return [reports[spec.name] for spec in specs]


def _describe_configs(admin: AdminClient, names: list[str], timeout_s: float) -> dict[str, dict[str, str]]:
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    out: dict[str, dict[str, str]] = {}
    for resource, future in admin.describe_configs(resources, request_timeout=timeout_s).items():
        try:
            entries = future.result()
        except KafkaException as exc:
            raise TopicAdminError(f"describing {resource.name} failed: {exc}") from exc
        out[resource.name] = {key: entry.value for key, entry in entries.items()}
    return out


# ----------------------------------------------------------------------------- init-group --


class PartitionInitState(enum.StrEnum):
    INITIALISED = "initialised"  # had no committed offset; now the log end
    KEPT = "kept"  # already had a committed offset: left alone
    GROUP_COMMITTED = "group-committed"  # no offset here, but the group has some: left alone
    GROUP_ACTIVE = "group-active"  # the group has members; they own the offsets


@dataclass(frozen=True, slots=True)
class PartitionInit:
    topic: str
    partition: int
    state: PartitionInitState
    offset: int | None

    def describe(self) -> str:
        where = f"{self.topic}[{self.partition}]"
        if self.state is PartitionInitState.INITIALISED:
            return f"{where}: committed the log end, offset {self.offset}"
        if self.state is PartitionInitState.KEPT:
            return f"{where}: already committed at offset {self.offset}; left alone"
        if self.state is PartitionInitState.GROUP_COMMITTED:
            return f"{where}: no committed offset, but the group has others; left alone"
        return f"{where}: the group has active members; they own its offsets"


def init_group_offsets(
    admin_config: dict[str, Any], group: str, topics: Sequence[str], *, timeout_s: float = 30.0
) -> list[PartitionInit]:
    """Commit the log-end offset for every partition of `topics`, but only for a group that has
    no committed offset at all (on any topic); a group with any is left untouched. Idempotent.

    Why: a consumer group that has never committed reports no lag, so KEDA (which scales on lag)
    would not start a worker for the first messages. With a committed offset at the log end,
    every message produced afterwards is lag from the start. The end used is the last stable
    offset (read_committed), so a transaction still open at this moment is not skipped.
    Why only a new group: in a group that already consumed, a partition without an offset is one
    added later or not reached yet, and its records are real work that the workers' reset policy
    will pick up; committing its end would skip them silently.
    """
    admin = AdminClient(admin_config)
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise TopicAdminError(f"cannot reach Kafka to list topics: {exc}") from exc
    partitions: list[TopicPartition] = []
    for topic in topics:
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise TopicMissing(f"topic {topic} does not exist: run `tts-stream topics ensure` first")
        partitions += [TopicPartition(topic, p) for p in sorted(found.partitions)]

    try:
        description = admin.describe_consumer_groups([group], request_timeout=timeout_s)[group].result()
        state = description.state
        committed_future = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, partitions)], request_timeout=timeout_s
        )[group]
        committed = {(tp.topic, tp.partition): tp.offset for tp in committed_future.result().topic_partitions}
        # No partitions given: every offset the group holds, on any topic.
        everything = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)], request_timeout=timeout_s
        )[group].result()
        group_committed = any(tp.offset >= 0 for tp in everything.topic_partitions or [])
    except KafkaException as exc:
        raise TopicAdminError(f"cannot read the offsets of group {group}: {exc.args[0].str()}") from exc

    reports: list[PartitionInit] = []
    to_commit: list[TopicPartition] = []
    active = state not in (ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD, ConsumerGroupState.UNKNOWN)
    fresh = not group_committed and not active
    ends = _last_stable_offsets(admin, partitions, timeout_s) if fresh else {}
    for tp in partitions:
        offset = committed.get((tp.topic, tp.partition), -1)
        if offset >= 0:
            reports.append(PartitionInit(tp.topic, tp.partition, PartitionInitState.KEPT, offset))
        elif active:
            reports.append(PartitionInit(tp.topic, tp.partition, PartitionInitState.GROUP_ACTIVE, None))
        elif group_committed:
            reports.append(PartitionInit(tp.topic, tp.partition, PartitionInitState.GROUP_COMMITTED, None))
        else:
            end = ends[(tp.topic, tp.partition)]
            to_commit.append(TopicPartition(tp.topic, tp.partition, end))
            reports.append(PartitionInit(tp.topic, tp.partition, PartitionInitState.INITIALISED, end))
    if to_commit:
        try:
            admin.alter_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group, to_commit)], request_timeout=timeout_s
            )[group].result()
        except KafkaException as exc:
            error = exc.args[0]
            if error.name() in ("UNKNOWN_MEMBER_ID", "REBALANCE_IN_PROGRESS", "GROUP_NOT_EMPTY"):
                # A worker joined between our check and the commit: its offsets win.
                return [
                    PartitionInit(r.topic, r.partition, PartitionInitState.GROUP_ACTIVE, None)
                    if r.state is PartitionInitState.INITIALISED
                    else r
                    for r in reports
                ]
            raise TopicAdminError(f"committing offsets for group {group} failed: {error.str()}") from exc
        log.info(
            "initialised %d partition offset(s) of group %s",
            len(to_commit),
            group,
            extra={"group": group, "partitions": len(to_commit)},
        )
    return reports


def _last_stable_offsets(
    admin: AdminClient, partitions: list[TopicPartition], timeout_s: float
) -> dict[tuple[str, int], int]:
    """The last stable offset of each partition. Retries the broker's transient answers: the
    Helm chart runs init-group right after the topics are created, while leaders are elected."""
    ends: dict[tuple[str, int], int] = {}
    pending = list(partitions)
    deadline = time.monotonic() + timeout_s
    while pending:
        futures = admin.list_offsets(
            {tp: OffsetSpec.latest() for tp in pending},  # type: ignore[no-untyped-call]
            isolation_level=IsolationLevel.READ_COMMITTED,
            request_timeout=timeout_s,
        )
        retry: list[TopicPartition] = []
        for tp, future in futures.items():
            try:
                ends[(tp.topic, tp.partition)] = int(future.result().offset)
            except KafkaException as exc:
                error = exc.args[0]
                if not transient(error) or time.monotonic() >= deadline:
                    raise TopicAdminError(
                        f"cannot read the end offset of {tp.topic}[{tp.partition}]: {error.str()}"
                    ) from exc
                retry.append(TopicPartition(tp.topic, tp.partition))
        pending = retry
        if pending:
            time.sleep(0.2)
    return ends
