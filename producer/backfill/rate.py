"""`--rate 500/s`: a token bucket that paces submissions without drifting."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

_RATE = re.compile(r"\s*(?P<n>\d+(?:\.\d+)?)\s*(?:/\s*(?P<unit>s|sec|m|min|h|hour))?\s*")
_PER_S = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(text: str) -> float:
    """`500/s`, `30000/m`, `1000000/h` (a bare number means per second) -> events per second."""
    match = _RATE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a rate such as 500/s, 20000/m or 1000000/h")
    rate = float(match["n"]) / _PER_S[match["unit"] or "s"]
    if rate <= 0:
        raise ValueError("the rate must be above zero")
    return rate


class TokenBucket:
    """Allows `rate` events per second on average, bursts of up to `burst`.

    `acquire()` sleeps just long enough; time is measured, never assumed, so a slow consumer
    of tokens does not earn a burst larger than `burst` afterwards.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        # A tenth of a second's worth by default: smooth, yet cheap per event at high rates.
        self.burst = max(1.0, burst if burst is not None else rate / 10)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()

    def acquire(self, n: float = 1.0) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= n
        if self._tokens < 0:
            # In debt: sleep until it is paid off. The next call's refill starts after the sleep.
            self._sleep(-self._tokens / self.rate)
