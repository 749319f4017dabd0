"""Pure logic of the worker core, with in-memory fakes (the real parts are in tests/e2e)."""

from __future__ import annotations

import dataclasses
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from consumer.core.checkpoint import Checkpointer
from consumer.core.dispatch import Dispatcher
from consumer.core.flights import Flight, FlightBoard, FlightState
from consumer.core.flow import FlowController, FlowInputs
from consumer.core.intake import DecodeRetryLater, Intake, IntakePolicy
from consumer.core.loop import LoopConfig, WorkerLoop
from consumer.core.messages import (
    Answer,
    DeadLetter,
    InboundMessage,
    Job,
    OutboundRecord,
    TopicPartition,
)
from consumer.core.offsets import OffsetTracker
from consumer.core.pipeline import Pipeline, PipelineProgress
from consumer.core.reporting import outcome_label
from consumer.core.stage import Answers, Leases, Settlement, StageRunner
from consumer.core.storage import StoreStage
from consumer.core.tracing import child_span, parse_traceparent
from consumer.engine import AudioBuffer, BatchLimits, EngineCapabilities, SynthesisTask, TaskOutcome
from consumer.engines.null import NullEngine
from consumer.errors import BrokerUnavailable, FatalError
from consumer.health import HealthState
from consumer.metrics import Metrics
from consumer.ports import FinishSpec
from consumer.settings import Guarantee
from schemas import dlq
from schemas.codec import request_codec
from schemas.errors import DecodeError, DecodeReason
from schemas.model import AudioFormat, ErrorCode, PresetVoice, RegisteredVoice, SynthesisRequest
from schemas.topics import Lane
from schemas.validation import RequestLimits
from tests.support.fakes import PresetResolver, TrippingResolver, WavFinisher
from tests.support.memory_store import MemoryObjectStore
from tests.support.worker_core import TP, MemoryRedis, retry_policies
from tests.support.worker_core import failure_of as _failure
from tests.support.worker_core import job as _job
from tests.support.worker_core import pipeline_config as _pipeline_config
from tests.support.worker_core import request as _request
from tests.support.worker_core import request_job as _request_job
from tests.support.worker_core import results as _results
from tests.support.worker_core import succeeded as _succeeded
from tests.support.worker_core import wait_for as _wait_for


def _settle(job: Job) -> None:
    job.answer(DeadLetter("X", "y"))
    job.settled = True


# ----------------------------------------------------------------------------------- offsets --


def test_commit_offset_is_the_finished_prefix_only() -> None:
    tracker = OffsetTracker()
    jobs = [_job(o) for o in (5, 6, 9, 10)]  # 7 and 8 were transaction markers
    for job in jobs:
        tracker.track(job)
    _settle(jobs[1])
    _settle(jobs[3])
    assert tracker.peek_committable() == [], "a slow head holds every later offset back"
    _settle(jobs[0])
    (item,) = tracker.peek_committable()
    assert item.offset == 7 and item.jobs == jobs[:2]
    tracker.release([item])
    _settle(jobs[2])
    (item,) = tracker.peek_committable()
    assert item.offset == 11, "gaps in offsets are not holes in the prefix"
    tracker.release([item])
    assert tracker.in_flight == 0


def test_tracker_rejects_offsets_out_of_order_and_forgets_revoked_partitions() -> None:
    tracker = OffsetTracker()
    tracker.track(_job(3))
    with pytest.raises(ValueError, match="arrived after"):
        tracker.track(_job(2))
    other = TopicPartition("req", 1)
    tracker.track(_job(0, other, Lane.BULK))
    assert tracker.in_flight_by_lane() == {Lane.INTERACTIVE: 1, Lane.BULK: 1}
    dropped = tracker.forget([TP])
    assert [j.offset for j in dropped] == [3]
    assert tracker.in_flight == 1


def test_abandoned_jobs_are_not_waited_for_but_never_committed() -> None:
    tracker = OffsetTracker()
    head, tail = _job(0), _job(1)
    tracker.track(head)
    tracker.track(tail)
    head.abandoned = True
    _settle(tail)
    assert tracker.unfinished() == []
    assert tracker.peek_committable() == []


# ----------------------------------------------------------------------------------- flights --


def _flight(key: str, lane: Lane = Lane.INTERACTIVE, text: str = "hello") -> Flight:
    task = SynthesisTask(key=key, text=text)
    return Flight(key, task, FinishSpec(AudioFormat.WAV, None, -16.0), [_job(0)], lane)


def test_batches_take_interactive_first_and_respect_count_and_cost() -> None:
    board = FlightBoard()
    for i in range(3):
        board.add(_flight(f"b{i}", Lane.BULK))
    for i in range(3):
        board.add(_flight(f"i{i}", Lane.INTERACTIVE))
    batch = board.next_batch(BatchLimits(max_items=4, max_cost=1000), 0.0, timeout_s=1)
    assert [f.key for f in batch] == ["i0", "i1", "i2", "b0"]
    board.add(_flight("long", Lane.BULK, text="x" * 995))
    batch = board.next_batch(BatchLimits(max_items=10, max_cost=1000), 0.0, timeout_s=1)
    assert [f.key for f in batch] == ["b1", "b2"], "the next flight would exceed the cost bound"
    assert [f.key for f in board.next_batch(BatchLimits(10, 1000), 0.0, timeout_s=1)] == ["long"]


