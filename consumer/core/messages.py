"""What flows through the worker: inbound messages, jobs, and their outcomes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from schemas.model import SynthesisRequest, SynthesisResult
from schemas.topics import Lane

if TYPE_CHECKING:
    from consumer.core.tracing import Span


class TopicPartition(NamedTuple):
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A consumed Kafka record, as the core sees it (the adapter copies it out of librdkafka)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()
    timestamp_ms: int | None = None

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class OutboundRecord:
    """A record to produce: a result event or a dead letter."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(frozen=True, slots=True)
class Answer:
    """The job is answered by a result event."""

    result: SynthesisResult
    topic: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The job's original bytes go to the DLQ with provenance headers."""

    reason: str
    error: str
    attempts: int = 1


Outcome = Answer | DeadLetter


@dataclass(eq=False, slots=True)
class Job:
    """One consumed message from intake to commit. Identity-compared: a job is one offset."""

    message: InboundMessage
    lane: Lane
    taken_at: float = field(default_factory=time.monotonic)
    taken_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    request: SynthesisRequest | None = None
    traceparent: str | None = None
    span: Span | None = None
    cache_key: str | None = None
    attempts: int = 1
    # Set by whichever thread answers the job...
    outcome: Outcome | None = None
    # ...and only by the loop's thread once the answer is handed to the checkpointer: the
    # offset tracker looks at `settled`, so a commit can never overtake an unpublished answer.
    settled: bool = False
    # The partition was revoked before the job finished; its answer must not be published.
    abandoned: bool = False
    # The answer as produced (encoded once: the result index reuses the same bytes).
    record: OutboundRecord | None = None

    @property
    def tp(self) -> TopicPartition:
        return self.message.tp

    @property
    def offset(self) -> int:
        return self.message.offset

    @property
    def done(self) -> bool:
        return self.settled

    def log_context(self) -> dict[str, object]:
        """Log `extra` for this job: ids and coordinates, never the text."""
        return {
            "request_id": self.request.request_id if self.request is not None else None,
            "cache_key": self.cache_key,
            "topic": self.message.topic,
            "partition": self.message.partition,
            "offset": self.message.offset,
        }
