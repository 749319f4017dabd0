"""Backfill progress: a record in a compacted Kafka topic, mirrored in a local file.

The Kafka record is the truth. It is written in the same transaction as the requests it
accounts for, so "rows 0..N-1 are in the topic" and "the checkpoint says N" become visible
together or not at all, whatever kills the process. The local file is written after each
commit: it lets a person see progress, and it catches a checkpoint topic that lost the job
(deleted or recreated), where resuming from zero would submit everything twice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producer.errors import BackfillError, KafkaUnavailable
from producer.ports import KafkaConsumerPort
from producer.subscriber import watermarks

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """How far a job is. Rows with ordinal < next_row are committed (or were invalid)."""

    job_id: str
    source_sha256: str
    topic: str
    total_rows: int
    next_row: int = 0
    submitted: int = 0  # requests produced and committed, over all runs
    skipped_invalid: int = 0
    started_at_ms: int = 0
    updated_at_ms: int = 0
    done: bool = False
    next_line: int = 0  # line number of the row at next_row, for people

    def to_json(self) -> bytes:
        return json.dumps({"version": FORMAT_VERSION, **dataclasses.asdict(self)}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Checkpoint:
        try:
            raw = json.loads(data)
            if raw.pop("version", None) != FORMAT_VERSION:
                raise ValueError("unknown checkpoint format version")
            return cls(**raw)
        except (ValueError, TypeError) as exc:
            raise BackfillError(f"unreadable checkpoint record ({exc})") from exc


class LocalCheckpointFile:
    """`<input>.tts-checkpoint.json` next to the input, unless told otherwise."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Checkpoint | None:
        try:
            return Checkpoint.from_json(self.path.read_bytes())
        except FileNotFoundError:
            return None

    def save(self, checkpoint: Checkpoint) -> None:
        # Write-then-rename: a crash leaves the old file or the new one, never half of one.
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("wb") as f:
            f.write(checkpoint.to_json())
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)


def read_kafka_checkpoint(
    consumer_factory: Any,
    consumer_config: dict[str, Any],
    topic: str,
    job_id: str,
    *,
    timeout_s: float = 30.0,
) -> Checkpoint | None:
    """The latest committed checkpoint of `job_id` (None if the topic has none).

    Reads the compacted topic from its start to its end with read_committed, so a transaction
    still open (another job mid-chunk) is waited for, and an aborted one is never seen.
    """
    config = {
        **consumer_config,
        "group.id": f"tts-backfill-checkpoint-reader-{uuid.uuid4().hex[:12]}",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
    }
    consumer: KafkaConsumerPort = consumer_factory(config)
    try:
        ends = _assign_whole_topic(consumer, topic, timeout_s)
        return _last_value_for(consumer, topic, ends, job_id.encode(), time.monotonic() + timeout_s)
    finally:
        consumer.close()


def _assign_whole_topic(consumer: KafkaConsumerPort, topic: str, timeout_s: float) -> dict[int, int]:
    """Assign every non-empty partition from its start; return each one's end offset."""
    from confluent_kafka import TopicPartition

    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
    except Exception as exc:  # KafkaException
        raise KafkaUnavailable(f"cannot read metadata of {topic}: {exc}") from exc
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise KafkaUnavailable(
            f"checkpoint topic {topic} does not exist: create it with `tts-stream topics ensure`"
        )
    ends: dict[int, int] = {}
    assigned = []
    for partition in sorted(found.partitions):
        tp = TopicPartition(topic, partition)
        low, high = watermarks(consumer, tp, timeout_s)
        if high > low:
            ends[partition] = high
            assigned.append(TopicPartition(topic, partition, low))
    if assigned:
        consumer.assign(assigned)
    return ends


def _last_value_for(
    consumer: KafkaConsumerPort, topic: str, ends: dict[int, int], key: bytes, deadline: float
) -> Checkpoint | None:
    from confluent_kafka import TopicPartition

    latest: Checkpoint | None = None
    while ends:
        if time.monotonic() > deadline:
            raise KafkaUnavailable(f"timed out reading checkpoint topic {topic}")
        for msg in consumer.consume(500, timeout=0.1):
            error = msg.error()
            if error is not None:
                if error.fatal():
                    raise KafkaUnavailable(f"reading {topic} failed: {error.str()}")
                continue
            if msg.key() == key:
                value = msg.value()
                latest = None if value is None else Checkpoint.from_json(value)
        # Commit markers take offsets but are never delivered: compare positions, not offsets.
        for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
            if tp.offset >= ends[tp.partition]:
                del ends[tp.partition]
    return latest