def test_a_partial_batch_waits_for_max_wait_then_goes() -> None:
    board = FlightBoard()
    board.add(_flight("a"))
    started = time.monotonic()
    batch = board.next_batch(BatchLimits(max_items=8, max_cost=1000), 0.15, timeout_s=2)
    waited = time.monotonic() - started
    assert [f.key for f in batch] == ["a"]
    assert waited >= 0.1


def test_a_full_batch_goes_at_once_and_quarantined_flights_go_alone() -> None:
    board = FlightBoard()
    for i in range(2):
        board.add(_flight(f"k{i}"))
    assert len(board.next_batch(BatchLimits(max_items=2, max_cost=1000), 10.0, timeout_s=1)) == 2
    suspect = _flight("suspect")
    board.add(suspect)
    board.add(_flight("fine"))
    board.requeue(suspect, quarantine=True)
    assert [f.key for f in board.next_batch(BatchLimits(8, 1000), 0.0, timeout_s=1)] == ["suspect"]
    assert [f.key for f in board.next_batch(BatchLimits(8, 1000), 0.0, timeout_s=1)] == ["fine"]


def test_duplicates_attach_and_lift_a_bulk_flight_to_interactive() -> None:
    board = FlightBoard()
    flight = _flight("k", Lane.BULK)
    board.add(flight)
    assert board.attach("k", _job(7, lane=Lane.INTERACTIVE))
    assert not board.attach("other", _job(8))
    assert flight.lane is Lane.INTERACTIVE and len(flight.jobs) == 2
    assert board.finish(flight) == flight.jobs
    assert board.finish(flight) == [], "a finished flight answers nobody twice"


def test_waiting_flights_leave_the_waiting_set_when_requeued() -> None:
    board = FlightBoard()
    flight = _flight("k")
    flight.state = FlightState.WAITING
    board.add(flight)
    assert board.due_waiters(time.monotonic() + 1) == [flight]
    board.requeue(flight)
    assert board.due_waiters(time.monotonic() + 1) == []


def test_dropping_partitions_detaches_jobs_and_returns_emptied_flights() -> None:
    board = FlightBoard()
    other = TopicPartition("req", 1)
    shared = _flight("shared")
    shared.jobs.append(_job(1, other))
    alone = _flight("alone")
    running = _flight("running")
    board.add(shared)
    board.add(alone)
    board.add(running)
    running.state = FlightState.RUNNING
    emptied = board.drop_partitions([TP], include_started=False)
    assert emptied == [alone]
    assert [j.tp for j in shared.jobs] == [other]
    assert len(running.jobs) == 1, "running work keeps its jobs until the drain window ends"
    board.drop_partitions([TP], include_started=True)
    assert running.jobs == []


def test_next_batch_returns_empty_after_its_timeout_and_on_close() -> None:
    board = FlightBoard()
    assert board.next_batch(BatchLimits(), 0.0, timeout_s=0.05) == []
    closer = threading.Timer(0.05, board.close)
    closer.start()
    assert board.next_batch(BatchLimits(), 0.0, timeout_s=5) == []


# -------------------------------------------------------------------------------------- flow --


class FakeConsumer:
    """The loop's Kafka consumer: assigns TP on subscribe and hands out what `feed` queued."""

    def __init__(self) -> None:
        self.paused: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, int]] = []
        self.position: dict[TopicPartition, int] = {}
        self._fed: queue.SimpleQueue[InboundMessage] = queue.SimpleQueue()

    def feed(self, messages: Sequence[InboundMessage]) -> None:
        for message in messages:
            self._fed.put(message)

    def subscribe(self, topics: Sequence[str], on_assign: Any, on_revoke: Any, on_lost: Any) -> None:
        on_assign([TP])

    def consume(self, max_messages: int, timeout_s: float) -> list[InboundMessage]:
        try:
            out = [self._fed.get(timeout=timeout_s)]  # the broker's poll timeout, not a sync point
        except queue.Empty:
            return []
        while len(out) < max_messages and not self._fed.empty():
            out.append(self._fed.get_nowait())
        return out

    def seek(self, tp: TopicPartition, offset: int) -> None:
        return None

    def assignment(self) -> list[TopicPartition]:
        return [TP]

    def lag(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 0)

    def close(self) -> None:
        return None

    def pause(self, tps: Sequence[TopicPartition]) -> None:
        self.paused.update(tps)

    def resume(self, tps: Sequence[TopicPartition]) -> None:
        self.paused.difference_update(tps)

    def committed(self, tps: Sequence[TopicPartition], timeout_s: float) -> dict[TopicPartition, int]:
        return {}  # a group that never committed: every partition starts where it is handed out

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def group_metadata(self) -> object:
        return "group-metadata"

    def positions(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.position.get(tp, -1) for tp in tps}


