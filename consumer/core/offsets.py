"""Which offsets may be committed: per partition, only the contiguous prefix of finished jobs.

Jobs are recorded in the order they were consumed. Offsets need not be consecutive (transaction
markers and compaction leave gaps), so "contiguous" means "no unfinished job before it in
consumption order". The commit offset is the last finished prefix job's offset + 1: a slow head
holds the commit back however many later jobs finish ("slow head, fast tail").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from consumer.core.messages import Job, TopicPartition
from schemas.topics import Lane


@dataclass(frozen=True, slots=True)
class Committable:
    """What one partition can commit now: the next offset to consume, and the jobs it covers."""

    tp: TopicPartition
    offset: int
    jobs: list[Job]
    complete: bool = False  # the prefix is everything taken from this partition


class OffsetTracker:
    def __init__(self) -> None:
        self._ledgers: dict[TopicPartition, deque[Job]] = {}
        self._count = 0

    def track(self, job: Job) -> None:
        ledger = self._ledgers.setdefault(job.tp, deque())
        if ledger and ledger[-1].offset >= job.offset:
            raise ValueError(f"offset {job.offset} of {job.tp} arrived after {ledger[-1].offset}")
        ledger.append(job)
        self._count += 1

    @property
    def in_flight(self) -> int:
        """Jobs taken and not yet committed (finished or not)."""
        return self._count

    def partitions(self) -> list[TopicPartition]:
        """Partitions with jobs taken and not yet committed."""
        return list(self._ledgers)

    def pending(self, tp: TopicPartition) -> int:
        return len(self._ledgers.get(tp, ()))

    def unfinished(self, tps: Iterable[TopicPartition] | None = None) -> list[Job]:
        """Jobs still being worked on (abandoned ones are not: nobody will finish them here)."""
        keys = list(self._ledgers) if tps is None else [tp for tp in tps if tp in self._ledgers]
        return [job for tp in keys for job in self._ledgers[tp] if not job.done and not job.abandoned]

    def in_flight_by_lane(self) -> dict[Lane, int]:
        counts = dict.fromkeys(Lane, 0)
        for ledger in self._ledgers.values():
            for job in ledger:
                counts[job.lane] += 1
        return counts

    def peek_committable(self) -> list[Committable]:
        """The finished prefix of every partition, without removing it."""
        out: list[Committable] = []
        for tp, ledger in self._ledgers.items():
            prefix: list[Job] = []
            for job in ledger:
                if not job.done:
                    break
                prefix.append(job)
            if prefix:
                out.append(
                    Committable(tp, prefix[-1].offset + 1, prefix, complete=len(prefix) == len(ledger))
                )
        return out

    def release(self, committed: Iterable[Committable]) -> None:
        """Forget jobs whose offsets were committed (after `peek_committable`)."""
        for item in committed:
            ledger = self._ledgers.get(item.tp)
            if ledger is None:
                continue  # the partition was revoked meanwhile
            for job in item.jobs:
                if ledger and ledger[0] is job:
                    ledger.popleft()
                    self._count -= 1
            if not ledger:
                del self._ledgers[item.tp]

    def forget(self, tps: Iterable[TopicPartition]) -> list[Job]:
        """Drop partitions (revoked or lost); returns their jobs that never finished."""
        dropped: list[Job] = []
        for tp in tps:
            ledger = self._ledgers.pop(tp, None)
            if ledger:
                self._count -= len(ledger)
                dropped.extend(job for job in ledger if not job.done)
        return dropped
