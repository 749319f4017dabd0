"""Errors of the producer side: one base, grouped by phase (build, deliver, wait, backfill)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from schemas.errors import ValidationError

if TYPE_CHECKING:
    from schemas.model import SynthesisResult


class ProducerError(Exception):
    """Base of every error raised by the `producer` package."""


class InvalidRequest(ProducerError, ValueError):
    """A request breaks the contract's rules; nothing was produced. Lists every problem."""

    def __init__(self, problems: Sequence[ValidationError]) -> None:
        if not problems:
            raise ValueError("InvalidRequest needs at least one problem")
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = list(problems)

    @property
    def field(self) -> str:
        """The field of the first problem, for callers that show one."""
        return self.problems[0].field

    @property
    def fields(self) -> list[str]:
        return [p.field for p in self.problems]

    @classmethod
    def one(cls, field: str, message: str, code: str = "INVALID_REQUEST") -> InvalidRequest:
        return cls([ValidationError(code, field, message)])


class UnsafeProducerConfig(ProducerError, ValueError):
    """Raw librdkafka properties that would weaken delivery: acks other than all, idempotence
    off (a retried batch written twice), more than 5 requests in flight (reordering)."""


class KafkaUnavailable(ProducerError):
    """The brokers could not be reached, or a topic we need does not exist."""


class KafkaRefused(KafkaUnavailable):
    """A broker answered but refused this client: wrong credentials, an untrusted certificate.
    Retrying does not help; the message carries librdkafka's reason (never the secret)."""


class ProducerClosed(ProducerError):
    """The client was used after `close()`."""


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """One message the brokers did not acknowledge."""

    request_id: str
    topic: str
    code: str  # librdkafka's error name, e.g. _MSG_TIMED_OUT, TOPIC_AUTHORIZATION_FAILED
    reason: str
    retriable: bool

    def __str__(self) -> str:
        return f"{self.request_id} -> {self.topic}: {self.code} ({self.reason})"


class DeliveryFailed(ProducerError):
    """Messages were not acknowledged by the brokers. Raised by `flush()` and on context exit.

    Every request id listed here may be submitted again; ids not listed were delivered.
    """

    def __init__(self, failures: Sequence[DeliveryFailure], *, undelivered: int = 0) -> None:
        shown = "; ".join(str(f) for f in failures[:3])
        more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
        pending = f"; {undelivered} still unacknowledged when flush timed out" if undelivered else ""
        super().__init__(f"{len(failures)} message(s) failed: {shown}{more}{pending}".replace(": ;", ":"))
        self.failures = list(failures)
        self.undelivered = undelivered

    @property
    def request_ids(self) -> list[str]:
        return [f.request_id for f in self.failures]


class ResultTimeout(ProducerError, TimeoutError):
    """Not every awaited result arrived in time. Carries what did arrive."""

    def __init__(self, results: Mapping[str, SynthesisResult], missing: frozenset[str]) -> None:
        super().__init__(f"{len(missing)} of {len(results) + len(missing)} result(s) did not arrive in time")
        self.results = dict(results)
        self.missing = missing


class BackfillError(ProducerError):
    """A backfill job cannot start or continue (bad input file, changed file, checkpoint trouble)."""


class BackfillInterrupted(BackfillError):
    """Stopped by Ctrl-C or SIGTERM before anything was submitted."""