def _flow(
    max_in_flight: int = 100, clock: Callable[[], float] = time.monotonic
) -> tuple[FlowController, FakeConsumer, list[TopicPartition], list[TopicPartition]]:
    consumer = FakeConsumer()
    flow = FlowController(consumer, Metrics(), max_in_flight=max_in_flight, clock=clock)  # type: ignore[arg-type]
    interactive = [TopicPartition("req", i) for i in range(2)]
    bulk = [TopicPartition("bulk", i) for i in range(2)]
    flow.add(interactive + bulk, {"req": Lane.INTERACTIVE, "bulk": Lane.BULK})
    return flow, consumer, interactive, bulk


def test_bulk_is_paused_while_interactive_has_a_backlog() -> None:
    flow, consumer, _interactive, bulk = _flow()
    flow.update(FlowInputs({Lane.INTERACTIVE: 5, Lane.BULK: 0}, interactive_backlog=True))
    assert consumer.paused == set(bulk)
    flow.update(FlowInputs({Lane.INTERACTIVE: 0, Lane.BULK: 0}, interactive_backlog=False))
    assert consumer.paused == set()


def test_budget_pauses_everything_with_hysteresis_and_bulk_has_half() -> None:
    flow, consumer, interactive, bulk = _flow(max_in_flight=100)
    flow.update(FlowInputs({Lane.INTERACTIVE: 60, Lane.BULK: 40}, interactive_backlog=False))
    assert consumer.paused == set(interactive + bulk)
    flow.update(FlowInputs({Lane.INTERACTIVE: 45, Lane.BULK: 40}, interactive_backlog=False))
    assert consumer.paused == set(interactive + bulk), "stays paused until below 80%"
    flow.update(FlowInputs({Lane.INTERACTIVE: 10, Lane.BULK: 50}, interactive_backlog=False))
    assert consumer.paused == set(bulk), "bulk may hold at most half the budget"


def test_held_partitions_stay_paused_until_their_time() -> None:
    clock = FakeClock()
    flow, consumer, interactive, _bulk = _flow(clock=clock)
    flow.hold(interactive[0], 0.05)
    flow.update(FlowInputs({Lane.INTERACTIVE: 0, Lane.BULK: 0}, interactive_backlog=False))
    assert consumer.paused == {interactive[0]}
    clock.now += 0.049
    flow.update(FlowInputs({Lane.INTERACTIVE: 0, Lane.BULK: 0}, interactive_backlog=False))
    assert consumer.paused == {interactive[0]}
    clock.now += 0.002
    flow.update(FlowInputs({Lane.INTERACTIVE: 0, Lane.BULK: 0}, interactive_backlog=False))
    assert consumer.paused == set()


# ------------------------------------------------------------------------------------ intake --


def _intake(capabilities: EngineCapabilities | None = None, decode: Any = None) -> Intake:
    results = _results()
    policy = IntakePolicy(
        limits=RequestLimits(),
        capabilities=capabilities
        or EngineCapabilities(presets=frozenset({"en-us"}), languages=frozenset({"en"})),
        reply_topic_allowlist=frozenset({"team.replies"}),
    )
    return Intake(decode or request_codec().decode, results, policy)


def _message(request: SynthesisRequest, offset: int = 1, **kw: Any) -> InboundMessage:
    return InboundMessage("req", 0, offset, b"k", request_codec().encode(request), **kw)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"text": ""}, ErrorCode.INVALID_REQUEST),
        ({"voice": PresetVoice("fr")}, ErrorCode.VOICE_NOT_FOUND),
        ({"voice": RegisteredVoice("narrator")}, ErrorCode.UNSUPPORTED),
        ({"style_instruction": "sadly"}, ErrorCode.UNSUPPORTED),
        ({"language": "de-DE"}, ErrorCode.UNSUPPORTED_LANGUAGE),
        ({"reply_topic": "not.allowed"}, ErrorCode.REPLY_TOPIC_NOT_ALLOWED),
        ({"deadline_ms": 1}, ErrorCode.EXPIRED),
    ],
)
def test_intake_answers_what_cannot_be_synthesised(fields: dict[str, Any], code: ErrorCode) -> None:
    job = _intake().take(_message(_request(**fields)), Lane.INTERACTIVE)
    assert isinstance(job.outcome, Answer)
    assert job.outcome.result.error is not None
    assert job.outcome.result.error.code is code
    assert job.outcome.topic == "res", "failures never go to an unvetted reply topic"


def test_intake_passes_good_requests_and_keeps_the_trace() -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    job = _intake().take(
        _message(_request(reply_topic="team.replies"), headers=[("traceparent", parent.encode())]), Lane.BULK
    )
    assert job.outcome is None and job.request is not None
    assert job.traceparent is not None and job.traceparent.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert job.traceparent.split("-")[2] != "b7ad6b7169203331", "the worker's span is a child"


