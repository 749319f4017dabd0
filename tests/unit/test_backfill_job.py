"""The backfill protocol against a fake transactional producer: chunks, checkpoints, resume."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from producer.backfill import job as job_module
from producer.backfill.checkpoint import Checkpoint, LocalCheckpointFile
from producer.backfill.job import BackfillJob, BackfillOptions, RequestIds
from producer.backfill.rows import RowDefaults
from producer.backfill.sources import SourceFormat
from producer.errors import BackfillError
from producer.settings import ProducerSettings
from schemas.codec import request_codec, result_codec
from schemas.keys import routing_key
from schemas.model import ErrorCode, ResultError, ResultStatus, SynthesisResult, Timings
from tests.unit.producer_fakes import FakeConsumer, FakeError, FakeMessage, FakeProducer

CHECKPOINTS = "tts.backfill.checkpoints"
BULK = "tts.requests.bulk"


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, not even `except Exception` blocks."""


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeProducer:
    """One fake producer shared by every run: what one run committed, the next one sees."""
    fake = FakeProducer()

    def read_checkpoint(factory: Any, config: Any, topic: str, job_id: str, **_: Any) -> Checkpoint | None:
        records = [s for s in fake.committed if s.topic == topic and s.key == job_id.encode()]
        return Checkpoint.from_json(records[-1].value or b"") if records else None

    monkeypatch.setattr(job_module, "read_kafka_checkpoint", read_checkpoint)
    return fake


def _file(tmp_path: Path, rows: int, *, bad_lines: dict[int, str] | None = None) -> Path:
    path = tmp_path / "lines.jsonl"
    bad_lines = bad_lines or {}
    with path.open("w") as f:
        for line in range(1, rows + 1):
            f.write(
                bad_lines.get(line, json.dumps({"text": f"Line {line}.", "voice": "preset:en-us"})) + "\n"
            )
    return path


def _job(
    path: Path, fake: FakeProducer, *, stop_after: int | None = None, consumer: Any = None, **options: Any
) -> BackfillJob:
    def producer_factory(config: dict[str, Any]) -> FakeProducer:
        fake.config = config
        if fake.open_txn is not None:  # init_transactions fences the previous run and aborts its chunk
            fake.aborted += fake.open_txn
            fake.queued = []
        return fake

    def requests_produced() -> int:
        return sum(s.topic == BULK for s in fake.committed) + sum(q[0].topic == BULK for q in fake.queued)

    at_start = requests_produced()

    def should_stop() -> bool:
        return stop_after is not None and requests_produced() - at_start >= stop_after

    opts = BackfillOptions(path=path, input_format=SourceFormat.JSONL, chunk_rows=100, chunk_s=60, **options)
    job = BackfillJob(
        opts,
        ProducerSettings.from_values(),
        producer_factory=producer_factory,
        consumer_factory=consumer or (lambda config: None),
        should_stop=should_stop,
    )
    job.prepare()
    return job


def _requests(fake: FakeProducer) -> list[Any]:
    codec = request_codec()
    return [codec.decode(s.value or b"") for s in fake.committed if s.topic == BULK]


def _lines(fake: FakeProducer) -> Counter[int]:
    return Counter(int(r.attributes["tts.backfill.line"]) for r in _requests(fake))


# ---------------------------------------------------------------------------------------------- runs


def test_every_line_is_submitted_once_in_checkpointed_chunks(tmp_path: Path, cluster: FakeProducer) -> None:
    job = _job(_file(tmp_path, 250), cluster)
    report = job.submit(job.validate())
    assert _lines(cluster) == Counter(range(1, 251))
    assert cluster.transactions == 3  # 100 + 100 + 50 rows, each chunk with its checkpoint
    checkpoints = [Checkpoint.from_json(s.value or b"") for s in cluster.committed if s.topic == CHECKPOINTS]
    assert [c.next_row for c in checkpoints] == [100, 200, 250]
    assert [c.submitted for c in checkpoints] == [100, 200, 250]
    assert checkpoints[-1].done
    assert report.checkpoint == checkpoints[-1]
    assert LocalCheckpointFile(tmp_path / "lines.jsonl.tts-checkpoint.json").load() == checkpoints[-1]
    assert cluster.config["transactional.id"] == f"tts-backfill-{job.job_id}"


