"""Worker errors, grouped by what the loop does about them.

* `PermanentError`: this message can never succeed; answer it (failed result or DLQ), commit, move on.
* `RetryableError`: a dependency is down or slow; pause, back off, retry. Never fails a request.
* `FatalError`: the process cannot continue (bad configuration, fenced producer); exit non-zero
  so Kubernetes restarts the pod and alerts fire.

Adapters translate their library's exceptions into these in one place each (`raise ... from`).
"""

from __future__ import annotations

from schemas.model import ErrorCode


class WorkerError(Exception):
    """Base of every error raised by the `consumer` package."""


class PermanentError(WorkerError):
    """The input is at fault; retrying cannot help."""


class RetryableError(WorkerError):
    """A dependency failed in a way that may pass."""


class FatalError(WorkerError):
    """The worker must stop."""


class StorageUnavailable(RetryableError):
    """Object storage did not answer or refused with a server error."""


class ObjectNotFound(PermanentError):
    """The object does not exist."""


class ObjectTooLarge(PermanentError):
    """The object is larger than the caller allows."""


class StorageAccessDenied(FatalError):
    """Object storage refused our credentials: a configuration error, not an outage. Retrying
    would stall every request behind it; stopping makes the pod restart and alerts fire."""


class CacheUnavailable(RetryableError):
    """Redis did not answer."""


class BrokerUnavailable(RetryableError):
    """Kafka did not accept a produce, commit or transaction in time."""


class TransactionInDoubt(BrokerUnavailable):
    """A transaction's commit was sent and its outcome is not known yet (a timeout, a moving
    coordinator). The only safe next step is to ask again by committing again: aborting is refused
    while the commit is in flight, and publishing its records in a new transaction would answer
    them twice if the first one did commit."""


class ProducerFenced(FatalError):
    """Another instance took over our transactional id: we are a zombie and must stop."""


class StageFailed(FatalError):
    """A pipeline stage met an error it cannot pin on the work it holds: its own bookkeeping is
    in doubt, and carrying on could leave work that nobody answers."""


class ConfigurationError(FatalError):
    """The settings are contradictory or incomplete."""


class VoiceResolutionError(PermanentError):
    """A voice reference that cannot be used; `code` is the result's ErrorCode."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
