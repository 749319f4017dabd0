"""Exactly once when Kafka misbehaves: transactions whose end is unknown, positions that go back,
partitions that go away. Pure logic against fakes that keep librdkafka's rules (the chaos suites
drive the same paths against real brokers)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from consumer.core.checkpoint import Checkpointer
from consumer.core.intake import Intake, IntakePolicy
from consumer.core.loop import LoopConfig, WorkerLoop
from consumer.core.messages import InboundMessage, Job, Lane, OutboundRecord, TopicPartition
from consumer.core.offsets import OffsetTracker
from consumer.core.pipeline import PipelineProgress
from consumer.core.results import ResultFactory
from consumer.engine import EngineCapabilities
from consumer.errors import BrokerUnavailable, FatalError, TransactionInDoubt
from consumer.metrics import Metrics
from consumer.ports import AssignmentCallback
from consumer.settings import Guarantee
from schemas.codec import request_codec
from schemas.model import ErrorCode, PresetVoice, SynthesisRequest, now_ms
from schemas.validation import RequestLimits
from tests.support.worker_core import retry_policies

TP = TopicPartition("req", 0)
RESULTS = ResultFactory(engine="null", model_version="m", worker_id="w", results_topic="res")


class TransactionalProducer:
    """Keeps librdkafka's transaction rules: one API call at a time, so a commit or an abort that
    did not finish must be called again before anything else; records become visible (`visible`)
    only when their transaction commits. `script` lists what each commit or abort call does:
    "ok", "doubt" (times out; the broker committed anyway when `lands` is set), "fail" (abortable),
    "timeout" (an abort that did not finish)."""

    def __init__(self) -> None:
        self.script: list[str] = []
        self.lands = False
        self.visible: list[OutboundRecord] = []
        self.calls: list[str] = []
        self._open: list[OutboundRecord] = []
        self._in_progress: str | None = None
        self._committed_in_background = False

    def _enter(self, call: str) -> None:
        self.calls.append(call)
        if self._in_progress not in (None, call):
            raise BrokerUnavailable(f"Conflicting {self._in_progress} API call is already in progress")

    def begin(self) -> None:
        self._enter("begin")
        self._open = []

    def produce(self, record: OutboundRecord) -> None:
        self._open.append(record)

    def flush(self, timeout_s: float) -> None:
        return None

    def send_offsets(self, offsets: Mapping[TopicPartition, int], group_metadata: object) -> None:
        self.calls.append("send_offsets")

    def commit(self) -> None:
        self._enter("commit_transaction")
        if self._committed_in_background:
            self._finish(commit=True)
            return
        step = self.script.pop(0) if self.script else "ok"
        if step == "ok":
            self._finish(commit=True)
        elif step == "doubt":
            self._in_progress = "commit_transaction"
            self._committed_in_background = self.lands
            raise TransactionInDoubt("commit transaction: Local: Timed out")
        else:
            self._in_progress = None
            raise BrokerUnavailable("commit transaction: aborted by the coordinator")

    def abort(self) -> None:
        self._enter("abort_transaction")
        step = self.script.pop(0) if self.script else "ok"
        if step == "timeout":
            self._in_progress = "abort_transaction"
            raise BrokerUnavailable("abort transaction: Failed to flush all outstanding messages")
        self._finish(commit=False)

    def _finish(self, *, commit: bool) -> None:
        if commit:
            self.visible.extend(self._open)
        self._open = []
        self._in_progress = None
        self._committed_in_background = False

    def close(self) -> None:
        return None


Batch = list[InboundMessage] | Callable[[], list[InboundMessage]]


class ScriptedConsumer:
    """Hands out the given batches, one per consume call (a callable batch runs then: a
    rebalance, a lost client); records seeks."""

    def __init__(self, batches: Sequence[Batch]) -> None:
        self.batches = list(batches)
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.assigned: list[TopicPartition] = []
        self.callbacks: tuple[AssignmentCallback, AssignmentCallback, AssignmentCallback] | None = None
        # What each read of the committed offsets answers, in turn (an exception is raised);
        # once used up, the group has committed nothing.
        self.committed_answers: list[dict[TopicPartition, int] | Exception] = []

    def subscribe(
        self,
        topics: Sequence[str],
        on_assign: AssignmentCallback,
        on_revoke: AssignmentCallback,
        on_lost: AssignmentCallback,
    ) -> None:
        self.callbacks = (on_assign, on_revoke, on_lost)
        self.assigned = [TP]
        on_assign([TP])

    def consume(self, max_messages: int, timeout_s: float) -> list[InboundMessage]:
        if not self.batches:
            return []
        batch = self.batches.pop(0)
        return batch() if callable(batch) else batch

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def assignment(self) -> list[TopicPartition]:
        return list(self.assigned)

    def positions(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {}

    def lag(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {}

    def pause(self, tps: Sequence[TopicPartition]) -> None:
        return None

    def resume(self, tps: Sequence[TopicPartition]) -> None:
        return None

    def committed(self, tps: Sequence[TopicPartition], timeout_s: float) -> dict[TopicPartition, int]:
        answer = self.committed_answers.pop(0) if self.committed_answers else {}
        if isinstance(answer, Exception):
            raise answer
        return {tp: offset for tp, offset in answer.items() if tp in tps}

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        return None

    def group_metadata(self) -> object:
        return "member-metadata"

    def close(self) -> None:
        if self.callbacks is not None and self.assigned:
            self.callbacks[1](list(self.assigned))  # closing revokes what is left, as librdkafka does
        self.assigned = []


class InstantPipeline:
    """Answers every job the moment it is submitted."""

    fatal: FatalError | None = None

    def __init__(self) -> None:
        self._done: list[Job] = []

    def submit(self, jobs: list[Job]) -> None:
        for job in jobs:
            job.answer(RESULTS.failure(job, ErrorCode.ENGINE_ERROR, "instant"))
        self._done.extend(jobs)

    def completed(self) -> list[Job]:
        done, self._done = self._done, []
        return done

    def progress(self) -> PipelineProgress:
        return PipelineProgress(busy=False, idle_s=0.0)

    def pending_jobs(self, lane: Lane) -> int:
        return 0

    def drop_partitions(self, tps: Sequence[TopicPartition], *, include_started: bool = False) -> None:
        return None

    def abandon_queued(self) -> None:
        return None


class HeldPipeline(InstantPipeline):
    """Holds every job until `release` names its offset: work still in the engine."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Job] = []
        self.released: set[int] = set()

    def submit(self, jobs: list[Job]) -> None:
        self.held.extend(jobs)

    def release(self, *offsets: int) -> None:
        self.released.update(offsets)

    def completed(self) -> list[Job]:
        done = [job for job in self.held if job.message.offset in self.released]
        self.held = [job for job in self.held if job not in done]
        for job in done:
            job.answer(RESULTS.failure(job, ErrorCode.ENGINE_ERROR, "finished late"))
        return done

    def progress(self) -> PipelineProgress:
        return PipelineProgress(busy=bool(self.held), idle_s=0.0)


