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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic  # type: ignore[attr-defined]

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
