"""Requests in transactions, each closed by the checkpoint record that counts it.

One `ChunkWriter` per job run. A chunk is open from the first request after a commit until
`commit()`: the caller decides when (`due`), so a chunk is bounded by rows and by time, and a
transaction never runs into the broker's transaction timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from producer.backfill.checkpoint import Checkpoint, LocalCheckpointFile
from producer.errors import BackfillError
from producer.ports import TransactionalProducerPort
from schemas.codec import AvroCodec, Framing
from schemas.keys import routing_key
from schemas.model import SynthesisRequest, now_ms

log = logging.getLogger(__name__)

_COMMIT_ATTEMPTS = 5


class ChunkWriter:
    def __init__(
        self,
        producer: TransactionalProducerPort,
        *,
        topic: str,
        checkpoint_topic: str,
        codec: AvroCodec[SynthesisRequest],
        framing: Framing,
        local: LocalCheckpointFile,
        checkpoint: Checkpoint,
        chunk_rows: int,
        chunk_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._checkpoint_topic = checkpoint_topic
        self._codec = codec
        self._framing = framing
        self._local = local
        self._chunk_rows = chunk_rows
        self._chunk_s = chunk_s
        self._clock = clock
        self._job_key = checkpoint.job_id.encode()
        self.checkpoint = checkpoint
        self.in_chunk = 0  # requests produced in the open transaction
        self.skipped = 0  # invalid rows passed over since the last commit
        self.created_at_ms = 0
        self._open = False
        self._opened_at = 0.0

    def begin(self) -> int:
        """Open a transaction unless one is open; return the created-at time for its requests."""
        if not self._open:
            self._producer.begin_transaction()
            self._open = True
            self._opened_at = self._clock()
            self.created_at_ms = now_ms()
        return self.created_at_ms

    def produce(self, request: SynthesisRequest) -> None:
        value = self._codec.encode(request, framing=self._framing, topic=self._topic)
        key = routing_key(request).encode()
        while True:
            try:
                self._producer.produce(self._topic, value, key)
                break
            except BufferError:  # local queue full: let the brokers catch up
                self._producer.poll(0.05)
        self.in_chunk += 1

    def skip(self) -> None:
        self.skipped += 1

    @property
    def due(self) -> bool:
        return self._open and (
            self.in_chunk >= self._chunk_rows or self._clock() - self._opened_at >= self._chunk_s
        )

    @property
    def pending(self) -> bool:
        """Something not yet covered by a committed checkpoint."""
        return self.in_chunk > 0 or self.skipped > 0

    def commit(self, next_row: int, next_line: int, *, done: bool = False) -> Checkpoint:
        """Produce the checkpoint into the open transaction and commit both; mirror it locally."""
        self.begin()
        record = replace(
            self.checkpoint,
            next_row=next_row,
            next_line=next_line,
            submitted=self.checkpoint.submitted + self.in_chunk,
            skipped_invalid=self.checkpoint.skipped_invalid + self.skipped,
            updated_at_ms=now_ms(),
            done=done,
        )
        self._producer.produce(self._checkpoint_topic, record.to_json(), self._job_key)
        self._commit_transaction()
        self._open = False
        self._local.save(record)
        self.checkpoint = record
        self.in_chunk = 0
        self.skipped = 0
        return record

    def abort(self) -> None:
        if self._open:
            self._producer.abort_transaction(30)
            self._open = False

    def _commit_transaction(self) -> None:
        from confluent_kafka import KafkaException

        job_id = self.checkpoint.job_id
        for attempt in range(1, _COMMIT_ATTEMPTS + 1):
            try:
                self._producer.commit_transaction(60)
                return
            except KafkaException as exc:
                error = exc.args[0]
                if error.retriable() and attempt < _COMMIT_ATTEMPTS:
                    log.warning(
                        "commit of a backfill chunk failed, retrying: %s",
                        error.str(),
                        extra={"job_id": job_id},
                    )
                    continue
                if error.fatal():
                    raise BackfillError(
                        f"job {job_id} can no longer commit ({error.str()}): another process running "
                        "the same job has taken over (fencing), or the broker refused"
                    ) from exc
                if error.txn_requires_abort():
                    self._producer.abort_transaction(30)
                    self._open = False
                raise BackfillError(
                    f"committing a chunk failed ({error.str()}); none of it is visible: rerun to resume"
                ) from exc
