"""Topic names and the settings `tts-stream topics ensure` creates them with (docs/topics.md)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

DAY_MS = 24 * 60 * 60 * 1000


class Lane(enum.StrEnum):
    """Which request topic: interactive traffic goes first, bulk fills spare capacity."""

    INTERACTIVE = "interactive"
    BULK = "bulk"


class TopicNames(BaseModel):
    """The topics of the contract; every name is configurable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests: str = Field(default="tts.requests", description="interactive request lane")
    bulk: str = Field(default="tts.requests.bulk", description="backfill request lane")
    results: str = Field(default="tts.results", description="result events")
    dlq: str = Field(default="tts.requests.dlq", description="dead letters")
    backfill_checkpoints: str = Field(
        default="tts.backfill.checkpoints", description="backfill progress (compacted)"
    )
    dlq_replays: str = Field(
        default="tts.requests.dlq.replays", description="dead letters already replayed (compacted)"
    )

    def lane(self, name: str) -> str:
        """Topic of a lane by its name: "interactive" or "bulk"."""
        try:
            lane = Lane(name)
        except ValueError:
            raise ValueError(f"unknown lane {name!r}: expected 'interactive' or 'bulk'") from None
        return self.requests if lane is Lane.INTERACTIVE else self.bulk


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)
    purpose: str = ""


def default_topic_specs(
    names: TopicNames,
    *,
    partitions: int = 12,
    replication_factor: int = 3,
    min_insync_replicas: int = 2,
) -> list[TopicSpec]:
    """The recommended layout for a production cluster (see docs/topics.md for the reasoning).

    Request lanes get the same partition count because it caps the worker replicas KEDA may run.
    """
    rf = replication_factor
    isr = str(min(min_insync_replicas, rf))
    lane_config = {
        "cleanup.policy": "delete",
        "min.insync.replicas": isr,
        "max.message.bytes": "1048576",
    }
    return [
        TopicSpec(
            names.requests,
            partitions,
            rf,
            {**lane_config, "retention.ms": str(7 * DAY_MS)},
            "interactive requests; first claim on the workers",
        ),
        TopicSpec(
            names.bulk,
            partitions,
            rf,
            {**lane_config, "retention.ms": str(14 * DAY_MS)},
            "backfill requests; served with spare capacity only",
        ),
        TopicSpec(
            names.results,
            partitions,
            rf,
            {
                "cleanup.policy": "delete",
                "min.insync.replicas": isr,
                "retention.ms": str(7 * DAY_MS),
            },
            "one result event per request",
        ),
        TopicSpec(
            names.dlq,
            max(1, partitions // 4),
            rf,
            {
                "cleanup.policy": "delete",
                "min.insync.replicas": isr,
                "retention.ms": str(30 * DAY_MS),
            },
            "undecodable and crash-looping requests, original bytes plus provenance headers",
        ),
        TopicSpec(
            names.backfill_checkpoints,
            1,
            rf,
            {"cleanup.policy": "compact", "min.insync.replicas": isr, "segment.ms": str(DAY_MS)},
            "backfill progress, written in the same transaction as the requests",
        ),
        TopicSpec(
            names.dlq_replays,
            1,
            rf,
            {"cleanup.policy": "compact", "min.insync.replicas": isr, "segment.ms": str(DAY_MS)},
            "one marker per replayed dead letter, written in the same transaction as the replay",
        ),
    ]
