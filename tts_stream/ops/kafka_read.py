"""Bounded reads of a topic: from an offset or a time up to the end as it was when asked.

Operator commands read the dead-letter, marker and results topics without joining any consumer
group (nothing is committed, no rebalance of anyone's group), and stop at the end offsets taken
when the read started, so a busy topic cannot keep a command running forever.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from tts_stream.ops.errors import NotFound, ServiceUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str | None:
        """The last value of header `name` as text (provenance headers are UTF-8)."""
        found: bytes | None = None
        for key, value in self.headers:
            if key == name:
                found = value
        return None if found is None else found.decode("utf-8", "replace")

    @classmethod
    def from_message(cls, message: Any) -> Record:
        kind, timestamp = message.timestamp()
        raw_headers = message.headers() or []
        return cls(
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            timestamp_ms=timestamp if kind != 0 and timestamp >= 0 else None,
            key=message.key(),
            value=message.value() or b"",
            headers=tuple((k, v or b"") for k, v in raw_headers),
        )


class TopicReader:
    """A group-less consumer for bounded reads. Use as a context manager."""

    def __init__(self, config: dict[str, Any], *, read_committed: bool = True, timeout_s: float = 15.0):
        self.timeout_s = timeout_s
        self._consumer = Consumer(
            {
                **config,
                "group.id": f"tts-ops-{uuid.uuid4().hex[:12]}",  # never used to commit
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed" if read_committed else "read_uncommitted",
            }
        )

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._consumer.close()

    # ------------------------------------------------------------------ metadata

    def partitions(self, topic: str) -> list[int]:
        try:
            metadata = self._consumer.list_topics(topic, timeout=self.timeout_s)
        except KafkaException as exc:
            raise ServiceUnavailable(f"Kafka did not answer for topic {topic}: {exc}") from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise NotFound(f"topic {topic} does not exist (tts-stream topics ensure creates it)")
        return sorted(found.partitions)

    def end_offsets(self, topic: str, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        """(low, high) watermark of each partition, asked of the broker now."""
        out: dict[int, tuple[int, int]] = {}
        try:
            for partition in partitions:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=self.timeout_s, cached=False
                )
                out[partition] = (int(low), int(high))
        except KafkaException as exc:
            raise ServiceUnavailable(f"Kafka did not report the offsets of {topic}: {exc}") from exc
        return out

    def offsets_at(self, topic: str, partitions: Sequence[int], timestamp_ms: int) -> dict[int, int]:
        """The first offset at or after `timestamp_ms` per partition (-1: none yet)."""
        wanted = [TopicPartition(topic, p, timestamp_ms) for p in partitions]
        try:
            found = self._consumer.offsets_for_times(wanted, timeout=self.timeout_s)
        except KafkaException as exc:
            raise ServiceUnavailable(f"Kafka did not look up times in {topic}: {exc}") from exc
        return {tp.partition: int(tp.offset) for tp in found}

    # ------------------------------------------------------------------ reading

    def read(
        self,
        topic: str,
        *,
        since_ms: int | None = None,
        starts: dict[int, int] | None = None,
        partitions: Sequence[int] | None = None,
    ) -> Generator[Record, None, None]:
        """Every record from the start positions up to the end offsets taken now.

        Starts are `starts` (explicit offsets), else the first offset at `since_ms`, else the
        beginning. Order is per partition; partitions interleave.
        """
        parts = list(partitions) if partitions is not None else self.partitions(topic)
        ends = self.end_offsets(topic, parts)
        if starts is None:
            if since_ms is not None:
                at = self.offsets_at(topic, parts, since_ms)
                starts = {p: (at[p] if at.get(p, -1) >= 0 else ends[p][1]) for p in parts}
            else:
                starts = dict.fromkeys(parts, OFFSET_BEGINNING)
        pending = {p for p in parts if ends[p][1] > max(starts.get(p, 0), ends[p][0])}
        if not pending:
            return
        self._consumer.assign([TopicPartition(topic, p, starts.get(p, OFFSET_BEGINNING)) for p in pending])
        deadline = time.monotonic() + self.timeout_s
        try:
            while pending:
                if time.monotonic() > deadline:
                    raise ServiceUnavailable(
                        f"reading {topic} did not reach the end within {self.timeout_s:.0f} s "
                        f"(partitions {sorted(pending)} still open)"
                    )
                record = self._next(topic, pending)
                if record is None:
                    continue
                deadline = time.monotonic() + self.timeout_s  # progress: the clock restarts
                if record.offset >= ends[record.partition][1] - 1:
                    pending.discard(record.partition)
                if record.offset < ends[record.partition][1]:
                    yield record
        finally:
            self._consumer.unassign()

    def _next(self, topic: str, pending: set[int]) -> Record | None:
        """The next record of a pending partition, if one arrives soon; an end-of-partition
        event takes its partition off `pending`."""
        message = self._consumer.poll(0.5)
        if message is None:
            return None
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                pending.discard(message.partition())
                return None
            if error.fatal() or not error.retriable():
                raise ServiceUnavailable(f"reading {topic}: {error.str()}")
            return None
        record = Record.from_message(message)
        return record if record.partition in pending else None

    def read_one(self, topic: str, partition: int, offset: int) -> Record:
        """The record at exactly `topic`/`partition`/`offset`; NotFound when there is none."""
        parts = self.partitions(topic)
        if partition not in parts:
            raise NotFound(f"{topic} has no partition {partition} (it has {len(parts)})")
        low, high = self.end_offsets(topic, [partition])[partition]
        if not low <= offset < high:
            raise NotFound(
                f"{topic} partition {partition} holds offsets {low}..{high - 1}; {offset} is not there"
                + (" (expired by retention)" if offset < low else "")
            )
        records = self.read(topic, starts={partition: offset}, partitions=[partition])
        try:
            first = next(records, None)
        finally:
            records.close()
        if first is not None and first.offset == offset:
            return first
        raise NotFound(
            f"{topic} partition {partition} has no record at offset {offset} (a transaction marker)"
        )
