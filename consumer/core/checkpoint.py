"""Publishing answers and committing offsets, in the one order that loses nothing.

exactly_once (one Kafka transaction per checkpoint):
  1. take each partition's finished prefix (offset tracker);
  2. begin a transaction; produce the prefix's result events and dead letters;
  3. add the prefix's next offsets to the transaction (send_offsets_to_transaction);
  4. commit the transaction. Results and offsets become visible together or not at all: a
     read_committed subscriber sees exactly one result per request, across crashes. Answers of
     jobs finished *after* an unfinished head wait for the head (they would otherwise be
     re-consumed and answered twice after a crash).
  On failure the transaction is aborted and nothing is released: the next checkpoint retries.
  A transaction whose end is not known yet is finished before any other begins:
  - a commit in doubt (timed out: it may have committed) is committed again, never aborted and
    never re-published in a new transaction, which would answer its requests twice if the first
    commit went through; once it answers, its jobs are released (committed) or aborted;
  - an abort that timed out is aborted again (librdkafka resumes it) before the next begin.
  A transaction still unfinished after `unfinished_limit_s` is FatalError: the restart's
  init_transactions settles it on the broker, and the consumer reads what it really committed.

at_least_once (cheaper: no transaction markers, plain consumers):
  1. produce each answer as soon as it is settled (fast tail results are not held back);
  2. at a checkpoint, flush: wait for every produced record to be acknowledged;
  3. commit the finished prefix's offsets synchronously.
  A crash between 2 and 3 re-delivers those requests: they are answered again (from the cache).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from consumer.core.messages import Answer, DeadLetter, Job, OutboundRecord, TopicPartition
from consumer.core.offsets import Committable, OffsetTracker
from consumer.errors import BrokerUnavailable, CacheUnavailable, FatalError, TransactionInDoubt
from consumer.metrics import Metrics
from consumer.ports import ConsumerPort, ProducerPort, ResultIndex
from consumer.settings import Guarantee
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


@dataclass
class _Unfinished:
    """A transaction whose end we have not seen, the items it carries and how it must end."""

    items: list[Committable]
    finish_by: Literal["commit", "abort"]
    since: float


class Checkpointer:
    def __init__(
        self,
        producer: ProducerPort,
        consumer: ConsumerPort,
        *,
        guarantee: Guarantee,
        encode_result: Callable[[SynthesisResult, str], bytes],
        dlq_topic: str,
        worker_id: str,
        metrics: Metrics,
        result_index: ResultIndex | None = None,
        result_index_ttl_s: int = 0,
        unfinished_limit_s: float = 60.0,
    ) -> None:
        self._producer = producer
        self._consumer = consumer
        self._guarantee = guarantee
        self._encode_result = encode_result
        self._dlq_topic = dlq_topic
        self._worker_id = worker_id
        self._metrics = metrics
        self._index = result_index if result_index_ttl_s > 0 else None
        self._index_ttl_s = result_index_ttl_s
        self._unfinished_limit_s = unfinished_limit_s
        self._unfinished: _Unfinished | None = None

    @property
    def transactional(self) -> bool:
        return self._guarantee is Guarantee.EXACTLY_ONCE

    def settle(self, job: Job) -> None:
        """The loop's thread takes a finished job: from now on its offset may be committed."""
        if job.abandoned:
            if job.span is not None:
                job.span.end("abandoned", {})
            return  # revoked meanwhile: the partition's new owner answers it
        job.settled = True
        label = outcome_label(job)
        self._trace(job, label)
        log.debug("answered", extra={**job.log_context(), "outcome": label})
        self._metrics.requests_by[job.lane.value, label].inc()
        if job.request is not None and isinstance(job.outcome, Answer):
            seconds = max(0.0, time.time() - job.request.created_at_ms / 1000.0)
            self._metrics.end_to_end_by[job.lane.value].observe(seconds)
        if isinstance(job.outcome, DeadLetter):
            self._metrics.dlq.labels(reason=job.outcome.reason).inc()
        if not self.transactional:
            self._producer.produce(self.record_for(job))

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

    def commit(self, tracker: OffsetTracker) -> int:
        """Publish and commit every partition's finished prefix; returns the jobs committed.

        Raises BrokerUnavailable (nothing new was committed; retry later: TransactionInDoubt when
        an earlier commit's outcome is still unknown), ProducerFenced or FatalError.
        """
        if self._unfinished is not None:
            committed = self._finish_unfinished(tracker)
            if committed:
                return committed
        items = tracker.peek_committable()
        if not items:
            return 0
        offsets = self._offsets_for(items)
        started = time.perf_counter()
        if self.transactional:
            self._producer.begin()
            try:
                for item in items:
                    for job in item.jobs:
                        self._producer.produce(self.record_for(job))
                self._producer.send_offsets(offsets, self._consumer.group_metadata())
            except BrokerUnavailable:
                self._abort(items)
                raise
            try:
                self._producer.commit()
            except TransactionInDoubt:
                self._unfinished = _Unfinished(items, "commit", time.monotonic())
                raise
            except BrokerUnavailable:
                self._abort(items)
                raise
        else:
            self._producer.flush(30.0)
            self._consumer.commit(offsets)
        self._metrics.commit_latency.observe(time.perf_counter() - started)
        return self._release(tracker, items)

    def _release(self, tracker: OffsetTracker, items: list[Committable]) -> int:
        tracker.release(items)
        self._index_results([job for item in items for job in item.jobs])
        count = sum(len(item.jobs) for item in items)
        log.debug("committed", extra={"jobs": count, "partitions": len(items)})
        return count

    def _abort(self, items: list[Committable]) -> None:
        try:
            self._producer.abort()
        except BrokerUnavailable as exc:
            # Never begin over it: librdkafka refuses ("conflicting abort_transaction call"), and
            # would for ever. The next checkpoint aborts again, which resumes this abort.
            log.warning("aborting the transaction did not finish, will abort again: %s", exc)
            self._unfinished = _Unfinished(items, "abort", time.monotonic())

    def _finish_unfinished(self, tracker: OffsetTracker) -> int:
        """End the transaction left unfinished: returns the jobs it committed (0 when it was
        aborted); raises BrokerUnavailable while its end is still unknown."""
        unfinished = self._unfinished
        assert unfinished is not None
        waited_s = time.monotonic() - unfinished.since
        if waited_s > self._unfinished_limit_s:
            raise FatalError(
                f"a transaction's {unfinished.finish_by} has not finished after {waited_s:.0f}s; "
                "exiting so the restart fences it and reads what was really committed"
            )
        if unfinished.finish_by == "abort":
            self._producer.abort()  # BrokerUnavailable: still aborting, we stay unfinished
            self._unfinished = None
            log.info("the unfinished transaction is aborted; its requests go out again")
            return 0
        try:
            self._producer.commit()
        except TransactionInDoubt:
            raise
        except BrokerUnavailable:
            # The commit failed for certain: nothing of it is visible, abort and publish again.
            self._unfinished = None
            self._abort(unfinished.items)
            raise
        self._unfinished = None
        log.info("the transaction in doubt did commit")
        return self._release(tracker, unfinished.items)

    def _offsets_for(self, items: list[Committable]) -> dict[TopicPartition, int]:
        """The finished prefix's next offset; where the prefix is everything taken from the
        partition, the consumer's position instead, which also steps over transaction markers
        (committing "last + 1" would leave a lag of 1 behind a transactional producer forever,
        and KEDA could never scale the lane to zero)."""
        offsets = {item.tp: item.offset for item in items}
        complete = [item.tp for item in items if item.complete]
        if complete:
            for tp, position in self._consumer.positions(complete).items():
                offsets[tp] = max(offsets[tp], position)
        return offsets

    def _index_results(self, jobs: list[Job]) -> None:
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
