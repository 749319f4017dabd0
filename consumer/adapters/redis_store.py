"""DedupStore and CrashLedger on Redis.

Keys (one hash tag per cache key, so each key's cache entry and lease live in one slot and the
scripts also work on Redis Cluster):

    tts:{<cache key>}:result     JSON of CachedAudio, expires after cache_ttl_s
    tts:{<cache key>}:lease      owner token, expires after lease_ttl_ms unless renewed
    tts:crash:{<group>}:inflight:<instance>   message ids in this instance's engine right now
    tts:crash:{<group>}:counts   hash: message id -> crashes it was present for

A batch of keys is one pipeline of per-key scripts: one network round trip however many keys
(one per node holding some of them on a Redis Cluster). The client is whatever
`redis_connect.RedisTopology` made: a single server, a Sentinel master or a Redis Cluster.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from consumer.adapters.redis_connect import RedisTopology
from consumer.errors import CacheUnavailable
from consumer.ports import Acquired, CachedAudio, Claim, HeldElsewhere, Hit

log = logging.getLogger(__name__)
T = TypeVar("T")

# Cached result → return it. Free (or expired) lease → take it. Our own lease → refresh it
# (a retry after a timeout). A lease of an earlier incarnation of our own instance (owner
# "<instance>|<incarnation>") → take it: that incarnation is dead, since an instance id is live in
# one process at a time, and waiting out its lease would only delay a restarted worker.
# Someone else's → report how long it has left.
_CLAIM = """
local cached = redis.call('GET', KEYS[1])
if cached then return {'hit', cached} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'acquired', ''} end
local holder = redis.call('GET', KEYS[2])
if holder == ARGV[1] or (holder and string.sub(holder, 1, #ARGV[3]) == ARGV[3]) then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return {'acquired', ''}
end
return {'held', tostring(redis.call('PTTL', KEYS[2]))}
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_COMPLETE = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
"""

CRASH_RECORD_TTL_S = 24 * 3600
CACHE_HITS_KEY = "tts:stats:cache-hits"
CACHE_MISSES_KEY = "tts:stats:cache-misses"


def result_key(cache_key: str) -> str:
    return f"tts:{{{cache_key}}}:result"


def lease_key(cache_key: str) -> str:
    return f"tts:{{{cache_key}}}:lease"


RedisClient = redis.Redis | redis.RedisCluster


class RedisStore:
    def __init__(self, client: RedisClient, *, group_id: str) -> None:
        self._redis = client
        self._sources = (_CLAIM, _RENEW, _RELEASE, _COMPLETE)
        self._claim: Script = client.register_script(_CLAIM)
        self._renew: Script = client.register_script(_RENEW)
        self._release: Script = client.register_script(_RELEASE)
        self._complete: Script = client.register_script(_COMPLETE)
        self._crash_prefix = f"tts:crash:{{{group_id}}}"
        self._unsent_hits = 0
        self._unsent_misses = 0

    @classmethod
    def from_topology(cls, topology: RedisTopology, *, group_id: str) -> RedisStore:
        return cls(topology.client(), group_id=group_id)

    @classmethod
    def from_url(cls, url: str, *, password: str | None, group_id: str, timeout_s: float = 2.0) -> RedisStore:
        """One Redis server by URL (rediss:// for TLS)."""
        options = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "health_check_interval": 15,
        }
        return cls.from_topology(RedisTopology(url, password=password, options=options), group_id=group_id)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """The one place redis errors become ours."""
        try:
            return fn()
        except redis.RedisError as exc:
            raise CacheUnavailable(f"redis {what}: {exc}") from exc

    def _pipelined(self, fill: Callable[[Any, bool], None]) -> list[Any]:
        """Run the commands `fill(pipe, first_try)` queues in one non-transactional pipeline.

        Scripts go as bare EVALSHA (`_queue`). Handing redis-py the Script object instead makes
        its pipeline ask SCRIPT EXISTS before every execution: a round trip per claim, renewal
        and completion (6 % of a worker's samples under a cache-hit load), for an event that is
        rare: a node without our scripts (a restart, a promoted replica, and every node of a
        cluster, whose pipeline never loads them itself). Then the pipeline answers NOSCRIPT:
        load them (SCRIPT LOAD goes to every primary) and run it again. The other commands of
        the first try ran anyway (no transaction), so `first_try` tells `fill` not to repeat
        those that must not run twice."""
        for first_try in (True, False):
            pipe = self._redis.pipeline(transaction=False)
            fill(pipe, first_try)
            try:
                return list(pipe.execute())
            except NoScriptError:
                if not first_try:
                    raise
                for source in self._sources:
                    self._redis.script_load(source)
        raise AssertionError("unreachable")

    @staticmethod
    def _queue(pipe: Any, script: Script, keys: Sequence[str], args: Sequence[object]) -> None:
        pipe.evalsha(script.sha, len(keys), *keys, *args)

    @property
    def client(self) -> RedisClient:
        return self._redis

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False

    # ------------------------------------------------------------------ DedupStore

    def claim(self, keys: Sequence[str], owner: str, lease_ttl_ms: int) -> dict[str, Claim]:
        hits, misses = self._unsent_hits, self._unsent_misses
        instance_prefix = owner.split("|", 1)[0] + "|"

        def fill(pipe: Any, first_try: bool) -> None:
            for key in keys:
                self._queue(
                    pipe,
                    self._claim,
                    [result_key(key), lease_key(key)],
                    [owner, lease_ttl_ms, instance_prefix],
                )
            # The counters ride along (no round trip of their own), once: a retry after NOSCRIPT
            # would count them twice.
            if first_try and (hits or misses):
                pipe.incrby(CACHE_HITS_KEY, hits)
                pipe.incrby(CACHE_MISSES_KEY, misses)

        def run() -> list[Any]:
            return self._pipelined(fill)

        replies = self._call("claim", run)[: len(keys)]
        self._unsent_hits -= hits
        self._unsent_misses -= misses
        out: dict[str, Claim] = {}
        for key, (raw_kind, value) in zip(keys, replies, strict=True):
            kind = raw_kind.decode() if isinstance(raw_kind, bytes) else raw_kind
            if kind == "hit":
                out[key] = Hit(_decode_cached(value))
            elif kind == "acquired":
                out[key] = Acquired()
            else:
                out[key] = HeldElsewhere(max(0, int(value)))
        return out

    def renew(self, keys: Sequence[str], owner: str, lease_ttl_ms: int) -> set[str]:
        def fill(pipe: Any, _first_try: bool) -> None:
            for key in keys:
                self._queue(pipe, self._renew, [lease_key(key)], [owner, lease_ttl_ms])

        def run() -> list[Any]:
            return self._pipelined(fill)

        replies = self._call("renew", run)
        return {key for key, kept in zip(keys, replies, strict=True) if kept}

    def complete(self, key: str, audio: CachedAudio, owner: str, cache_ttl_s: int) -> None:
        self.complete_many([(key, audio)], owner, cache_ttl_s)

    def complete_many(self, entries: Sequence[tuple[str, CachedAudio]], owner: str, cache_ttl_s: int) -> None:
        def fill(pipe: Any, _first_try: bool) -> None:
            for key, audio in entries:
                value = json.dumps(asdict(audio), separators=(",", ":"))
                self._queue(
                    pipe, self._complete, [result_key(key), lease_key(key)], [value, cache_ttl_s, owner]
                )

        def run() -> None:
            self._pipelined(fill)

        if entries:
            self._call("complete", run)

    def release(self, keys: Sequence[str], owner: str) -> None:
        def fill(pipe: Any, _first_try: bool) -> None:
            for key in keys:
                self._queue(pipe, self._release, [lease_key(key)], [owner])

        def run() -> None:
            self._pipelined(fill)

        self._call("release", run)

    def count_lookups(self, hits: int, misses: int) -> None:
        self._unsent_hits += hits
        self._unsent_misses += misses

    # ------------------------------------------------------------------ CrashLedger

    def _inflight_key(self, instance_id: str) -> str:
        return f"{self._crash_prefix}:inflight:{instance_id}"

    def recover(self, instance_id: str) -> int:
        key = self._inflight_key(instance_id)
        counts = f"{self._crash_prefix}:counts"

        def run() -> int:
            raw = self._redis.get(key)
            ids: list[str] = json.loads(raw) if raw else []
            if ids:
                pipe = self._redis.pipeline(transaction=True)
                for message_id in ids:
                    pipe.hincrby(counts, message_id, 1)
                pipe.expire(counts, CRASH_RECORD_TTL_S)
                pipe.delete(key)
                pipe.execute()
            return len(ids)

        return self._call("recover crash record", run)

    def begin(self, instance_id: str, message_ids: Sequence[str]) -> dict[str, int]:
        def run() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            pipe.set(self._inflight_key(instance_id), json.dumps(list(message_ids)), ex=CRASH_RECORD_TTL_S)
            pipe.hmget(f"{self._crash_prefix}:counts", list(message_ids) or ["-"])
            return list(pipe.execute())

        _, counts = self._call("record in-flight batch", run)
        return {mid: int(c) for mid, c in zip(message_ids, counts, strict=False) if c is not None}

    def end(self, instance_id: str) -> None:
        self._call("clear in-flight batch", lambda: self._redis.delete(self._inflight_key(instance_id)))


def result_index_key(request_id: str) -> str:
    return f"tts:result-index:{request_id}"


class RedisResultIndex:
    """ResultIndex on Redis: `tts:result-index:<request id>` -> the result event's bytes."""

    def __init__(self, client: RedisClient) -> None:
        self._redis = client

    def record(self, results: Sequence[tuple[str, bytes]], ttl_s: int) -> None:
        try:
            pipe = self._redis.pipeline(transaction=False)
            for request_id, value in results:
                pipe.set(result_index_key(request_id), value, ex=ttl_s)
            pipe.execute()
        except redis.RedisError as exc:
            raise CacheUnavailable(f"redis result index: {exc}") from exc

    def get(self, request_id: str) -> bytes | None:
        try:
            value = self._redis.get(result_index_key(request_id))
        except redis.RedisError as exc:
            raise CacheUnavailable(f"redis result index: {exc}") from exc
        return value if isinstance(value, bytes) else None


def _decode_cached(raw: bytes | str) -> CachedAudio:
    data = json.loads(raw)
    known = CachedAudio.__dataclass_fields__
    return CachedAudio(**{k: v for k, v in data.items() if k in known})