def test_intake_dead_letters_undecodable_bytes_and_retries_registry_outages() -> None:
    job = _intake().take(InboundMessage("req", 0, 1, None, b"\xc3\x01junk"), Lane.INTERACTIVE)
    assert isinstance(job.outcome, DeadLetter) and job.outcome.reason == "TRUNCATED"
    tombstone = _intake().take(InboundMessage("req", 0, 2, b"k", None), Lane.INTERACTIVE)
    assert isinstance(tombstone.outcome, DeadLetter)

    def registry_down(raw: bytes) -> SynthesisRequest:
        raise DecodeError(DecodeReason.REGISTRY_UNAVAILABLE, "connection refused", raw)

    with pytest.raises(DecodeRetryLater):
        _intake(decode=registry_down).take(
            InboundMessage("req", 0, 3, None, b"\x00\x00\x00\x00\x01"), Lane.INTERACTIVE
        )


def test_traceparent_parsing_rejects_malformed_headers() -> None:
    assert parse_traceparent(b"garbage") is None
    assert parse_traceparent("00-00000000000000000000000000000000-b7ad6b7169203331-01") is None
    root = child_span(None)
    assert len(root.trace_id) == 32 and root.traceparent.startswith("00-")


# -------------------------------------------------------------------------------- checkpoint --


class FakeProducer:
    def __init__(self, fail_commit: bool = False) -> None:
        self.events: list[str] = []
        self.records: list[OutboundRecord] = []
        self.fail_commit = fail_commit

    def produce(self, record: OutboundRecord) -> None:
        self.events.append(f"produce:{record.topic}")
        self.records.append(record)

    def flush(self, timeout_s: float) -> None:
        self.events.append("flush")

    def begin(self) -> None:
        self.events.append("begin")

    def send_offsets(self, offsets: Mapping[TopicPartition, int], group_metadata: object) -> None:
        self.events.append(f"offsets:{sorted((tp.partition, o) for tp, o in offsets.items())}")

    def commit(self) -> None:
        if self.fail_commit:
            raise BrokerUnavailable("coordinator moved")
        self.events.append("commit")

    def abort(self) -> None:
        self.events.append("abort")


def _answered_job(offset: int) -> Job:
    job = _request_job(offset)
    job.answer(_results().failure(job, ErrorCode.EXPIRED, "late"))
    return job


def _checkpointer(producer: FakeProducer, consumer: FakeConsumer, guarantee: Guarantee) -> Checkpointer:
    return Checkpointer(
        producer,  # type: ignore[arg-type]
        consumer,  # type: ignore[arg-type]
        guarantee=guarantee,
        encode_result=lambda result, topic: result.request_id.encode(),
        dlq_topic="dlq",
        worker_id="w",
        metrics=Metrics(),
    )


def test_exactly_once_publishes_the_prefix_and_its_offsets_in_one_transaction() -> None:
    producer, consumer = FakeProducer(), FakeConsumer()
    checkpoint = _checkpointer(producer, consumer, Guarantee.EXACTLY_ONCE)
    tracker = OffsetTracker()
    head, tail = _answered_job(0), _answered_job(1)
    tracker.track(head)
    tracker.track(tail)
    checkpoint.settle(tail)
    assert checkpoint.commit(tracker) == 0 and producer.events == [], "the tail waits for its head"
    checkpoint.settle(head)
    assert checkpoint.commit(tracker) == 2
    assert producer.events == ["begin", "produce:res", "produce:res", "offsets:[(0, 2)]", "commit"]
    assert consumer.commits == [], "offsets travel inside the transaction"


def test_a_failed_transaction_is_aborted_and_retried_in_full() -> None:
    producer, consumer = FakeProducer(fail_commit=True), FakeConsumer()
    checkpoint = _checkpointer(producer, consumer, Guarantee.EXACTLY_ONCE)
    tracker = OffsetTracker()
    job = _answered_job(0)
    tracker.track(job)
    checkpoint.settle(job)
    with pytest.raises(BrokerUnavailable):
        checkpoint.commit(tracker)
    assert producer.events[-1] == "abort"
    producer.fail_commit = False
    assert checkpoint.commit(tracker) == 1, "nothing was released: the next checkpoint retries"


def test_at_least_once_publishes_at_once_then_flushes_before_committing() -> None:
    producer, consumer = FakeProducer(), FakeConsumer()
    checkpoint = _checkpointer(producer, consumer, Guarantee.AT_LEAST_ONCE)
    tracker = OffsetTracker()
    head, tail = _answered_job(0), _answered_job(1)
    tracker.track(head)
    tracker.track(tail)
    checkpoint.settle(tail)
    assert producer.events == ["produce:res"], "a fast tail is answered without waiting"
    checkpoint.settle(head)
    checkpoint.commit(tracker)
    assert producer.events[-1] == "flush"
    assert consumer.commits == [{TP: 2}]


