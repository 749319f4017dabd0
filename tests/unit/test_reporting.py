"""Reporting, the checkpointer's other half: what each answer is, apart from when it is committed."""

from __future__ import annotations

from consumer.core.messages import DeadLetter
from consumer.core.reporting import Reporter
from consumer.metrics import Metrics
from schemas.model import ErrorCode, SynthesisResult
from tests.support.worker_core import request_job, results


class _Index:
    def __init__(self) -> None:
        self.entries: list[tuple[str, bytes]] = []

    def record(self, entries: list[tuple[str, bytes]], ttl_s: int) -> None:
        self.entries.extend(entries)


def _encode(result: SynthesisResult, topic: str) -> bytes:
    return f"{topic}:{result.request_id}".encode()


def test_a_record_is_encoded_once_and_only_answers_are_indexed_after_the_commit() -> None:
    index = _Index()
    reporter = Reporter(
        encode_result=_encode,
        dlq_topic="dlq",
        worker_id="w",
        metrics=Metrics(),
        result_index=index,
        result_index_ttl_s=60,
    )
    answered, dead = request_job(1), request_job(2)
    answered.answer(results().failure(answered, ErrorCode.EXPIRED, "late"))
    dead.answer(DeadLetter("BAD_MAGIC", "x"))
    record = reporter.record_for(answered)
    assert reporter.record_for(answered) is record
    assert reporter.record_for(dead).topic == "dlq"
    assert index.entries == []
    reporter.committed([answered, dead])
    assert index.entries == [("r1", record.value)]


def test_without_a_ttl_nothing_is_indexed() -> None:
    index = _Index()
    reporter = Reporter(
        encode_result=_encode, dlq_topic="dlq", worker_id="w", metrics=Metrics(), result_index=index
    )
    job = request_job(3)
    job.answer(results().failure(job, ErrorCode.EXPIRED, "late"))
    reporter.committed([job])
    assert index.entries == []
