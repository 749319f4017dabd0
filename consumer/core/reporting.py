"""Reporting what became of each request: the result or dead-letter record it is answered
with, its metrics and the end of its trace span, and — once a commit made the results
visible — the result index in Redis.

Committing (consumer/core/checkpoint.py) decides *when* these records are produced and which
offsets go with them; this module decides *what* they are and what is counted. It never talks
to Kafka.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence

from consumer.core.messages import Answer, DeadLetter, Job, OutboundRecord
from consumer.errors import CacheUnavailable
from consumer.metrics import Metrics
from consumer.ports import ResultIndex
from schemas import dlq
from schemas.headers import TRACEPARENT
from schemas.model import ErrorCode, SynthesisResult

log = logging.getLogger(__name__)

# Key, value and original headers of a dead letter stay under this, so that with the provenance
# headers it fits librdkafka's default message.max.bytes (1,000,000) and any topic's default.
DLQ_RECORD_BUDGET_BYTES = 990_000


def _record_bytes(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> int:
    return len(key or b"") + len(value) + sum(len(k) + len(v) for k, v in headers)


# Codes that mean "the caller sent something we will never accept" (reported as `invalid`).
CLIENT_ERRORS = frozenset(
    {
        ErrorCode.INVALID_REQUEST,
        ErrorCode.TEXT_TOO_LONG,
        ErrorCode.UNSUPPORTED_LANGUAGE,
        ErrorCode.UNSUPPORTED,
        ErrorCode.VOICE_NOT_FOUND,
        ErrorCode.VOICE_NOT_ALLOWED,
        ErrorCode.VOICE_INVALID,
        ErrorCode.REPLY_TOPIC_NOT_ALLOWED,
    }
)


def outcome_label(job: Job) -> str:
    outcome = job.outcome
    if isinstance(outcome, DeadLetter):
        return "dead_lettered"
    assert isinstance(outcome, Answer)
    result = outcome.result
    if result.succeeded:
        return "succeeded"
    assert result.error is not None
    if result.error.code is ErrorCode.EXPIRED:
        return "expired"
    if result.error.code in CLIENT_ERRORS:
        return "invalid"
    return "failed"


class Reporter:
    def __init__(
        self,
        *,
        encode_result: Callable[[SynthesisResult, str], bytes],
        dlq_topic: str,
        worker_id: str,
        metrics: Metrics,
        result_index: ResultIndex | None = None,
        result_index_ttl_s: int = 0,
    ) -> None:
        self._encode_result = encode_result
        self._dlq_topic = dlq_topic
        self._worker_id = worker_id
        self._metrics = metrics
        self._index = result_index if result_index_ttl_s > 0 else None
        self._index_ttl_s = result_index_ttl_s

    def settled(self, job: Job) -> None:
        """Count, log and end the trace of a job whose answer is final."""
        label = outcome_label(job)
        self._trace(job, label)
        log.debug("answered", extra={**job.log_context(), "outcome": label})
        self._metrics.requests_by[job.lane.value, label].inc()
        if job.request is not None and isinstance(job.outcome, Answer):
            seconds = max(0.0, time.time() - job.request.created_at_ms / 1000.0)
            self._metrics.end_to_end_by[job.lane.value].observe(seconds)
        if isinstance(job.outcome, DeadLetter):
            self._metrics.dlq.labels(reason=job.outcome.reason).inc()

    def _trace(self, job: Job, label: str) -> None:
        if job.span is None:
            return
        attributes: dict[str, str | int | bool] = {"tts.outcome": label}
        if job.request is not None:
            attributes["tts.request_id"] = job.request.request_id
        if job.cache_key is not None:
            attributes["tts.cache_key"] = job.cache_key
        if isinstance(job.outcome, Answer):
            attributes["tts.cache_hit"] = job.outcome.result.cache_hit
            if job.outcome.result.error is not None:
                attributes["tts.error_code"] = job.outcome.result.error.code.value
        job.span.end(label, attributes)

    def record_for(self, job: Job) -> OutboundRecord:
        """The record that answers the job, encoded once (the result index reuses its bytes)."""
        if job.record is None:
            job.record = self._record(job)
        return job.record

    def _record(self, job: Job) -> OutboundRecord:
        outcome = job.outcome
        if isinstance(outcome, Answer):
            result = outcome.result
            headers = [(TRACEPARENT, result.traceparent.encode())] if result.traceparent else []
            return OutboundRecord(
                outcome.topic, result.request_id.encode(), self._encode_result(result, outcome.topic), headers
            )
        assert isinstance(outcome, DeadLetter)
        message = job.message
        provenance = {
            dlq.SOURCE_TOPIC: message.topic,
            dlq.SOURCE_PARTITION: str(message.partition),
            dlq.SOURCE_OFFSET: str(message.offset),
            dlq.SOURCE_TIMESTAMP: str(message.timestamp_ms or ""),
            dlq.REASON: outcome.reason,
            dlq.ERROR: outcome.error[:1000],
            dlq.FAILED_AT: str(int(time.time() * 1000)),
            dlq.WORKER: self._worker_id,
            dlq.ATTEMPTS: str(outcome.attempts),
        }
        original = [(k, v) for k, v in message.headers if k not in provenance]
        key, value = message.key, message.value or b""
        if _record_bytes(key, value, original) > DLQ_RECORD_BUDGET_BYTES:
            # The copy plus provenance would not fit in a Kafka message (the original was at the
            # lane's size limit): publishing it would fail on every retry and stall the worker.
            sizes = f"key {len(key or b'')} B, value {len(value)} B, {len(original)} headers"
            provenance[dlq.TRUNCATED] = sizes
            provenance[dlq.ORIGINAL_SHA256] = hashlib.sha256(value).hexdigest()
            original = []
            key = key[:1024] if key else key
            value = value[: DLQ_RECORD_BUDGET_BYTES - len(key or b"")]
        headers = original + [(k, v.encode("utf-8")) for k, v in provenance.items()]
        return OutboundRecord(self._dlq_topic, key, value, headers)

    def committed(self, jobs: Sequence[Job]) -> None:
        """After the commit: only results a read_committed subscriber can see are indexed."""
        if self._index is None:
            return
        entries = []
        for job in jobs:
            if isinstance(job.outcome, Answer):
                entries.append((job.outcome.result.request_id, self.record_for(job).value))
        if not entries:
            return
        try:
            self._index.record(entries, self._index_ttl_s)
        except CacheUnavailable as exc:
            self._metrics.dependency_errors.labels(dependency="redis").inc()
            log.debug("result index not updated: %s", exc)