def test_dead_letters_keep_the_original_bytes_and_say_where_they_came_from() -> None:
    producer, consumer = FakeProducer(), FakeConsumer()
    checkpoint = _checkpointer(producer, consumer, Guarantee.AT_LEAST_ONCE)
    job = Job(InboundMessage("req", 3, 42, b"key", b"\x00bytes", headers=[("traceparent", b"t")]), Lane.BULK)
    job.answer(DeadLetter("BAD_MAGIC", "first byte"))
    checkpoint.settle(job)
    (record,) = producer.records
    headers = dict(record.headers)
    assert (record.topic, record.key, record.value) == ("dlq", b"key", b"\x00bytes")
    assert headers[dlq.SOURCE_TOPIC] == b"req" and headers[dlq.SOURCE_PARTITION] == b"3"
    assert headers[dlq.SOURCE_OFFSET] == b"42" and headers[dlq.REASON] == b"BAD_MAGIC"
    assert headers["traceparent"] == b"t"
    assert outcome_label(job) == "dead_lettered"


def test_a_fully_finished_partition_commits_its_position_past_transaction_markers() -> None:
    producer, consumer = FakeProducer(), FakeConsumer()
    checkpoint = _checkpointer(producer, consumer, Guarantee.AT_LEAST_ONCE)
    tracker = OffsetTracker()
    first, second = _answered_job(0), _answered_job(1)
    tracker.track(first)
    tracker.track(second)
    consumer.position[TP] = 3  # offset 2 is the producer's commit marker
    checkpoint.settle(first)
    checkpoint.commit(tracker)
    assert consumer.commits[-1] == {TP: 1}, "a partial prefix commits last + 1"
    checkpoint.settle(second)
    checkpoint.commit(tracker)
    assert consumer.commits[-1] == {TP: 3}, "a complete prefix commits the position"


# ----------------------------------------------------------------------------- lease renewal --


class RenewingStore:
    """Renews only the keys it is told are still ours; `during_renewal` runs inside the call,
    the way the store stage's completion can land while a renewal is on its way."""

    def __init__(self, kept: set[str], during_renewal: Any = None) -> None:
        self.kept = kept
        self.during_renewal = during_renewal

    def renew(self, keys: Sequence[str], owner: str, lease_ttl_ms: int) -> set[str]:
        if self.during_renewal:
            self.during_renewal()
        return {k for k in keys if k in self.kept}


@dataclasses.dataclass
class StageParts:
    """What Pipeline hands its stages, built the same way, for testing one stage alone."""

    board: FlightBoard
    leases: Leases
    answers: Answers
    metrics: Metrics
    runner: StageRunner

    @classmethod
    def over(cls, store: Any) -> StageParts:
        config, board, metrics = _pipeline_config(), FlightBoard(), Metrics()
        runner = StageRunner(board)
        answers = Answers(_results(), metrics, on_answer=runner.advanced)
        return cls(board, Leases(store, config.instance_id, config.lease_ttl_ms), answers, metrics, runner)

    def settlement(self) -> Settlement:
        config = _pipeline_config()
        return Settlement(
            self.board,
            self.answers,
            self.leases,
            self.metrics,
            max_retries=config.engine_max_retries,
            backoff=config.retry.engine,
        )


def _renewal(store: RenewingStore, *flights: Flight) -> None:
    parts = StageParts.over(store)
    for flight in flights:
        flight.leased = True
        parts.board.add(flight)
    Dispatcher(
        _pipeline_config(),
        board=parts.board,
        leases=parts.leases,
        answers=parts.answers,
        metrics=parts.metrics,
        runner=parts.runner,
        engine_name="null",
        voices=None,  # type: ignore[arg-type]
        finisher=None,  # type: ignore[arg-type]
    )._renew_leases()


def test_a_lease_completed_during_its_renewal_is_not_reported_lost(caplog: pytest.LogCaptureFixture) -> None:
    done, busy = _flight("done"), _flight("busy")

    def store_stage_finishes_done() -> None:
        done.leased = False  # what the store stage does once the result is cached

    _renewal(RenewingStore({"busy"}, store_stage_finishes_done), done, busy)
    assert "lost" not in caplog.text


def test_a_lease_taken_by_someone_else_is_reported_lost(caplog: pytest.LogCaptureFixture) -> None:
    _renewal(RenewingStore({"kept"}), _flight("kept"), _flight("taken"))
    assert "lost 1 leases before finishing" in caplog.text


# ----------------------------------------------------------------------------- store stage --


def test_the_engine_waits_when_storage_falls_behind() -> None:
    gate = threading.Event()

    class SlowFinisher:
        def finish(self, items: Any) -> None:
            gate.wait(10)  # storage stalled; returning nothing ends the batch quietly

    parts = StageParts.over(None)
    stage = StoreStage(
        _pipeline_config(),
        board=parts.board,
        leases=parts.leases,
        answers=parts.answers,
        settlement=parts.settlement(),
        metrics=parts.metrics,
        runner=parts.runner,
        engine_name="null",
        finisher=SlowFinisher(),  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
    )
    produced = [(_flight("k"), AudioBuffer(np.zeros(16, dtype=np.float32), 22050))]
    for _ in range(4):  # two batches being stored and two queued behind them: no wait
        stage.submit(produced, 1)
    fifth = threading.Thread(target=stage.submit, args=(produced, 1))
    fifth.start()
    fifth.join(0.5)
    assert fifth.is_alive(), "a fifth batch must wait instead of piling its audio up"
    gate.set()
    fifth.join(5)
    assert not fifth.is_alive(), "once storage catches up the engine goes on"
    stage.close()


