"""Every request gets exactly one answer: Job.answer is the only writer, and refuses a second."""

from __future__ import annotations

import logging
import threading

import pytest

from consumer.core.messages import Answer, DeadLetter, Job
from consumer.core.stage import Answers
from consumer.metrics import Metrics
from consumer.ports import CachedAudio
from schemas.model import ErrorCode
from tests.support.worker_core import request_job, results


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
    progress: list[str] = []
    answers = Answers(results(), metrics, on_answer=lambda: progress.append("answered"))
    job, other = request_job(4), request_job(5)
    answers.fail([job], ErrorCode.ENGINE_ERROR, "boom", retryable=True)
    answers.answer([(job, DeadLetter("X", "y")), (other, DeadLetter("X", "y"))])
    handed: list[Job] = answers.take()
    assert answers.take() == [], "taken once"
    assert progress == ["answered", "answered"], "answering is progress for /livez"
    assert handed == [job, other], "the refused answer is not handed to the loop again"
    result = job.outcome
    assert result is not None and not isinstance(result, DeadLetter)
    assert result.result.error is not None and result.result.error.code is ErrorCode.ENGINE_ERROR
    assert metrics.answers_refused._value.get() == 1


def test_jobs_sharing_one_audio_count_the_synthesis_once() -> None:
    """The first job of a flight paid for the synthesis; the duplicates coalesced onto it, and
    every job answered straight from the cache, are hits with no synthesis time of their own."""
    audio = CachedAudio("s3://b/k.wav", "audio/wav", 10, 1.0, 22050, "0" * 64, 0)
    answers = Answers(results(), Metrics(), on_answer=lambda: None)
    synthesised = [request_job(10), request_job(11), request_job(12)]
    cached = [request_job(13), request_job(14)]
    answers.succeed(synthesised, audio, synthesis_ms=250)
    answers.succeed(cached, audio)
    taken = answers.take()
    assert taken == [*synthesised, *cached]
    seen = []
    for job in taken:
        outcome = job.outcome
        assert isinstance(outcome, Answer)
        seen.append((outcome.result.cache_hit, outcome.result.timings.synthesis_ms))
    assert seen == [(False, 250), (True, 0), (True, 0), (True, 0), (True, 0)]
