"""Flights: one unit of engine work per cache key, shared by every job that wants that key.

Duplicate requests inside this worker attach to the same flight (coalescing); the flight is
synthesised once and answers all of them. The board keeps the queue the engine draws batches
from — interactive before bulk, oldest first within a lane — bounded by count, estimated cost
and a maximum wait, and the flights waiting on another worker's lease.
"""

from __future__ import annotations

import enum
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from consumer.core.messages import Job, TopicPartition
from consumer.engine import BatchLimits, SynthesisTask
from consumer.ports import FinishSpec
from schemas.topics import Lane


class FlightState(enum.Enum):
    QUEUED = "queued"  # waiting for the engine
    WAITING = "waiting"  # another worker holds the lease
    RUNNING = "running"  # in the engine
    STORING = "storing"  # post-processing, upload, cache write


_sequence = itertools.count()


@dataclass(eq=False)
class Flight:
    key: str
    task: SynthesisTask
    spec: FinishSpec
    jobs: list[Job]
    lane: Lane
    voice_token: str = ""
    leased: bool = False
    state: FlightState = FlightState.QUEUED
    seq: int = field(default_factory=lambda: next(_sequence))
    enqueued_at: float = field(default_factory=time.monotonic)
    not_before: float = 0.0
    retries: int = 0
    quarantine: bool = False
    next_check: float = 0.0


