"""The poll loop: a handful of calls, none of which waits on the model.

    consume → take (intake) → settle finished jobs → commit → flow control → heartbeat

Synthesis runs in the pipeline's threads, so `max.poll.interval.ms` never measures model
time. Rebalance callbacks run inside `consume` on this thread; revocation and shutdown drain
in-flight work within the configured window, commit, and release what they cannot finish.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from consumer.core.checkpoint import Checkpointer
from consumer.core.flow import FlowController, FlowInputs
from consumer.core.intake import DecodeRetryLater, Intake
from consumer.core.messages import InboundMessage, Job, TopicPartition
from consumer.core.offsets import OffsetTracker
from consumer.core.pipeline import Pipeline, PipelineProgress
from consumer.core.retry import RetryPolicies
from consumer.errors import BrokerUnavailable
from consumer.metrics import Metrics
from consumer.ports import ConsumerPort
from schemas.topics import Lane

log = logging.getLogger(__name__)

LAG_REFRESH_S = 1.0
# Reading a partition's committed offset when its first message arrives: how long one read may
# block the loop, and how long the partition waits before the next try when it did not answer.
START_CHECK_TIMEOUT_S = 2.0
START_CHECK_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class LoopConfig:
    lanes: dict[str, Lane]  # topic -> lane
    poll_batch_size: int
    max_in_flight: int
    drain_timeout_s: float
    commit_interval_s: float
    interactive_backlog_jobs: int  # queued interactive jobs that count as a backlog
    retry: RetryPolicies  # kafka: a failed checkpoint; registry: a message not decodable yet
    max_messages: int | None = None  # run mode: stop after answering this many
    idle_exit_s: float | None = None  # run mode: stop after this long with nothing to do


class WorkerLoop:
    def __init__(
        self,
        consumer: ConsumerPort,
        intake: Intake,
        pipeline: Pipeline,
        checkpointer: Checkpointer,
        *,
        metrics: Metrics,
        config: LoopConfig,
        heartbeat: Callable[[PipelineProgress], None] = lambda _progress: None,
    ) -> None:
        self._consumer = consumer
        self._intake = intake
        self._pipeline = pipeline
        self._checkpointer = checkpointer
        self._metrics = metrics
        self._config = config
        self._heartbeat = heartbeat
        self._tracker = OffsetTracker()
        self._flow = FlowController(consumer, metrics, max_in_flight=config.max_in_flight)
        self._stop = threading.Event()
        self._in_flight: dict[Lane, int] = dict.fromkeys(Lane, 0)
        self._answered = 0
        self._last_commit = 0.0
        self._last_activity = time.monotonic()
        self._next_lag_refresh = 0.0
        self._interactive_lag = 0
        self._commit_backoff_until = 0.0
        # Consecutive failures, for the back-off: checkpoints, and decodes waiting on the registry.
        self._commit_failures = 0
        self._decode_failures = 0
        # Per partition, the highest offset taken since it was assigned: the consumer's position
        # only moves forward within an assignment unless we seek it back ourselves.
        self._taken_up_to: dict[TopicPartition, int] = {}
        # Partitions whose first message of this assignment was checked against the group's
        # committed offset (see _check_starts).
        self._start_checked: set[TopicPartition] = set()
        # Set when the loop dies of an error: the rebalance callbacks that closing the consumer
        # runs must then only forget, never commit (a fenced or broken producer, a bug).
        self._failed = False

    # ------------------------------------------------------------------ public

    def request_stop(self) -> None:
        """Safe from a signal handler: only sets a flag."""
        self._stop.set()

    @property
    def answered(self) -> int:
        return self._answered

    def run(self) -> None:
        self._consumer.subscribe(
            list(self._config.lanes),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info("worker loop started", extra={"topics": list(self._config.lanes)})
        try:
            while not self._stop.is_set():
                busy = self._tracker.in_flight > 0
                # While work is in flight, wake often: a finished answer waits for this loop to publish it.
                messages = self._consumer.consume(self._config.poll_batch_size, 0.002 if busy else 0.1)
                if messages:
                    self._last_activity = time.monotonic()
                    self._take(messages)
                self._settle_completed()
                self._maybe_commit()
                self._update_flow()
                self._beat()
                self._check_run_limits()
                if self._pipeline.fatal is not None:
                    # Nothing more can be answered; commit what is finished, then fail loudly.
                    self._maybe_commit(force=True)
                    raise self._pipeline.fatal
            self._shutdown()
        except BaseException:
            self._failed = True
            raise

    # ------------------------------------------------------------------ iteration steps

    def _take(self, messages: list[InboundMessage]) -> None:
        retry: set[TopicPartition] = set()
        stale: set[TopicPartition] = set()
        fresh: list[Job] = []
        retry |= self._check_starts(messages)
        for message in messages:
            tp = message.tp
            if tp in retry:
                continue  # we seek back to an earlier offset of this partition
            if not self._flow.owns(tp):
                # Fetched before a revocation that ran inside this very consume() call: the
                # partition's new owner answers it from the committed offset. Taken here, it was
                # answered twice (our commit carries a valid member epoch; the broker does not
                # check who owns the partition).
                stale.add(tp)
                continue
            taken = self._taken_up_to.get(tp)
            if taken is not None and message.offset <= taken:
                self._rewound(tp, message.offset, taken)
                retry.add(tp)
                continue
            lane = self._config.lanes[message.topic]
            try:
                job = self._intake.take(message, lane)
            except DecodeRetryLater as exc:
                self._decode_failures += 1
                delay_s = self._config.retry.registry.delay_s(self._decode_failures)
                log.warning("cannot decode yet, retrying %s in %.1fs: %s", tp, delay_s, exc.error)
                retry.add(tp)
                self._consumer.seek(tp, message.offset)
                self._flow.hold(tp, delay_s)
                continue
            self._decode_failures = 0
            self._tracker.track(job)
            self._taken_up_to[tp] = message.offset
            self._in_flight[lane] += 1
            if job.request is not None:
                queued_s = max(0.0, (job.taken_at_ms - job.request.created_at_ms) / 1000.0)
                self._metrics.queue_time_by[lane.value].observe(queued_s)
            if job.outcome is not None:
                self._checkpointer.settle(job)
            else:
                fresh.append(job)
        if stale:
            log.info(
                "messages of partitions revoked while they were fetched are left to their new owner",
                extra={"partitions": [f"{tp.topic}[{tp.partition}]" for tp in sorted(stale)]},
            )
        self._pipeline.submit(fresh)
        self._metrics.in_flight.set(self._tracker.in_flight)

    def _check_starts(self, messages: list[InboundMessage]) -> set[TopicPartition]:
        """Check where each newly assigned partition starts against the group's committed offset.

        librdkafka fetches the committed offset when a partition is assigned. While the previous
        owner's transaction is still open the broker answers UNSTABLE_OFFSET_COMMIT, and
        librdkafka 2.x can then fall back to auto.offset.reset and hand out the partition from
        its first offset: everything already answered would be answered again (seen when a dead
        worker's replacement joined under a new name). So the first message of each assignment
        is taken only once the committed offset is known; a start below it is treated like any
        rewound position. A read that does not answer in time leaves the partition where it was
        and holds it briefly. Returns the partitions to skip in this batch."""
        firsts: dict[TopicPartition, int] = {}
        for message in messages:
            tp = message.tp
            if tp not in self._start_checked and tp not in firsts and self._flow.owns(tp):
                firsts[tp] = message.offset
        if not firsts:
            return set()
        try:
            committed = self._consumer.committed(sorted(firsts), START_CHECK_TIMEOUT_S)
        except BrokerUnavailable as exc:
            self._metrics.dependency_errors.labels(dependency="kafka").inc()
            log.warning("committed offsets not read yet, holding the new partitions: %s", exc)
            for tp, offset in firsts.items():
                self._consumer.seek(tp, offset)
                self._flow.hold(tp, START_CHECK_RETRY_S)
            return set(firsts)
        for tp, offset in firsts.items():
            self._start_checked.add(tp)
            start = committed.get(tp)
            if start is not None and offset < start:
                log.warning(
                    "a new partition started below the group's committed offset",
                    extra={"partition": f"{tp.topic}[{tp.partition}]", "offset": offset, "committed": start},
                )
                # Everything below the committed offset is answered: _take skips forward.
                self._taken_up_to[tp] = max(self._taken_up_to.get(tp, -1), start - 1)
        return set()

    def _rewound(self, tp: TopicPartition, offset: int, taken: int) -> None:
        """The consumer handed out an offset we already took in this assignment: its position went
        back (librdkafka resets it to auto.offset.reset after an out-of-range fetch or a failed
        leader-epoch validation). Everything up to `taken` is answered or in hand, so taking it
        again would answer it twice: skip forward instead. With unclean leader election off,
        offsets below `taken` can never hold new records."""
        self._metrics.position_rewinds.inc()
        log.error(
            "the consumer's position went back; skipping what was already taken",
            extra={"partition": f"{tp.topic}[{tp.partition}]", "offset": offset, "taken_up_to": taken},
        )
        self._consumer.seek(tp, taken + 1)

    def _settle_completed(self) -> None:
        for job in self._pipeline.completed():
            self._checkpointer.settle(job)

    def _maybe_commit(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (
            now - self._last_commit < self._config.commit_interval_s or now < self._commit_backoff_until
        ):
            return
        self._last_commit = now
        self._forget_unowned()
        before = dict(self._count_by_lane())
        try:
            committed = self._checkpointer.commit(self._tracker)
        except BrokerUnavailable as exc:
            self._metrics.dependency_errors.labels(dependency="kafka").inc()
            self._commit_failures += 1
            delay_s = self._config.retry.kafka.delay_s(self._commit_failures)
            log.warning("commit failed, will retry in %.2fs: %s", delay_s, exc)
            self._commit_backoff_until = now + delay_s
            return
        self._commit_failures = 0
        if committed:
            self._answered += committed
            self._in_flight = self._count_by_lane()
            # DEBUG: a checkpoint runs every TTS_COMMIT_INTERVAL_MS; commits are counted by
            # tts_commit_duration_seconds instead.
            log.debug(
                "batch committed",
                extra={
                    "committed": committed,
                    "in_flight": self._tracker.in_flight,
                    "interactive_done": before[Lane.INTERACTIVE] - self._in_flight[Lane.INTERACTIVE],
                    "bulk_done": before[Lane.BULK] - self._in_flight[Lane.BULK],
                },
            )
        self._metrics.in_flight.set(self._tracker.in_flight)

    def _forget_unowned(self) -> None:
        """Work of a partition the client no longer holds is never committed: the transaction
        would carry a live member's metadata (the broker checks the member's epoch, not who owns
        the partition) and answer again what the partition's new owner answers. The rebalance
        callbacks forget such partitions; this catches any path that did not call them."""
        held = self._tracker.partitions()
        if not held:
            return
        assigned = set(self._consumer.assignment())
        stray = [tp for tp in held if tp not in assigned]
        if stray:
            log.warning(
                "work held for partitions no longer assigned is dropped",
                extra={"partitions": [f"{tp.topic}[{tp.partition}]" for tp in stray]},
            )
            self._forget(stray)

    def _count_by_lane(self) -> dict[Lane, int]:
        return self._tracker.in_flight_by_lane()

    def _update_flow(self) -> None:
        now = time.monotonic()
        if now >= self._next_lag_refresh:
            self._next_lag_refresh = now + LAG_REFRESH_S
            for lane in Lane:
                lags = self._consumer.lag(self._flow.assigned(lane))
                total = sum(lags.values())
                self._metrics.lag_by[lane.value].set(total)
                if lane is Lane.INTERACTIVE:
                    self._interactive_lag = total
        backlog = (
            self._interactive_lag > 0
            or self._pipeline.pending_jobs(Lane.INTERACTIVE) >= self._config.interactive_backlog_jobs
        )
        self._flow.update(FlowInputs(self._in_flight, backlog, stopping=self._stop.is_set()))

    def _beat(self) -> None:
        """/livez: the loop came round again; with it, how the pipeline is getting on."""
        self._heartbeat(self._pipeline.progress())

    def _check_run_limits(self) -> None:
        limit = self._config.max_messages
        if limit is not None and self._answered >= limit:
            log.info("answered %d messages, stopping (run mode)", self._answered)
            self._stop.set()
        idle = self._config.idle_exit_s
        if (
            idle is not None
            and self._tracker.in_flight == 0
            and time.monotonic() - self._last_activity >= idle
        ):
            log.info("idle for %.1fs, stopping (run mode)", idle)
            self._stop.set()

    # ------------------------------------------------------------------ draining

    def _drain(self, tps: list[TopicPartition] | None, deadline: float) -> None:
        """Settle and commit until the given partitions (all when None) have nothing unfinished,
        or until the deadline."""
        while True:
            self._settle_completed()
            self._maybe_commit(force=True)
            if not self._tracker.unfinished(tps) or time.monotonic() >= deadline:
                return
            self._beat()
            time.sleep(0.01)

    def _shutdown(self) -> None:
        log.info("stopping: draining in-flight work", extra={"in_flight": self._tracker.in_flight})
        self._update_flow()  # pause everything: take no more work
        # Work not yet in the engine is handed back at once (leases released, offsets left
        # uncommitted) so the partitions' next owner starts on it without waiting for us.
        self._pipeline.abandon_queued()
        self._drain(None, time.monotonic() + self._config.drain_timeout_s)
        left = self._tracker.unfinished()
        if left:
            log.warning("drain window over; %d requests left for the next owner", len(left))
        self._maybe_commit(force=True)
        for job in self._tracker.forget(self._flow.assigned()):
            job.abandoned = True

    # ------------------------------------------------------------------ rebalance callbacks

    def _on_assign(self, tps: list[TopicPartition]) -> None:
        log.info("partitions assigned", extra={"partitions": [f"{tp.topic}[{tp.partition}]" for tp in tps]})
        for tp in tps:
            self._taken_up_to.pop(tp, None)  # consumption starts again from the committed offset
            self._start_checked.discard(tp)
        self._flow.add(tps, self._config.lanes)

    def _on_revoke(self, tps: list[TopicPartition]) -> None:
        log.info(
            "partitions revoked: draining",
            extra={"partitions": [f"{tp.topic}[{tp.partition}]" for tp in tps]},
        )
        self._pipeline.drop_partitions(tps)  # queued work: the new owner will do it
        if not self._failed:
            self._drain(tps, time.monotonic() + self._config.drain_timeout_s)
        self._forget(tps)

    def _on_lost(self, tps: list[TopicPartition]) -> None:
        log.warning("partitions lost (session expired); their work is abandoned", extra={"count": len(tps)})
        self._forget(tps)

    def _forget(self, tps: list[TopicPartition]) -> None:
        for job in self._tracker.forget(tps):
            job.abandoned = True
        for tp in tps:
            self._taken_up_to.pop(tp, None)
            self._start_checked.discard(tp)
        self._pipeline.drop_partitions(tps, include_started=True)
        self._flow.remove(tps)
        self._in_flight = self._count_by_lane()