def _request(offset: int) -> SynthesisRequest:
    return SynthesisRequest(
        request_id=f"r{offset}", text=f"hello {offset}", voice=PresetVoice("en-us"), created_at_ms=now_ms()
    )


def _message(offset: int) -> InboundMessage:
    return InboundMessage(TP.topic, TP.partition, offset, b"k", request_codec().encode(_request(offset)))


def _job(offset: int) -> Job:
    job = Job(_message(offset), Lane.INTERACTIVE)
    job.request = _request(offset)
    job.answer(RESULTS.failure(job, ErrorCode.ENGINE_ERROR, "done"))
    job.settled = True
    return job


def _checkpointer(producer: TransactionalProducer, consumer: Any, limit_s: float = 60.0) -> Checkpointer:
    return Checkpointer(
        producer,  # type: ignore[arg-type]
        consumer,
        guarantee=Guarantee.EXACTLY_ONCE,
        encode_result=lambda result, topic: result.request_id.encode(),
        dlq_topic="dlq",
        worker_id="w",
        metrics=Metrics(),
        unfinished_limit_s=limit_s,
    )


def _answers(producer: TransactionalProducer) -> Counter[bytes]:
    return Counter(record.value for record in producer.visible)


def _tracker(*offsets: int) -> OffsetTracker:
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.track(_job(offset))
    return tracker


