"""The result cache in Redis: hit ratio, size, and purges.

Entries are `tts:{<cache key>}:result` (JSON of `consumer.ports.CachedAudio`, which records the
engine, model version and voice token that produced it), leases `tts:{<cache key>}:lease`. The
workers count lookups in `tts:stats:cache-hits` / `tts:stats:cache-misses`.

Purging deletes cache entries only, never audio objects: results already delivered still point
at them (a bucket lifecycle rule removes old audio). A purged key is synthesised again on its
next request.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from consumer.adapters.redis_store import CACHE_HITS_KEY, CACHE_MISSES_KEY, result_key
from tts_stream.ops.errors import BadArgument, ServiceUnavailable

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

RESULT_PATTERN = "tts:{*}:result"
LEASE_PATTERN = "tts:{*}:lease"
_CACHE_KEY = re.compile(r"[0-9a-f]{64}")
_VOICE_ID = re.compile(r"[0-9a-f]{64}")
_SCAN_BATCH = 500


def voice_token(text: str) -> str:
    """What `--voice` accepts, as the token cache entries record (ResolvedVoice.token())."""
    value = text.strip()
    if _VOICE_ID.fullmatch(value):
        return f"content:{value}"
    kind, sep, rest = value.partition(":")
    if sep and rest and kind in ("preset", "content"):
        if kind == "content" and not _VOICE_ID.fullmatch(rest):
            raise BadArgument(f"{text!r}: a voice id is 64 lowercase hex characters")
        return value
    raise BadArgument(
        f"{text!r} is not a voice: use a voice id (64 hex), content:<voice id> or preset:<name> "
        "(`tts-stream voices show ALIAS` prints an alias's voice id)"
    )


def check_cache_key(text: str) -> str:
    value = text.strip()
    if not _CACHE_KEY.fullmatch(value):
        raise BadArgument(f"{text!r} is not a cache key: 64 lowercase hex characters (as results print it)")
    return value


def cache_key_of(redis_key: bytes | str) -> str:
    text = redis_key.decode() if isinstance(redis_key, bytes) else redis_key
    return text[len("tts:{") : -len("}:result")]


@dataclass(frozen=True)
class Selector:
    """Which entries a purge removes: any that matches every given criterion."""

    voices: frozenset[str] = frozenset()
    engine: str | None = None
    model_version: str | None = None
    cache_keys: frozenset[str] = frozenset()
    everything: bool = False

    def __post_init__(self) -> None:
        given = bool(self.voices or self.engine or self.model_version or self.cache_keys)
        if not given and not self.everything:
            raise BadArgument("say what to purge: --voice, --engine, --model-version, --cache-key or --all")
        if given and self.everything:
            raise BadArgument("--all purges every entry: do not combine it with other criteria")
        if self.cache_keys and (self.voices or self.engine or self.model_version):
            raise BadArgument("--cache-key names entries exactly: do not combine it with other criteria")

    def matches(self, entry: dict[str, Any]) -> bool:
        if self.everything:
            return True
        if self.voices and entry.get("voice") not in self.voices:
            return False
        if self.engine is not None and entry.get("engine") != self.engine:
            return False
        return not (self.model_version is not None and entry.get("model_version") != self.model_version)


@dataclass
class Stats:
    hits: int
    misses: int
    entries: int = 0
    leases: int = 0
    audio_bytes: int = 0
    by_producer: Counter[tuple[str, str]] = field(default_factory=Counter)  # (engine, model) -> n
    unattributed: int = 0  # entries written before they recorded engine/model/voice

    @property
    def hit_ratio(self) -> float | None:
        total = self.hits + self.misses
        return None if total == 0 else self.hits / total

    def as_dict(self) -> dict[str, Any]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_ratio": self.hit_ratio,
            "entries": self.entries,
            "leases_held": self.leases,
            "audio_bytes_referenced": self.audio_bytes,
            "entries_by_engine_model": [
                {"engine": e, "model_version": m, "entries": n}
                for (e, m), n in sorted(self.by_producer.items())
            ],
            "entries_without_provenance": self.unattributed,
        }


@dataclass(frozen=True)
class PurgeReport:
    scanned: int
    matched: int
    deleted: int
    dry_run: bool


def _wrap(what: str, exc: Exception) -> ServiceUnavailable:
    return ServiceUnavailable(f"Redis did not answer ({what}): {exc}")


class CacheAdmin:
    def __init__(self, client: redis.Redis | redis.RedisCluster) -> None:
        self._redis = client
        # Entries live in every slot of a Redis Cluster, where one MGET may not span slots: the
        # cluster client's non-atomic MGET asks each node for its share (a snapshot needs no more).
        self._mget: Callable[[list[Any]], list[Any]] = getattr(client, "mget_nonatomic", client.mget)

    def _entries(self) -> Iterator[tuple[bytes, dict[str, Any] | None]]:
        """(redis key, decoded entry or None) for every cache entry, in SCAN batches."""
        batch: list[bytes] = []
        for key in self._redis.scan_iter(match=RESULT_PATTERN, count=_SCAN_BATCH):
            batch.append(key)
            if len(batch) >= _SCAN_BATCH:
                yield from self._load(batch)
                batch = []
        if batch:
            yield from self._load(batch)

    def _load(self, keys: list[bytes]) -> Iterator[tuple[bytes, dict[str, Any] | None]]:
        values = self._mget(keys)
        for key, raw in zip(keys, values, strict=True):
            if raw is None:  # expired between SCAN and MGET
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                entry = None
            yield key, entry if isinstance(entry, dict) else None

    def counters(self) -> tuple[int, int]:
        import redis

        try:
            hits, misses = self._mget([CACHE_HITS_KEY, CACHE_MISSES_KEY])
        except redis.RedisError as exc:
            raise _wrap("cache counters", exc) from exc
        return int(hits or 0), int(misses or 0)

    def stats(self, *, scan: bool = True) -> Stats:
        import redis

        hits, misses = self.counters()
        stats = Stats(hits, misses)
        if not scan:
            return stats
        try:
            for _, entry in self._entries():
                stats.entries += 1
                if entry is None:
                    stats.unattributed += 1
                    continue
                stats.audio_bytes += int(entry.get("size_bytes") or 0)
                engine, model = str(entry.get("engine") or ""), str(entry.get("model_version") or "")
                if engine:
                    stats.by_producer[(engine, model)] += 1
                else:
                    stats.unattributed += 1
            stats.leases = sum(1 for _ in self._redis.scan_iter(match=LEASE_PATTERN, count=_SCAN_BATCH))
        except redis.RedisError as exc:
            raise _wrap("cache scan", exc) from exc
        return stats

    def purge(self, selector: Selector, *, dry_run: bool = False) -> PurgeReport:
        import redis

        try:
            if selector.cache_keys:
                keys = [result_key(k) for k in sorted(selector.cache_keys)]
                present = int(self._redis.exists(*keys))
                deleted = 0 if dry_run else int(self._redis.delete(*keys))
                report = PurgeReport(len(keys), present, deleted, dry_run)
            else:
                scanned = matched = deleted = 0
                doomed: list[bytes] = []
                for key, entry in self._entries():
                    scanned += 1
                    if selector.everything or (entry is not None and selector.matches(entry)):
                        matched += 1
                        doomed.append(key)
                    if len(doomed) >= _SCAN_BATCH:
                        deleted += self._delete(doomed, dry_run)
                        doomed = []
                deleted += self._delete(doomed, dry_run)
                report = PurgeReport(scanned, matched, deleted, dry_run)
        except redis.RedisError as exc:
            raise _wrap("cache purge", exc) from exc
        log.info(
            "cache purge",
            extra={"matched": report.matched, "deleted": report.deleted, "dry_run": dry_run},
        )
        return report

    def _delete(self, keys: list[bytes], dry_run: bool) -> int:
        if dry_run or not keys:
            return 0
        return int(self._redis.unlink(*keys))
