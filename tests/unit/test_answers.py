"""Every request gets exactly one answer: Job.answer is the only writer, and refuses a second."""

from __future__ import annotations

import logging
import threading

import pytest

from consumer.core.messages import DeadLetter, Job
from consumer.core.stage import StageContext
from consumer.metrics import Metrics
from schemas.model import ErrorCode
from tests.support.worker_core import MemoryRedis, pipeline_config, request_job, results


def test_the_first_answer_stands_and_a_second_is_refused_with_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = request_job(1)
    first = results().failure(job, ErrorCode.EXPIRED, "late")
    assert job.outcome is None
    assert job.answer(first) is True
    with caplog.at_level(logging.ERROR, logger="consumer.core.messages"):
        assert job.answer(DeadLetter("CRASH_LOOP", "x")) is False
    assert job.outcome is first
    (record,) = caplog.records
    assert record.getMessage() == "a second answer to one request is refused; the first stands"
    assert (record.first, record.second) == ("failed (EXPIRED)", "dead letter (CRASH_LOOP)")  # type: ignore[attr-defined]
    assert record.request_id == "r1"  # type: ignore[attr-defined]


def test_an_outcome_cannot_be_assigned_past_answer() -> None:
    job = request_job(2)
    with pytest.raises(AttributeError):
        job.outcome = DeadLetter("X", "y")  # type: ignore[misc]


def test_racing_answers_leave_exactly_one() -> None:
    job = request_job(3)
    outcomes = [DeadLetter(f"R{i}", "x") for i in range(8)]
    won: list[bool] = []
    barrier = threading.Barrier(len(outcomes))

    def answer(outcome: DeadLetter) -> None:
        barrier.wait()
        won.append(job.answer(outcome))

    threads = [threading.Thread(target=answer, args=(o,)) for o in outcomes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert won.count(True) == 1
    assert job.outcome in outcomes


def test_the_stages_hand_a_job_to_the_loop_once_and_count_a_second_answer() -> None:
    metrics = Metrics()
    ctx = StageContext(pipeline_config(), MemoryRedis(), results(), metrics)
    job, other = request_job(4), request_job(5)
    ctx.fail([job], ErrorCode.ENGINE_ERROR, "boom", retryable=True)
    ctx.answer([(job, DeadLetter("X", "y")), (other, DeadLetter("X", "y"))])
    handed: list[Job] = []
    while not ctx.completed.empty():
        handed.append(ctx.completed.get())
    assert handed == [job, other], "the refused answer is not handed to the loop again"
    result = job.outcome
    assert result is not None and not isinstance(result, DeadLetter)
    assert result.result.error is not None and result.result.error.code is ErrorCode.ENGINE_ERROR
    assert metrics.answers_refused._value.get() == 1