# ------------------------------------------------------------------------------ transactions --


def test_a_commit_in_doubt_that_went_through_is_never_published_again() -> None:
    """The bug: a commit that timed out was aborted and its records published again in a new
    transaction. When the first commit had reached the coordinator, both were visible."""
    producer = TransactionalProducer()
    producer.script, producer.lands = ["doubt"], True
    checkpoint, tracker = _checkpointer(producer, ScriptedConsumer([])), _tracker(0, 1)
    with pytest.raises(TransactionInDoubt):
        checkpoint.commit(tracker)
    assert checkpoint.commit(tracker) == 2, "committing again tells: it did commit"
    assert checkpoint.commit(tracker) == 0 and tracker.in_flight == 0
    assert _answers(producer) == {b"r0": 1, b"r1": 1}
    assert "abort_transaction" not in producer.calls


def test_a_commit_in_doubt_that_failed_is_aborted_then_published_once() -> None:
    producer = TransactionalProducer()
    producer.script = ["doubt", "fail"]
    checkpoint, tracker = _checkpointer(producer, ScriptedConsumer([])), _tracker(0)
    for _ in range(2):
        with pytest.raises(BrokerUnavailable):
            checkpoint.commit(tracker)
    assert producer.visible == [], "neither attempt is visible"
    assert checkpoint.commit(tracker) == 1
    assert _answers(producer) == {b"r0": 1}


def test_an_abort_that_timed_out_is_finished_before_the_next_transaction_begins() -> None:
    """The bug: after an abort timed out the worker called begin_transaction for ever, refused
    each time ("Conflicting abort_transaction API call is already in progress") while its
    partitions waited and its liveness probe stayed green."""
    producer = TransactionalProducer()
    producer.script = ["fail", "timeout"]
    checkpoint, tracker = _checkpointer(producer, ScriptedConsumer([])), _tracker(0)
    with pytest.raises(BrokerUnavailable):
        checkpoint.commit(tracker)
    assert checkpoint.commit(tracker) == 1, "the abort is resumed, then the request goes out again"
    assert producer.calls == [
        "begin",
        "send_offsets",
        "commit_transaction",  # aborted by the coordinator
        "abort_transaction",  # timed out
        "abort_transaction",  # resumed and finished
        "begin",
        "send_offsets",
        "commit_transaction",
    ]
    assert _answers(producer) == {b"r0": 1}


def test_a_transaction_that_never_ends_stops_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = TransactionalProducer()
    producer.script = ["doubt", "doubt"]
    checkpoint, tracker = _checkpointer(producer, ScriptedConsumer([]), limit_s=30.0), _tracker(0)
    with pytest.raises(TransactionInDoubt):
        checkpoint.commit(tracker)
    clock = [0.0]
    import consumer.core.checkpoint as module

    real = module.time.monotonic
    monkeypatch.setattr(module.time, "monotonic", lambda: real() + clock[0])
    clock[0] = 31.0
    with pytest.raises(FatalError, match="has not finished after"):
        checkpoint.commit(tracker)
    assert producer.visible == []


# ------------------------------------------------------------------------------------ the loop --


