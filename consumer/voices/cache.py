"""The two small caches of the voice resolver: cachetools' caches behind a lock (cachetools
leaves locking to its caller).

* `TtlCache`: entries that may change behind our back (alias -> id, id -> metadata, prompt URI
  -> content id) expire after a few seconds, so a re-registration is seen within that time.
  Each entry carries its own time to live (a miss is remembered for less time than a hit):
  cachetools' `TLRUCache`, whose expiry function reads it from the entry.
* `SizedLru`: immutable content (prompt audio by content id) kept until memory is needed,
  bounded by a byte budget rather than a count, since prompts range from 1 to 30 seconds:
  cachetools' `LRUCache` with a size function.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from cachetools import LRUCache, TLRUCache

K = TypeVar("K")
V = TypeVar("V")


def _expires(_key: object, entry: tuple[object, float], now: float) -> float:
    return now + entry[1]


class TtlCache(Generic[K, V]):
    def __init__(self, max_entries: int = 4096, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: TLRUCache[K, tuple[V, float]] = TLRUCache(max_entries, ttu=_expires, timer=clock)
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: K, value: V, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        with self._lock:
            self._entries[key] = (value, ttl_s)

    def discard(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            self._entries.expire()
            return len(self._entries)


class SizedLru(Generic[K, V]):
    def __init__(self, max_bytes: int, size_of: Callable[[V], int]) -> None:
        self._entries: LRUCache[K, V] = LRUCache(max_bytes, getsizeof=size_of)
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._entries.pop(key, None)
            if self._entries.getsizeof(value) > self._entries.maxsize:
                return  # larger than the whole budget: serve it, do not keep it
            self._entries[key] = value

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return int(self._entries.currsize)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
