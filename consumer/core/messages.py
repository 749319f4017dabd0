"""What flows through the worker: inbound messages, jobs, and their outcomes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from schemas.model import SynthesisRequest, SynthesisResult
from schemas.topics import Lane

if TYPE_CHECKING:
    from consumer.core.tracing import Span

log = logging.getLogger(__name__)

# Makes "is it answered yet?" and the answer one step when two stages race for one job. Held
# for a field check and an assignment: cheaper than a lock per job, never contended for long.
_ANSWERING = threading.Lock()


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


def outcome_kind(outcome: Outcome) -> str:
    """For logs: what kind of answer, never its text."""
    if isinstance(outcome, DeadLetter):
        return f"dead letter ({outcome.reason})"
    error = outcome.result.error
    return "succeeded" if error is None else f"failed ({error.code.value})"


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
    # Set once, by whichever thread answers the job (`answer`)...
    _outcome: Outcome | None = field(default=None, init=False)
    # ...and only by the loop's thread once the answer is handed to the checkpointer: the
    # offset tracker looks at `settled`, so a commit can never overtake an unpublished answer.
    settled: bool = False
    # The partition was revoked before the job finished; its answer must not be published.
    abandoned: bool = False
    # The answer as produced (encoded once: the result index reuses the same bytes).
    record: OutboundRecord | None = None

    @property
    def outcome(self) -> Outcome | None:
        return self._outcome

    def answer(self, outcome: Outcome) -> bool:
        """The one way a job gets its answer: every request gets exactly one. A second answer is
        refused and logged as the bug it is (False); the first stands, since it may already be
        on its way to the caller."""
        with _ANSWERING:
            first = self._outcome
            if first is None:
                self._outcome = outcome
                return True
        log.error(
            "a second answer to one request is refused; the first stands",
            extra={**self.log_context(), "first": outcome_kind(first), "second": outcome_kind(outcome)},
        )
        return False

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