def _loop(
    consumer: ScriptedConsumer,
    producer: TransactionalProducer,
    pipeline: InstantPipeline | None = None,
    **overrides: Any,
) -> WorkerLoop:
    config = LoopConfig(
        lanes={"req": Lane.INTERACTIVE},
        poll_batch_size=100,
        max_in_flight=1000,
        drain_timeout_s=0.2,
        commit_interval_s=0.0,
        interactive_backlog_jobs=8,
        retry=retry_policies(),
        idle_exit_s=0.3,
    )
    intake = Intake(
        request_codec().decode,
        RESULTS,
        IntakePolicy(
            limits=RequestLimits(),
            capabilities=EngineCapabilities(presets=frozenset({"en-us"}), languages=frozenset({"en"})),
            reply_topic_allowlist=frozenset(),
        ),
    )
    return WorkerLoop(
        consumer,  # type: ignore[arg-type]
        intake,
        pipeline or InstantPipeline(),  # type: ignore[arg-type]
        _checkpointer(producer, consumer),
        metrics=Metrics(),
        config=dataclasses.replace(config, **overrides),
    )


def test_a_position_that_goes_back_is_skipped_forward_not_answered_again() -> None:
    """librdkafka resets a position to auto.offset.reset (earliest) after an out-of-range fetch
    or a failed leader-epoch check: without a guard the worker answered the partition's whole
    history again, each a second result (or died on the offset tracker's order check)."""
    batches: list[Batch] = [
        [_message(0), _message(1), _message(2)],
        [],
        [_message(0), _message(1)],
        [_message(3)],
    ]
    consumer, producer = ScriptedConsumer(batches), TransactionalProducer()
    _loop(consumer, producer).run()
    assert _answers(producer) == {b"r0": 1, b"r1": 1, b"r2": 1, b"r3": 1}
    assert consumer.seeks == [(TP, 3)], "the position is moved past what was already taken"


def test_a_new_partition_handed_out_below_its_committed_offset_starts_at_the_committed_offset() -> None:
    """librdkafka read the committed offset while the previous owner's transaction was open
    (UNSTABLE_OFFSET_COMMIT), fell back to auto.offset.reset and handed out the partition from
    offset 0: the replacement of a dead worker answered the partition's history again."""
    consumer, producer = ScriptedConsumer([]), TransactionalProducer()
    consumer.committed_answers = [{TP: 3}]
    consumer.batches = [[_message(0), _message(1)], [_message(3), _message(4)]]
    _loop(consumer, producer).run()
    assert consumer.seeks == [(TP, 3)]
    assert _answers(producer) == {b"r3": 1, b"r4": 1}


def test_a_new_partition_waits_until_its_committed_offset_can_be_read() -> None:
    consumer, producer = ScriptedConsumer([]), TransactionalProducer()
    consumer.committed_answers = [BrokerUnavailable("committed offsets: Local: Timed out"), {TP: 1}]
    consumer.batches = [
        [_message(0), _message(1)],
        [_message(0), _message(1), _message(2)],
        [_message(1), _message(2)],
    ]
    _loop(consumer, producer).run()
    assert consumer.seeks == [(TP, 0), (TP, 1)], "left where it was, then moved to the committed offset"
    assert _answers(producer) == {b"r1": 1, b"r2": 1}


def test_a_partition_assigned_again_starts_over_from_its_committed_offset() -> None:
    consumer = ScriptedConsumer([])
    producer = TransactionalProducer()
    producer.script = ["fail"]  # offsets 0 and 1 are not committed: the next owner starts at 0

    def reassigned() -> list[InboundMessage]:
        assert consumer.callbacks is not None
        on_assign, _on_revoke, on_lost = consumer.callbacks
        on_lost([TP])
        on_assign([TP])
        return [_message(0), _message(1), _message(2)]

    consumer.batches = [[_message(0), _message(1)], [], reassigned]
    _loop(consumer, producer).run()
    assert consumer.seeks == [], "a new assignment is not a rewind"
    assert _answers(producer) == {b"r0": 1, b"r1": 1, b"r2": 1}


