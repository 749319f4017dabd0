"""The two small caches of the voice resolver, both thread-safe.

* `TtlCache`: entries that may change behind our back (alias -> id, id -> metadata, prompt URI
  -> content id) expire after a few seconds, so a re-registration is seen within that time.
* `SizedLru`: immutable content (prompt audio by content id) kept until memory is needed,
  bounded by a byte budget rather than a count: prompts range from 1 to 30 seconds.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(self, max_entries: int = 4096, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, value = entry
            if self._clock() >= expires:
                del self._entries[key]
                return None
            return value

    def put(self, key: K, value: V, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        with self._lock:
            self._entries[key] = (self._clock() + ttl_s, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def discard(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


class SizedLru(Generic[K, V]):
    def __init__(self, max_bytes: int, size_of: Callable[[V], int]) -> None:
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._sizes: dict[K, int] = {}
        self._total = 0
        self._max_bytes = max_bytes
        self._size_of = size_of
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        size = self._size_of(value)
        with self._lock:
            if key in self._entries:
                self._total -= self._sizes.pop(key)
                del self._entries[key]
            if size > self._max_bytes:
                return  # larger than the whole budget: serve it, do not keep it
            self._entries[key] = value
            self._sizes[key] = size
            self._total += size
            while self._total > self._max_bytes:
                old, _ = self._entries.popitem(last=False)
                self._total -= self._sizes.pop(old)

    @property
    def total_bytes(self) -> int:
        return self._total

    def __len__(self) -> int:
        return len(self._entries)
