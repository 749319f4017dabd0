"""Flow control by pausing partitions (never by blocking the poll loop).

Three reasons to pause, re-evaluated every loop iteration:

* **budget** — messages taken and not yet committed reached `max_in_flight`: pause everything
  until it falls below 80% (hysteresis keeps pause/resume from flapping);
* **lane priority** — the bulk lane may hold at most half the budget, and is paused entirely
  while the interactive lane has a backlog (unconsumed interactive messages, or more queued
  interactive work than one engine batch). Interactive work is also drawn first by the batcher;
* **retry later** — a partition whose message must be retried (schema registry down) is paused
  until its back-off time, after a seek back to that message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from consumer.core.messages import TopicPartition
from consumer.metrics import Metrics
from consumer.ports import ConsumerPort
from schemas.topics import Lane

RESUME_FRACTION = 0.8
BULK_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class FlowInputs:
    in_flight: dict[Lane, int]
    interactive_backlog: bool
    stopping: bool = False


class FlowController:
    def __init__(
        self,
        consumer: ConsumerPort,
        metrics: Metrics,
        *,
        max_in_flight: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._consumer = consumer
        self._metrics = metrics
        self._max_in_flight = max_in_flight
        self._assigned: dict[TopicPartition, Lane] = {}
        self._paused: set[TopicPartition] = set()
        self._held_until: dict[TopicPartition, float] = {}
        self._budget_paused = False
        self._bulk_budget_paused = False

    def owns(self, tp: TopicPartition) -> bool:
        return tp in self._assigned

    def assigned(self, lane: Lane | None = None) -> list[TopicPartition]:
        return [tp for tp, tp_lane in self._assigned.items() if lane is None or tp_lane is lane]

    def add(self, tps: Sequence[TopicPartition], lane_of: dict[str, Lane]) -> None:
        for tp in tps:
            self._assigned[tp] = lane_of[tp.topic]
            # A newly assigned partition starts fetching; it is paused on the next update if needed.
            self._paused.discard(tp)

    def remove(self, tps: Sequence[TopicPartition]) -> None:
        for tp in tps:
            self._assigned.pop(tp, None)
            self._paused.discard(tp)
            self._held_until.pop(tp, None)

    def hold(self, tp: TopicPartition, seconds: float) -> None:
        self._held_until[tp] = self._clock() + seconds

    def update(self, inputs: FlowInputs) -> None:
        total = sum(inputs.in_flight.values())
        if self._budget_paused:
            self._budget_paused = total > self._max_in_flight * RESUME_FRACTION
        else:
            self._budget_paused = total >= self._max_in_flight
        bulk_limit = self._max_in_flight * BULK_SHARE
        bulk = inputs.in_flight.get(Lane.BULK, 0)
        if self._bulk_budget_paused:
            self._bulk_budget_paused = bulk > bulk_limit * RESUME_FRACTION
        else:
            self._bulk_budget_paused = bulk >= bulk_limit

        now = self._clock()
        for tp, until in list(self._held_until.items()):
            if until <= now:
                del self._held_until[tp]

        desired: set[TopicPartition] = set(self._held_until)
        if inputs.stopping or self._budget_paused:
            desired.update(self._assigned)
        elif inputs.interactive_backlog or self._bulk_budget_paused:
            desired.update(self.assigned(Lane.BULK))

        to_pause = sorted(desired - self._paused)
        to_resume = sorted(self._paused - desired)
        if to_pause:
            self._consumer.pause(to_pause)
        if to_resume:
            self._consumer.resume(to_resume)
        if to_pause or to_resume:
            self._paused = desired & set(self._assigned)
            for lane in Lane:
                self._metrics.paused_by[lane.value].set(
                    sum(1 for tp in self._paused if self._assigned.get(tp) is lane)
                )