class FlightBoard:
    """Thread-safe; every method takes the board's lock."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._flights: dict[str, Flight] = {}
        self._queues: dict[Lane, OrderedDict[str, Flight]] = {lane: OrderedDict() for lane in Lane}
        self._waiting: dict[str, Flight] = {}
        self._closed = False

    # -------------------------------------------------------------- intake side

    def attach(self, key: str, job: Job) -> bool:
        """Join an existing flight for `key`; False when there is none."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is None:
                return False
            flight.jobs.append(job)
            if job.lane is Lane.INTERACTIVE and flight.lane is Lane.BULK:
                flight.lane = Lane.INTERACTIVE
                if self._queues[Lane.BULK].pop(key, None) is not None:
                    self._queues[Lane.INTERACTIVE][key] = flight
                    self._lock.notify_all()
            return True

    def add(self, flight: Flight) -> None:
        with self._lock:
            self._flights[flight.key] = flight
            self._place(flight)

    def _place(self, flight: Flight) -> None:
        if flight.state is FlightState.WAITING:
            self._queues[flight.lane].pop(flight.key, None)
            self._waiting[flight.key] = flight
        else:
            self._waiting.pop(flight.key, None)
            flight.state = FlightState.QUEUED
            self._queues[flight.lane][flight.key] = flight
            self._lock.notify_all()

    def requeue(self, flight: Flight, *, delay_s: float = 0.0, quarantine: bool | None = None) -> None:
        """Back to the queue (after a transient failure, a takeover, or out of a split batch)."""
        with self._lock:
            if flight.key not in self._flights:
                return
            flight.not_before = time.monotonic() + delay_s
            if quarantine is not None:
                flight.quarantine = quarantine
            flight.state = FlightState.QUEUED
            self._place(flight)

    def wait_elsewhere(self, flight: Flight, check_in_s: float) -> None:
        with self._lock:
            if flight.key not in self._flights:
                return
            self._queues[flight.lane].pop(flight.key, None)
            flight.state = FlightState.WAITING
            flight.next_check = time.monotonic() + check_in_s
            self._waiting[flight.key] = flight

    def finish(self, flight: Flight) -> list[Job]:
        """Remove the flight; returns its jobs (those not dropped by a revocation), once: a
        flight already finished returns none, so no job is ever answered twice."""
        with self._lock:
            if self._flights.get(flight.key) is not flight:
                return []
            del self._flights[flight.key]
            self._queues[flight.lane].pop(flight.key, None)
            self._waiting.pop(flight.key, None)
            return list(flight.jobs)

    # -------------------------------------------------------------- engine side

    def next_batch(self, limits: BatchLimits, max_wait_s: float, timeout_s: float) -> list[Flight]:
        """Block until a batch is due (full, or its oldest flight waited `max_wait_s`) or until
        `timeout_s` passes (then []). Quarantined flights always travel alone."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                batch, cost, earliest = self._select(limits, now)
                if batch:
                    full = len(batch) >= limits.max_items or cost >= limits.max_cost or batch[0].quarantine
                    oldest = min(f.enqueued_at for f in batch)
                    if full or now - oldest >= max_wait_s:
                        for flight in batch:
                            self._queues[flight.lane].pop(flight.key, None)
                            flight.state = FlightState.RUNNING
                        return batch
                    wake = oldest + max_wait_s
                else:
                    wake = earliest if earliest is not None else deadline
                if now >= deadline:
                    return []
                self._lock.wait(max(0.0005, min(wake, deadline) - now))
            return []

    def _select(self, limits: BatchLimits, now: float) -> tuple[list[Flight], int, float | None]:
        batch: list[Flight] = []
        cost = 0
        earliest_not_before: float | None = None
        for lane in (Lane.INTERACTIVE, Lane.BULK):
            for flight in self._queues[lane].values():
                if flight.not_before > now:
                    earliest_not_before = min(earliest_not_before or flight.not_before, flight.not_before)
                    continue
                if flight.quarantine:
                    if not batch:
                        return [flight], flight.task.cost, earliest_not_before
                    continue
                if batch and (len(batch) >= limits.max_items or cost + flight.task.cost > limits.max_cost):
                    return batch, cost, earliest_not_before
                batch.append(flight)
                cost += flight.task.cost
        return batch, cost, earliest_not_before

    def wake(self) -> None:
        with self._lock:
            self._lock.notify_all()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    # -------------------------------------------------------------- bookkeeping

    def due_waiters(self, now: float) -> list[Flight]:
        with self._lock:
            return [f for f in self._waiting.values() if f.next_check <= now]

    def next_waiter_check(self) -> float | None:
        with self._lock:
            return min((f.next_check for f in self._waiting.values()), default=None)

    def has(self, flight: Flight) -> bool:
        with self._lock:
            return self._flights.get(flight.key) is flight

    def holding(self, flights: Iterable[Flight], state: FlightState) -> list[Flight]:
        """Those of `flights` still on the board (not finished or replaced) and in `state`."""
        with self._lock:
            return [f for f in flights if self._flights.get(f.key) is f and f.state is state]

    def working(self) -> bool:
        """Whether any flight is this worker's to move on: queued, in the engine or being stored
        (not waiting for another worker's result)."""
        with self._lock:
            return any(f.state is not FlightState.WAITING for f in self._flights.values())

    def held_keys(self) -> list[str]:
        with self._lock:
            return [f.key for f in self._flights.values() if f.leased]

    def pending_jobs(self, lane: Lane) -> int:
        with self._lock:
            return sum(1 for f in self._flights.values() for j in f.jobs if j.lane is lane)

    def __len__(self) -> int:
        with self._lock:
            return len(self._flights)

    def drop_partitions(self, tps: Iterable[TopicPartition], *, include_started: bool) -> list[Flight]:
        """Detach the jobs of revoked partitions (from flights not yet in the engine, or from all
        when `include_started`). Flights left with no job and not yet started are removed and
        returned (their leases should be released); started ones run to the end regardless."""
        gone = set(tps)
        emptied: list[Flight] = []
        unstarted = (FlightState.QUEUED, FlightState.WAITING)
        with self._lock:
            for flight in list(self._flights.values()):
                if not include_started and flight.state not in unstarted:
                    continue
                keep = [j for j in flight.jobs if j.tp not in gone]
                for job in flight.jobs:
                    if job.tp in gone:
                        job.abandoned = True
                flight.jobs = keep
                if not keep and flight.state in unstarted:
                    del self._flights[flight.key]
                    self._queues[flight.lane].pop(flight.key, None)
                    self._waiting.pop(flight.key, None)
                    emptied.append(flight)
        return emptied

    def drain_all(self) -> list[Flight]:
        """Remove every flight not yet in the engine (shutdown after the drain window)."""
        with self._lock:
            dropped = [
                f for f in self._flights.values() if f.state in (FlightState.QUEUED, FlightState.WAITING)
            ]
            for flight in dropped:
                del self._flights[flight.key]
                self._queues[flight.lane].pop(flight.key, None)
                self._waiting.pop(flight.key, None)
                for job in flight.jobs:
                    job.abandoned = True
            return dropped