# ------------------------------------------------------------ pipeline: unexpected failures --


Script = Callable[[list[TaskOutcome]], list[TaskOutcome]]


class ScriptedEngine(NullEngine):
    """The null engine, whose outcomes pass through `script` first: a script may raise,
    miscount, or hold the batch (a hung engine call)."""

    def __init__(self, script: Script) -> None:
        super().__init__()
        self.script = script

    def synthesize(self, tasks: Sequence[SynthesisTask]) -> list[TaskOutcome]:
        return self.script(super().synthesize(tasks))


def _raise(exc: Exception) -> Callable[..., Any]:
    def fail(*_args: Any) -> Any:
        raise exc

    return fail


class HungCall:
    """A script that holds every batch until released: an engine or CUDA call that never returns."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, outcomes: list[TaskOutcome]) -> list[TaskOutcome]:
        self.entered.set()
        self.release.wait(10)
        return outcomes


@dataclasses.dataclass
class RunningPipeline:
    pipeline: Pipeline
    engine: ScriptedEngine
    redis: MemoryRedis
    answered: list[Job] = dataclasses.field(default_factory=list)

    def submit(self, *jobs: Job) -> list[Job]:
        self.pipeline.submit(list(jobs))
        return list(jobs)

    def wait_answers(self, count: int) -> list[Job]:
        def collected() -> bool:
            self.answered.extend(self.pipeline.completed())
            return len(self.answered) >= count

        _wait_for(collected, f"{count} answers")
        return self.answered


@pytest.fixture
def pipelines() -> Iterator[Callable[..., RunningPipeline]]:
    """Starts pipelines over in-memory ports (stopped after the test)."""
    started: list[Pipeline] = []

    def start(
        script: Script = lambda outcomes: outcomes,
        *,
        store: Any = None,
        voices: Any = None,
        clock: Callable[[], float] = time.monotonic,
        **config: Any,
    ) -> RunningPipeline:
        engine, redis = ScriptedEngine(script), MemoryRedis()
        pipeline = Pipeline(
            engine=engine,
            finisher=WavFinisher(),
            store=store or MemoryObjectStore(),
            dedup=redis,
            crashes=redis,
            voices=voices or PresetResolver(),
            results=_results(),
            metrics=Metrics(),
            config=_pipeline_config(**config),
            deadline_passed=lambda _request: False,
            clock=clock,
        )
        pipeline.start()
        started.append(pipeline)
        return RunningPipeline(pipeline, engine, redis)

    yield start
    for pipeline in started:
        pipeline.stop(timeout_s=1.0)


def test_an_unexpected_engine_exception_retries_the_batch_then_fails_it(
    pipelines: Callable[..., RunningPipeline],
) -> None:
    running = pipelines(_raise(RuntimeError("driver hiccup")))
    jobs = running.submit(_request_job(0), _request_job(1))
    running.wait_answers(2)
    assert {_failure(job) for job in jobs} == {(ErrorCode.ENGINE_ERROR, True)}
    assert running.engine.invocations.tasks == 4, "each task tried once and retried once"
    assert sorted(running.redis.released) == sorted(j.cache_key for j in jobs), "leases given up"


def test_a_wrong_outcome_count_retries_then_answers_every_flight_of_the_batch(
    pipelines: Callable[..., RunningPipeline],
) -> None:
    running = pipelines(lambda outcomes: outcomes[:-1])
    jobs = running.submit(*(_request_job(i) for i in range(3)))
    running.wait_answers(3)
    assert {_failure(job) for job in jobs} == {(ErrorCode.ENGINE_ERROR, True)}
    assert running.engine.invocations.tasks == 6, "retried per the engine retry policy"
    assert sorted(running.redis.released) == sorted(j.cache_key for j in jobs), "nobody waits on them"
    assert running.pipeline.pending_jobs(Lane.INTERACTIVE) == 0


def test_a_storage_bug_fails_the_batch_without_synthesising_it_again(
    pipelines: Callable[..., RunningPipeline],
) -> None:
    store = MemoryObjectStore()
    store.put_many = _raise(RuntimeError("storage bug"))  # type: ignore[method-assign]
    running = pipelines(store=store)
    (job,) = running.submit(_request_job(0))
    running.wait_answers(1)
    assert _failure(job) == (ErrorCode.INTERNAL, False)
    assert running.engine.invocations.tasks == 1
    assert running.redis.released == [job.cache_key]


def test_a_request_that_trips_the_dispatcher_fails_alone(pipelines: Callable[..., RunningPipeline]) -> None:
    running = pipelines(voices=TrippingResolver())
    tripping, fine = running.submit(_request_job(0, voice=PresetVoice("boom")), _request_job(1))
    running.wait_answers(2)
    assert _failure(tripping) == (ErrorCode.INTERNAL, False)
    assert _succeeded(fine)


def test_a_claim_that_trips_synthesises_without_the_lease(pipelines: Callable[..., RunningPipeline]) -> None:
    running = pipelines()
    running.redis.claim_error = RuntimeError("unreadable cache entry")
    (job,) = running.submit(_request_job(0))
    running.wait_answers(1)
    assert _succeeded(job)
    assert job.cache_key in running.redis.cached, "the cache write replaces what could not be read"


def test_a_waiter_check_that_trips_takes_the_flight_over(pipelines: Callable[..., RunningPipeline]) -> None:
    running = pipelines()
    running.redis.held_elsewhere = True
    (job,) = running.submit(_request_job(0))
    _wait_for(lambda: running.pipeline.pending_jobs(Lane.INTERACTIVE) == 1, "the flight to wait")
    running.redis.claim_error = RuntimeError("unreadable cache entry")
    running.wait_answers(1)
    assert _succeeded(job), "synthesised here instead of waiting for a result it cannot read"


def test_a_stage_that_cannot_go_on_stops_the_pipeline(pipelines: Callable[..., RunningPipeline]) -> None:
    hung = HungCall()
    running = pipelines(hung, lease_ttl_ms=30)  # renewals every 10 ms
    running.redis.renew_error = RuntimeError("renewal bug")
    running.submit(_request_job(0))
    try:
        _wait_for(lambda: running.pipeline.fatal is not None, "the pipeline to stop")
    finally:
        hung.release.set()
    assert isinstance(running.pipeline.fatal, FatalError)


class LoopThread(threading.Thread):
    """Runs a WorkerLoop; keeps what it raised."""

    def __init__(self, loop: WorkerLoop) -> None:
        super().__init__(daemon=True)
        self.loop = loop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.loop.run()
        except BaseException as exc:  # handed to the test
            self.error = exc


@pytest.fixture
def loops() -> Iterator[Callable[[WorkerLoop], LoopThread]]:
    """Runs worker loops on threads (stopped after the test)."""
    threads: list[LoopThread] = []

    def start(loop: WorkerLoop) -> LoopThread:
        thread = LoopThread(loop)
        thread.start()
        threads.append(thread)
        return thread

    yield start
    for thread in threads:
        thread.loop.request_stop()
        thread.join(5)


def _worker_loop(
    pipeline: Pipeline,
    consumer: FakeConsumer,
    heartbeat: Callable[[PipelineProgress], None] = lambda _progress: None,
    **overrides: Any,
) -> WorkerLoop:
    config = LoopConfig(
        lanes={"req": Lane.INTERACTIVE},
        poll_batch_size=10,
        max_in_flight=100,
        drain_timeout_s=0.5,
        commit_interval_s=0.0,
        interactive_backlog_jobs=8,
        retry=retry_policies(),
    )
    checkpointer = _checkpointer(FakeProducer(), consumer, Guarantee.AT_LEAST_ONCE)
    return WorkerLoop(
        consumer,  # type: ignore[arg-type]
        _intake(),
        pipeline,
        checkpointer,
        metrics=Metrics(),
        config=dataclasses.replace(config, **overrides),
        heartbeat=heartbeat,
    )


def _request_message(offset: int) -> InboundMessage:
    return _message(_request(request_id=f"r{offset}", text=f"hello {offset}"), offset)


def test_the_loop_commits_past_a_batch_the_engine_miscounted(
    pipelines: Callable[..., RunningPipeline], loops: Callable[[WorkerLoop], LoopThread]
) -> None:
    running = pipelines(lambda outcomes: outcomes[:-1])
    consumer = FakeConsumer()
    consumer.feed([_request_message(offset) for offset in range(3)])
    worker = loops(_worker_loop(running.pipeline, consumer, max_messages=3))
    worker.join(5)
    assert not worker.is_alive(), "every request answered: run mode stopped the loop"
    assert worker.error is None and worker.loop.answered == 3
    assert consumer.commits[-1] == {TP: 3}, "the partition head moved past the failed batch"


def test_a_fatal_engine_error_stops_the_loop_after_committing_what_finished(
    pipelines: Callable[..., RunningPipeline], loops: Callable[[WorkerLoop], LoopThread]
) -> None:
    batches = itertools.count()

    def fatal_after_the_first_batch(outcomes: list[TaskOutcome]) -> list[TaskOutcome]:
        if next(batches) > 0:
            raise FatalError("CUDA context lost")
        return outcomes

    running = pipelines(fatal_after_the_first_batch)
    consumer = FakeConsumer()
    worker = loops(_worker_loop(running.pipeline, consumer))
    consumer.feed([_request_message(0)])
    _wait_for(lambda: {TP: 1} in consumer.commits, "the first request to be committed")
    consumer.feed([_request_message(1)])
    worker.join(5)
    assert isinstance(worker.error, FatalError) and "CUDA context lost" in str(worker.error)
    assert consumer.commits[-1] == {TP: 1}, "the request in the failed batch stays for the restart"


# ----------------------------------------------------------------------------------- liveness --


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _health(clock: FakeClock) -> HealthState:
    health = HealthState(Metrics(), liveness_stall_s=60, pipeline_stall_s=300, clock=clock)
    health.mark_loop_running(True)
    return health


def test_livez_fails_while_the_engine_hangs_on_work_in_flight(
    pipelines: Callable[..., RunningPipeline], loops: Callable[[WorkerLoop], LoopThread]
) -> None:
    clock, hung = FakeClock(), HungCall()
    health = _health(clock)
    running = pipelines(hung, clock=clock)
    consumer = FakeConsumer()
    worker = loops(_worker_loop(running.pipeline, consumer, heartbeat=health.beat))
    consumer.feed([_request_message(0)])
    _wait_for(hung.entered.is_set, "the engine call")
    assert health.live()[0], "in the engine for no time yet"
    clock.now += 301
    _wait_for(lambda: health.live()[1]["seconds_since_progress"] == 0, "the loop to beat again")
    ok, detail = health.live()
    assert not ok, "the loop is fine, but the pipeline has not moved for longer than the bound"
    assert detail["seconds_since_pipeline_progress"] >= 300
    hung.release.set()
    _wait_for(lambda: worker.loop.answered == 1, "the answer")
    _wait_for(lambda: health.live()[0], "liveness to recover")


def test_livez_counts_a_pipeline_stall_from_when_work_arrived() -> None:
    clock = FakeClock()
    health = _health(clock)
    health.beat(PipelineProgress(busy=False, idle_s=0))
    clock.now += 3600
    health.beat(PipelineProgress(busy=True, idle_s=3600))
    assert health.live()[0], "idle for an hour, then work arrived: not a stall"
    clock.now += 299
    health.beat(PipelineProgress(busy=True, idle_s=3899))
    assert health.live()[0]
    clock.now += 2
    health.beat(PipelineProgress(busy=True, idle_s=3901))
    assert not health.live()[0], "work held for longer than the bound with nothing moving"
    health.beat(PipelineProgress(busy=True, idle_s=0))
    assert health.live()[0], "a stage moved work on"


def test_readiness_is_this_pods_state_and_dependencies_show_in_a_gauge() -> None:
    """A dependency outage pauses work; it never makes the pod unready (every replica at once
    would be, and the PodDisruptionBudget would then block every drain and rollout)."""
    metrics, storage_up = Metrics(), [True]
    health = HealthState(
        metrics, liveness_stall_s=60, checks={"redis": lambda: False, "s3": lambda: storage_up[0]}
    )
    health.run_checks()
    assert not health.ready()[0], "not started yet"
    health.mark_started()
    health.mark_loop_running(True)
    storage_up[0] = False
    health.run_checks()
    ok, detail = health.ready()
    assert ok and detail["redis"] == "down" and detail["s3"] == "down"
    up = metrics.dependency_up
    assert up.labels(dependency="redis")._value.get() == 0 and up.labels(dependency="s3")._value.get() == 0
    storage_up[0] = True
    health.run_checks()
    assert up.labels(dependency="s3")._value.get() == 1 and health.ready()[1]["s3"] == "ok"
    health.mark_loop_running(False)
    assert not health.ready()[0], "a loop that stopped is this pod's own state"


def test_a_dependency_not_yet_checked_reads_unchecked_and_a_new_check_runs_at_once() -> None:
    """Readiness no longer waits on the checks, so a body read before the first one must not
    claim an outage nobody saw; a check added late (Kafka, once its clients exist) runs now,
    not a whole interval later."""
    metrics = Metrics()
    health = HealthState(metrics, liveness_stall_s=60, checks={"redis": lambda: True}, check_interval_s=3600)
    health.add_check("kafka", lambda: True)
    assert health.ready()[1]["kafka"] == "unchecked"
    health.start_checker()
    try:
        _wait_for(lambda: health.ready()[1]["redis"] == "ok", "the first round of checks")
        checked = threading.Event()

        def s3_check() -> bool:
            checked.set()
            return True

        health.add_check("s3", s3_check)
        assert checked.wait(10), "the new check ran before the hour-long interval was up"
        _wait_for(lambda: health.ready()[1]["s3"] == "ok", "the new check's verdict")
    finally:
        health.stop()


def test_work_waiting_on_another_worker_is_not_the_pipelines_own(
    pipelines: Callable[..., RunningPipeline],
) -> None:
    running = pipelines()
    running.redis.held_elsewhere = True
    running.submit(_request_job(0))
    _wait_for(lambda: running.pipeline.pending_jobs(Lane.INTERACTIVE) == 1, "the flight to wait")
    assert not running.pipeline.progress().busy, "the holder's own /livez watches that work"
    running.redis.held_elsewhere = False
    running.wait_answers(1)
