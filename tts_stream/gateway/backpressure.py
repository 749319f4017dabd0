"""When to refuse new work with 429 OVERLOADED: too many waiters here, or a backlog in the lane.

Two signals, both cheap per request:
* this replica's waiters (requests waiting for a result or a broker ack): a bound on memory and
  on how much one replica has promised;
* the workers' lag on the interactive lane, read every `lag_check_interval_s` in a thread the
  way KEDA reads it (tts_stream/ops/lag.py). A backlog means new requests would wait behind it,
  likely past their deadlines; better to tell callers when to come back. Retry-After is the
  time the workers need to drain the excess at the rate they were seen consuming.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from tts_stream.ops.lag import LagReader

log = logging.getLogger(__name__)

MIN_RETRY_S = 1.0
MAX_RETRY_S = 60.0
UNKNOWN_RATE_RETRY_S = 5.0


@dataclass(frozen=True, slots=True)
class LagReading:
    lag: int
    consumed_per_s: float | None
    taken_at: float


def retry_after_s(lag: int, limit: int, consumed_per_s: float | None) -> float:
    """Seconds for the workers to bring `lag` back under `limit` at the rate they consume."""
    if not consumed_per_s or consumed_per_s <= 0:
        return UNKNOWN_RATE_RETRY_S
    return min(MAX_RETRY_S, max(MIN_RETRY_S, math.ceil((lag - limit) / consumed_per_s)))


class LaneLagWatch:
    """Reads the interactive lane's lag in the background; `excess()` answers from memory."""

    def __init__(self, reader: LagReader, *, limit: int, interval_s: float) -> None:
        self._reader = reader
        self.limit = limit
        self._interval_s = interval_s
        self.reading: LagReading | None = None
        self._committed: tuple[int, float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-lag", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def read_once(self) -> LagReading:
        states = self._reader.lane("interactive")
        now = time.monotonic()
        lag = sum(p.lag() for p in states)
        committed = sum(p.committed if p.committed is not None else p.log_start for p in states)
        rate = None
        if self._committed is not None and now > self._committed[1]:
            rate = max(0.0, (committed - self._committed[0]) / (now - self._committed[1]))
        self._committed = (committed, now)
        self.reading = LagReading(lag, rate, now)
        return self.reading

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.read_once()
            except Exception as exc:  # Kafka unreachable: keep the last reading, say so
                log.warning("could not read the interactive lane's lag: %s", exc)

    def excess(self) -> float | None:
        """Seconds to wait when the lane is over its limit, else None."""
        reading = self.reading
        if self.limit <= 0 or reading is None or reading.lag <= self.limit:
            return None
        return retry_after_s(reading.lag, self.limit, reading.consumed_per_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
