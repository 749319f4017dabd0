"""A backfill job: validate a whole file, submit it exactly once, optionally await the results.

The submission protocol, in order (docs/producer.md has the reasoning):

1. Identify the job: sha256 of the file, the lane's topic and the row defaults give the job
   id (unless one is given). Request ids are uuid5(job id, line), so they are the same in
   every run of the job.
2. Validate every row and report every bad one; submit nothing if any is bad (unless
   skipping them is asked for).
3. Open a transactional producer whose transactional.id is derived from the job id.
   `init_transactions` fences any earlier process of the same job (a zombie) and aborts its
   open transaction, so its half-written chunk never becomes visible.
4. Only then read the job's committed checkpoint: rows before `next_row` are done.
5. For each chunk of rows (bounded by count and by time): begin a transaction, produce the
   requests, produce the checkpoint that counts them, commit. The requests and the checkpoint
   become visible to read_committed consumers together, or not at all.
6. After each commit, mirror the checkpoint to the local file. On Ctrl-C or SIGTERM, commit
   the open chunk and stop; after SIGKILL the open chunk is aborted by step 3 of the next run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from producer.backfill.checkpoint import Checkpoint, LocalCheckpointFile, read_kafka_checkpoint
from producer.backfill.chunks import ChunkWriter
from producer.backfill.manifest import ManifestWriter, RowOutcome, merge_outcomes
from producer.backfill.rate import TokenBucket
from producer.backfill.rows import JOB_ATTRIBUTE, LINE_ATTRIBUTE, RowDefaults, row_to_request
from producer.backfill.sources import Row, SourceFormat, file_sha256, read_rows
from producer.errors import BackfillError, BackfillInterrupted, InvalidRequest, KafkaUnavailable
from producer.ports import TransactionalProducerPort, default_consumer, default_producer
from producer.settings import ProducerSettings
from producer.subscriber import ResultSubscriber
from schemas.codec import AvroCodec, Framing, registry_client, request_codec
from schemas.model import SynthesisRequest, now_ms
from schemas.topics import Lane
from schemas.validation import request_problems

log = logging.getLogger(__name__)

# uuid5 namespace of backfill request ids: uuid5(NAMESPACE_URL, "tts-stream/backfill")
BACKFILL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "tts-stream/backfill")
CHECKPOINT_SUFFIX = ".tts-checkpoint.json"
MANIFEST_SUFFIX = ".manifest.jsonl"
# Results are looked for from this long before the job started: producer and broker clocks differ.
CLOCK_SKEW_MS = 60_000
# A killed run's open transaction blocks read_committed consumers of the lane until the next run
# aborts it or the broker does, after this long. Chunks commit every second or so.
TRANSACTION_TIMEOUT_MS = 60_000


@dataclass(frozen=True, slots=True)
class BackfillOptions:
    path: Path
    input_format: SourceFormat
    defaults: RowDefaults = field(default_factory=RowDefaults)
    lane: Lane = Lane.BULK
    job_id: str | None = None
    checkpoint_path: Path | None = None
    manifest_path: Path | None = None
    rate_per_s: float | None = None
    skip_invalid: bool = False
    chunk_rows: int = 10_000
    chunk_s: float = 1.0
    progress: bool = False

    @property
    def checkpoint_file(self) -> Path:
        return self.checkpoint_path or self.path.with_name(self.path.name + CHECKPOINT_SUFFIX)

    @property
    def manifest_file(self) -> Path:
        return self.manifest_path or self.path.with_name(self.path.name + MANIFEST_SUFFIX)


@dataclass(frozen=True, slots=True)
class RowProblem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class Validation:
    """What the validation pass found. `invalid` maps row ordinals to their first problem."""

    total_rows: int = 0
    problems: list[RowProblem] = field(default_factory=list)
    invalid: dict[int, str] = field(default_factory=dict)

    @property
    def valid_rows(self) -> int:
        return self.total_rows - len(self.invalid)


@dataclass(frozen=True, slots=True)
class SubmitReport:
    job_id: str
    topic: str
    checkpoint: Checkpoint
    submitted_now: int
    resumed_from_line: int | None
    interrupted: bool
    elapsed_s: float
    manifest: Path


@dataclass(frozen=True, slots=True)
class WaitReport:
    expected: int
    succeeded: int
    failed: Counter[str]
    missing: int
    interrupted: bool

    @property
    def complete(self) -> bool:
        return self.missing == 0


class RequestIds:
    """uuid5(BACKFILL_NAMESPACE, f"{job_id}:{line}"), computed without building UUID objects."""

    def __init__(self, job_id: str) -> None:
        self._base = hashlib.sha1(BACKFILL_NAMESPACE.bytes + f"{job_id}:".encode(), usedforsecurity=False)

    def __call__(self, line: int) -> str:
        digest = self._base.copy()
        digest.update(str(line).encode())
        raw = bytearray(digest.digest()[:16])
        raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
        h = raw.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class BackfillJob:
    """One backfill of one file. `prepare()`, `validate()`, `submit()`, then maybe `wait()`."""

    def __init__(
        self,
        options: BackfillOptions,
        settings: ProducerSettings,
        *,
        producer_factory: Callable[[dict[str, Any]], TransactionalProducerPort] = default_producer,
        consumer_factory: Callable[[dict[str, Any]], Any] = default_consumer,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.options = options
        self.settings = settings
        self.topic = settings.topics.lane(options.lane.value)
        self._producer_factory = producer_factory
        self._consumer_factory = consumer_factory
        self._should_stop = should_stop
        self._local = LocalCheckpointFile(options.checkpoint_file)
        self.source_sha256 = ""
        self.job_id = ""
        self._stat: tuple[int, int] = (0, 0)

    # ------------------------------------------------------------------------------ 1. identity

    def prepare(self) -> str:
        """Hash the input and settle the job id."""
        path = self.options.path
        if not path.is_file():
            raise BackfillError(f"{path} is not a file")
        self._stat = _stat(path)
        self.source_sha256 = file_sha256(path)
        identity = "\n".join(
            [self.source_sha256, self.topic, self.options.defaults.fingerprint(), self.options.input_format]
        )
        self.job_id = self.options.job_id or "bf-" + hashlib.sha256(identity.encode()).hexdigest()[:16]
        return self.job_id

    def _job_attributes(self, line: int) -> dict[str, str]:
        return {JOB_ATTRIBUTE: self.job_id, LINE_ATTRIBUTE: str(line)}

    # ------------------------------------------------------------------------------ 2. validate

    def validate(self) -> Validation:
        """Read every row; report every bad one with its line number."""
        found = Validation()
        limits = self.settings.limits
        defaults = self.options.defaults
        with _progress(self.options.progress, "validating", None) as advance:
            for row in read_rows(self.options.path, self.options.input_format):
                found.total_rows += 1
                if found.total_rows % 1000 == 0:
                    advance(1000)
                    if self._should_stop():
                        raise BackfillInterrupted("interrupted while validating; nothing was submitted")
                if row.fields is None:
                    message = row.error or "unreadable"
                else:
                    try:
                        request = row_to_request(
                            row.fields,
                            defaults,
                            request_id="validation",
                            created_at_ms=0,
                            job_attributes=self._job_attributes(row.line),
                        )
                    except InvalidRequest as exc:
                        message = str(exc)
                    else:
                        problems = request_problems(request, limits)
                        if not problems:
                            continue
                        message = "; ".join(str(p) for p in problems)
                found.problems.append(RowProblem(row.line, message))
                found.invalid[row.ordinal] = message
        return found

    # ------------------------------------------------------------------------------ 3-6. submit

    def submit(self, validation: Validation) -> SubmitReport:
        if validation.invalid and not self.options.skip_invalid:
            raise BackfillError(f"{len(validation.invalid)} invalid row(s); nothing was submitted")
        if _stat(self.options.path) != self._stat:
            raise BackfillError(f"{self.options.path} changed while it was being validated")
        producer = self._transactional_producer()
        checkpoint = self._resume_point(validation)
        resumed = checkpoint.next_line if 0 < checkpoint.next_row < checkpoint.total_rows else None
        if resumed is not None:
            log.info(
                "resuming backfill job %s at line %d",
                self.job_id,
                resumed,
                extra={"job_id": self.job_id, "next_row": checkpoint.next_row},
            )
        started = time.monotonic()
        manifest = ManifestWriter(self.options.manifest_file)
        try:
            checkpoint, submitted_now, interrupted = self._submit_rows(
                producer, checkpoint, validation, manifest
            )
        except BaseException:
            manifest.discard()
            raise
        manifest.finish()
        return SubmitReport(
            job_id=self.job_id,
            topic=self.topic,
            checkpoint=checkpoint,
            submitted_now=submitted_now,
            resumed_from_line=resumed,
            interrupted=interrupted,
            elapsed_s=time.monotonic() - started,
            manifest=self.options.manifest_file,
        )

    def _transactional_producer(self) -> TransactionalProducerPort:
        from confluent_kafka import KafkaException

        config = {
            **self.settings.producer_config(),
            # Bigger batches than interactive callers use: throughput matters here, not latency.
            "linger.ms": max(self.settings.linger_ms, 20),
            "transactional.id": f"tts-backfill-{self.job_id}",
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            # librdkafka refuses a delivery timeout longer than the transaction's.
            "delivery.timeout.ms": min(self.settings.delivery_timeout_ms, TRANSACTION_TIMEOUT_MS),
        }
        producer = self._producer_factory(config)
        try:
            producer.init_transactions(30)
        except KafkaException as exc:
            raise KafkaUnavailable(f"cannot start the job's transactions: {exc.args[0].str()}") from exc
        return producer

    def _resume_point(self, validation: Validation) -> Checkpoint:
        committed = read_kafka_checkpoint(
            self._consumer_factory,
            self.settings.consumer_config("tts-backfill"),
            self.settings.topics.backfill_checkpoints,
            self.job_id,
        )
        local = self._local.load()
        if committed is None:
            if local is not None and local.job_id == self.job_id and local.next_row > 0:
                raise BackfillError(
                    f"{self._local.path} says job {self.job_id} already submitted {local.submitted} "
                    f"row(s), but topic {self.settings.topics.backfill_checkpoints} has no record of "
                    "it (deleted or recreated?). Resuming from the start would submit those rows "
                    "again; delete the local checkpoint file to do that deliberately."
                )
            return Checkpoint(
                job_id=self.job_id,
                source_sha256=self.source_sha256,
                topic=self.topic,
                total_rows=validation.total_rows,
                started_at_ms=now_ms(),
                next_line=0,
            )
        if committed.source_sha256 != self.source_sha256 or committed.total_rows != validation.total_rows:
            raise BackfillError(
                f"job {self.job_id} was started with a different file "
                f"(sha256 {committed.source_sha256[:12]}..., now {self.source_sha256[:12]}...); "
                "use a new --job-id for the new file"
            )
        return committed

    def _submit_rows(
        self,
        producer: TransactionalProducerPort,
        checkpoint: Checkpoint,
        validation: Validation,
        manifest: ManifestWriter,
    ) -> tuple[Checkpoint, int, bool]:
        options = self.options
        request_id = RequestIds(self.job_id)
        bucket = TokenBucket(options.rate_per_s) if options.rate_per_s else None
        invalid = validation.invalid
        chunks = ChunkWriter(
            producer,
            topic=self.topic,
            checkpoint_topic=self.settings.topics.backfill_checkpoints,
            codec=_make_codec(self.settings),
            framing=Framing(self.settings.framing),
            local=self._local,
            checkpoint=checkpoint,
            chunk_rows=options.chunk_rows,
            chunk_s=options.chunk_s,
        )
        submitted_now = 0
        done_before = checkpoint.next_row
        with _progress(
            options.progress, "submitting", validation.valid_rows, initial=checkpoint.submitted
        ) as advance:
            try:
                for row in read_rows(options.path, options.input_format):
                    problem = invalid.get(row.ordinal)
                    if problem is not None:
                        manifest.invalid(row.line, problem)
                        if row.ordinal >= done_before:
                            chunks.skip()
                        continue
                    rid = request_id(row.line)
                    manifest.submitted(row.line, rid)
                    if row.ordinal < done_before:
                        continue  # committed by an earlier run
                    created_at = chunks.begin()
                    if bucket is not None:
                        bucket.acquire()
                    chunks.produce(self._request(row, rid, created_at))
                    submitted_now += 1
                    stop = self._should_stop()
                    if stop or chunks.due:
                        advance(chunks.in_chunk)
                        chunks.commit(row.ordinal + 1, row.line + 1)
                        if stop:
                            return chunks.checkpoint, submitted_now, True
                if chunks.pending or not chunks.checkpoint.done:
                    advance(chunks.in_chunk)
                    chunks.commit(validation.total_rows, 0, done=True)
            except BaseException:
                chunks.abort()
                raise
            finally:
                producer.flush(30)
        return chunks.checkpoint, submitted_now, False

    def _request(self, row: Row, request_id: str, created_at_ms: int) -> SynthesisRequest:
        assert row.fields is not None  # rows that failed to parse are in `invalid`
        try:
            return row_to_request(
                row.fields,
                self.options.defaults,
                request_id=request_id,
                created_at_ms=created_at_ms,
                job_attributes=self._job_attributes(row.line),
            )
        except InvalidRequest as exc:  # it validated a moment ago: the file changed
            raise BackfillError(f"line {row.line} changed since it was validated: {exc}") from exc

    # ------------------------------------------------------------------------------ wait

    def wait(self, checkpoint: Checkpoint, timeout_s: float, results_topic: str | None = None) -> WaitReport:
        """Collect the results of every submitted row into the manifest.

        Results are recognised by the job and line attributes every request carries, so
        memory holds one small outcome per row, not a set of request ids.
        """
        expected = checkpoint.submitted
        outcomes: dict[int, RowOutcome] = {}
        deadline = time.monotonic() + timeout_s
        interrupted = False
        start_ms = max(0, checkpoint.started_at_ms - CLOCK_SKEW_MS)
        with (
            ResultSubscriber(
                self.settings,
                topic=results_topic,
                start=start_ms,
                consumer_factory=self._consumer_factory,
            ) as results,
            _progress(self.options.progress, "results", expected) as advance,
        ):
            while len(outcomes) < expected and time.monotonic() < deadline:
                if self._should_stop():
                    interrupted = True
                    break
                result = results.poll(min(1.0, max(0.0, deadline - time.monotonic())))
                if result is None or result.attributes.get(JOB_ATTRIBUTE) != self.job_id:
                    continue
                try:
                    line = int(result.attributes.get(LINE_ATTRIBUTE, ""))
                except ValueError:
                    continue
                if line not in outcomes:
                    outcomes[line] = RowOutcome.of(result)
                    advance(1)
        merge_outcomes(self.options.manifest_file, outcomes)
        failed: Counter[str] = Counter(
            o.error_code or "UNKNOWN" for o in outcomes.values() if not o.succeeded
        )
        succeeded = sum(o.succeeded for o in outcomes.values())
        return WaitReport(expected, succeeded, failed, expected - len(outcomes), interrupted)


def _stat(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _make_codec(settings: ProducerSettings) -> AvroCodec[SynthesisRequest]:
    if Framing(settings.framing) is Framing.CONFLUENT:
        if not settings.schema_registry_url:
            raise BackfillError("framing 'confluent' needs a schema registry URL (TTS_SCHEMA_REGISTRY_URL)")
        registry = registry_client(settings.schema_registry_url, **settings.registry_config())
        return request_codec(registry, auto_register=settings.schema_registry_auto_register)
    return request_codec()


@contextmanager
def _progress(
    enabled: bool, desc: str, total: int | None, *, initial: int = 0
) -> Iterator[Callable[[int], None]]:
    """A tqdm bar on stderr (rate and ETA) when enabled; a no-op otherwise."""
    if not enabled:
        yield _ignore
        return
    from tqdm import tqdm

    with tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=" lines",
        unit_scale=True,
        mininterval=0.5,
        smoothing=0.1,
        dynamic_ncols=True,
    ) as bar:

        def advance(n: int) -> None:
            bar.update(n)

        yield advance


def _ignore(n: int) -> None:
    pass
