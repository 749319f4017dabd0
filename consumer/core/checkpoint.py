"""Committing: publishing answers and committing offsets, in the one order that loses nothing.
What the answers are — records, metrics, traces, the result index — is reporting
(consumer/core/reporting.py).

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

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from consumer.core.messages import Job, OutboundRecord, TopicPartition
from consumer.core.offsets import Committable, OffsetTracker
from consumer.core.reporting import Reporter
from consumer.errors import BrokerUnavailable, FatalError, TransactionInDoubt
from consumer.metrics import Metrics
from consumer.ports import ConsumerPort, ProducerPort, ResultIndex
from consumer.settings import Guarantee
from schemas.model import SynthesisResult

log = logging.getLogger(__name__)


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
        self._metrics = metrics
        self._unfinished_limit_s = unfinished_limit_s
        self._unfinished: _Unfinished | None = None
        self.reporter = Reporter(
            encode_result=encode_result,
            dlq_topic=dlq_topic,
            worker_id=worker_id,
            metrics=metrics,
            result_index=result_index,
            result_index_ttl_s=result_index_ttl_s,
        )

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
        self.reporter.settled(job)
        if not self.transactional:
            self._producer.produce(self.reporter.record_for(job))

    def record_for(self, job: Job) -> OutboundRecord:
        return self.reporter.record_for(job)

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
                        self._producer.produce(self.reporter.record_for(job))
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
        self.reporter.committed([job for item in items for job in item.jobs])
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