def test_requests_are_keyed_and_identified_deterministically(tmp_path: Path, cluster: FakeProducer) -> None:
    job = _job(_file(tmp_path, 3), cluster)
    job.submit(job.validate())
    ids = RequestIds(job.job_id)
    sent = [s for s in cluster.committed if s.topic == BULK]
    for line, (message, request) in enumerate(zip(sent, _requests(cluster), strict=True), start=1):
        assert request.request_id == ids(line)
        assert message.key == routing_key(request).encode()
        assert request.attributes == {"tts.backfill.job": job.job_id, "tts.backfill.line": str(line)}


def test_manifest_maps_every_line_to_its_request(tmp_path: Path, cluster: FakeProducer) -> None:
    path = _file(tmp_path, 5, bad_lines={3: '{"voice": "preset:en-us"}'})
    job = _job(path, cluster, skip_invalid=True)
    job.submit(job.validate())
    entries = [
        json.loads(line) for line in (tmp_path / "lines.jsonl.manifest.jsonl").read_text().splitlines()
    ]
    assert [e["line"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[2] == {"line": 3, "status": "invalid", "error": "text: is missing"}
    assert entries[0]["request_id"] == RequestIds(job.job_id)(1)
    assert {e["status"] for e in entries if e["line"] != 3} == {"submitted"}


# ------------------------------------------------------------------------------------------ invalid


def test_validation_reports_every_bad_row_and_nothing_is_produced(
    tmp_path: Path, cluster: FakeProducer
) -> None:
    path = _file(
        tmp_path, 10, bad_lines={2: "{oops", 5: '{"text": "x", "voice": "preset:en-us", "speed": 7}', 9: "[]"}
    )
    job = _job(path, cluster)
    validation = job.validate()
    assert [(p.line, p.message.split(" ")[0]) for p in validation.problems] == [
        (2, "not"),
        (5, "speed:"),
        (9, "expected"),
    ]
    assert validation.total_rows == 10
    assert validation.valid_rows == 7
    with pytest.raises(BackfillError, match="3 invalid"):
        job.submit(validation)
    assert cluster.committed == []
    assert cluster.queued == []


def test_skip_invalid_submits_the_rest_and_counts_the_skipped(tmp_path: Path, cluster: FakeProducer) -> None:
    path = _file(tmp_path, 10, bad_lines={2: "{oops", 10: '{"text": ""}'})
    job = _job(path, cluster, skip_invalid=True)
    report = job.submit(job.validate())
    assert _lines(cluster) == Counter([1, 3, 4, 5, 6, 7, 8, 9])
    assert report.checkpoint.skipped_invalid == 2
    assert report.checkpoint.next_row == 10


# ------------------------------------------------------------------------------------------- resume


def test_a_killed_run_resumes_without_resubmitting(tmp_path: Path, cluster: FakeProducer) -> None:
    path = _file(tmp_path, 1000)
    calls = 0
    real_produce = cluster.produce

    def dying_produce(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 457:
            raise Killed
        real_produce(*args, **kwargs)

    cluster.produce = dying_produce  # type: ignore[method-assign]
    job = _job(path, cluster)
    with pytest.raises(Killed):
        job.submit(job.validate())
    committed_before = _lines(cluster)
    assert set(committed_before) == set(range(1, 401)), "four chunks committed, the fifth never"

    cluster.produce = real_produce  # type: ignore[method-assign]
    again = _job(path, cluster)
    report = again.submit(again.validate())
    assert again.job_id == job.job_id
    assert report.resumed_from_line == 401
    assert report.submitted_now == 600
    assert _lines(cluster) == Counter(range(1, 1001)), "every line exactly once"


def test_stop_commits_the_open_chunk_and_a_rerun_finishes(tmp_path: Path, cluster: FakeProducer) -> None:
    path = _file(tmp_path, 300)
    job = _job(path, cluster, stop_after=130)
    report = job.submit(job.validate())
    assert report.interrupted
    assert report.checkpoint.next_row == 130
    assert not report.checkpoint.done
    assert _lines(cluster) == Counter(range(1, 131))

    rerun = _job(path, cluster)
    report = rerun.submit(rerun.validate())
    assert report.checkpoint.done
    assert _lines(cluster) == Counter(range(1, 301))


def test_a_finished_job_submits_nothing_more(tmp_path: Path, cluster: FakeProducer) -> None:
    path = _file(tmp_path, 50)
    job = _job(path, cluster)
    job.submit(job.validate())
    transactions = cluster.transactions
    again = _job(path, cluster)
    report = again.submit(again.validate())
    assert report.submitted_now == 0
    assert cluster.transactions == transactions
    assert _lines(cluster) == Counter(range(1, 51))
    assert len((tmp_path / "lines.jsonl.manifest.jsonl").read_text().splitlines()) == 50


def test_other_options_make_another_job(tmp_path: Path, cluster: FakeProducer) -> None:
    path = _file(tmp_path, 5)
    first = _job(path, cluster)
    second = _job(path, cluster, defaults=RowDefaults(speed=1.2))
    assert first.job_id != second.job_id


def test_a_changed_file_under_an_explicit_job_id_is_refused(tmp_path: Path, cluster: FakeProducer) -> None:
    path = _file(tmp_path, 20)
    job = _job(path, cluster, job_id="nightly")
    job.submit(job.validate())
    path.write_text(path.read_text() + json.dumps({"text": "one more", "voice": "preset:en-us"}) + "\n")
    changed = _job(path, cluster, job_id="nightly")
    with pytest.raises(BackfillError, match="different file"):
        changed.submit(changed.validate())


def test_a_checkpoint_topic_that_forgot_the_job_is_not_trusted(tmp_path: Path, cluster: FakeProducer) -> None:
    path = _file(tmp_path, 20)
    job = _job(path, cluster)
    job.submit(job.validate())
    cluster.committed = []  # the checkpoint topic was deleted and recreated
    again = _job(path, cluster)
    with pytest.raises(BackfillError, match="no record"):
        again.submit(again.validate())


def test_a_fenced_run_stops_with_a_clear_error(tmp_path: Path, cluster: FakeProducer) -> None:
    cluster.fail_commit = FakeError("_FENCED", "producer fenced", is_fatal=True)
    job = _job(_file(tmp_path, 10), cluster)
    with pytest.raises(BackfillError, match="taken over"):
        job.submit(job.validate())


def test_a_failed_commit_aborts_the_chunk(tmp_path: Path, cluster: FakeProducer) -> None:
    cluster.fail_commit = FakeError("_TIMED_OUT", "coordinator gone", abort=True)
    job = _job(_file(tmp_path, 10), cluster)
    with pytest.raises(BackfillError, match="rerun to resume"):
        job.submit(job.validate())
    assert cluster.committed == []
    assert len(cluster.aborted) == 11  # ten requests and their checkpoint


# --------------------------------------------------------------------------------------------- wait


def _result(job_id: str, line: int, *, failed: bool = False) -> FakeMessage:
    status = ResultStatus.FAILED if failed else ResultStatus.SUCCEEDED
    result = SynthesisResult(
        request_id=RequestIds(job_id)(line),
        status=status,
        engine="null",
        model_version="1",
        timings=Timings(1, 2, 3),
        completed_at_ms=1,
        error=ResultError(ErrorCode.ENGINE_ERROR, "boom", True) if failed else None,
        attributes={"tts.backfill.job": job_id, "tts.backfill.line": str(line)},
    )
    return FakeMessage("tts.results", 0, line, result_codec().encode(result))


def test_wait_writes_results_into_the_manifest(tmp_path: Path, cluster: FakeProducer) -> None:
    path = _file(tmp_path, 4)
    job = _job(path, cluster)
    report = job.submit(job.validate())
    messages = [_result(job.job_id, 1), _result("another-job", 2), _result(job.job_id, 2, failed=True),
                _result(job.job_id, 1), _result(job.job_id, 4)]  # fmt: skip
    consumer = FakeConsumer(partitions={"tts.results": 1}, messages=messages)
    waiting = _job(path, cluster, consumer=lambda config: consumer)
    outcome = waiting.wait(report.checkpoint, timeout_s=1.0)
    assert (outcome.succeeded, outcome.failed, outcome.missing) == (2, Counter({"ENGINE_ERROR": 1}), 1)
    assert consumer.time_queries[0].offset == report.checkpoint.started_at_ms - 60_000
    entries = [
        json.loads(line) for line in (tmp_path / "lines.jsonl.manifest.jsonl").read_text().splitlines()
    ]
    assert [e["status"] for e in entries] == ["succeeded", "failed", "pending", "succeeded"]
    assert entries[1]["error_code"] == "ENGINE_ERROR"
    assert entries[1]["retryable"] is True