def test_work_of_a_partition_the_client_lost_without_a_callback_is_never_committed() -> None:
    """The client was closed and joins again (refused while fenced): what it held is gone. A
    commit of that work would carry the new member's valid metadata and answer again what the
    partition's new owner answers."""
    consumer = ScriptedConsumer([])
    producer = TransactionalProducer()
    producer.script = ["fail"]  # the first commit does not land; the job stays in hand

    def client_gone() -> list[InboundMessage]:
        consumer.assigned = []  # gone with the old client: no callback reached the loop
        return []

    consumer.batches = [[_message(0)], client_gone]
    _loop(consumer, producer).run()
    assert producer.visible == []


def test_after_a_fatal_error_closing_the_consumer_commits_nothing() -> None:
    consumer = ScriptedConsumer([[_message(0)]])
    producer = TransactionalProducer()

    def fenced() -> None:
        raise FatalError("kafka commit transaction: Producer fenced")

    producer.commit = fenced  # type: ignore[method-assign]
    loop = _loop(consumer, producer)
    with pytest.raises(FatalError):
        loop.run()
    calls = len(producer.calls)
    consumer.close()  # the composition root closes the consumer on the way out
    assert producer.calls[calls:] == [], "the revoke callback only forgets"


def test_messages_of_a_partition_revoked_during_the_same_poll_are_left_to_its_new_owner() -> None:
    """The duplicates of the short chaos run under load: librdkafka's batch consume returns the
    messages it fetched before a revocation that it ran, through our callback, inside the same
    call. Taken after the callback had forgotten the partition, they were answered and committed
    with the member's still-valid epoch, while the partition's new owner, starting from the
    committed offset, answered them too."""
    consumer, producer = ScriptedConsumer([]), TransactionalProducer()

    def revoked_while_fetching() -> list[InboundMessage]:
        assert consumer.callbacks is not None
        consumer.callbacks[1]([TP])  # the revocation runs inside consume()...
        consumer.assigned = []
        return [_message(1), _message(2)]  # ...which still returns what it had fetched

    consumer.batches = [[_message(0)], [], revoked_while_fetching]
    _loop(consumer, producer).run()
    assert _answers(producer) == {b"r0": 1}, "offsets 1 and 2 are the new owner's to answer"


def test_a_revoked_partition_drains_its_work_in_the_engine_and_commits_it_before_it_goes() -> None:
    """Within the drain window, work already in the engine is finished and committed by this
    worker, so the partition's next owner starts after it instead of answering it again."""
    consumer, producer, pipeline = ScriptedConsumer([]), TransactionalProducer(), HeldPipeline()
    seen_at_revoke: list[Counter[bytes]] = []

    def revoked() -> list[InboundMessage]:
        assert consumer.callbacks is not None
        pipeline.release(0, 1)  # the engine finishes while the revocation waits for it
        consumer.callbacks[1]([TP])
        seen_at_revoke.append(_answers(producer))
        consumer.assigned = []
        return []

    consumer.batches = [[_message(0), _message(1)], [], revoked]
    _loop(consumer, producer, pipeline, drain_timeout_s=5.0).run()
    assert seen_at_revoke == [Counter({b"r0": 1, b"r1": 1})], "committed before the callback returned"
    assert _answers(producer) == {b"r0": 1, b"r1": 1}


def test_shutdown_commits_what_finishes_in_the_drain_window_and_leaves_the_rest() -> None:
    consumer, producer, pipeline = ScriptedConsumer([]), TransactionalProducer(), HeldPipeline()
    loop = _loop(consumer, producer, pipeline, drain_timeout_s=0.3)

    def stop_requested() -> list[InboundMessage]:
        pipeline.release(0)  # offset 1 never finishes
        loop.request_stop()
        return []

    consumer.batches = [[_message(0), _message(1)], stop_requested]
    loop.run()
    assert _answers(producer) == {b"r0": 1}, "offset 1 is left for the partition's next owner"
    assert [job.abandoned for job in pipeline.held] == [True]
