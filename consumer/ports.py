"""The worker core's view of the outside world, as Protocols.

The core (loop, batching, offsets, dedup policy, processing) is written against these; one
adapter per library implements them (consumer/adapters), and tests use in-memory fakes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from consumer.engine import AudioBuffer
from schemas.model import AudioFormat

# --------------------------------------------------------------------------- object storage --


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size_bytes: int
    content_type: str
    metadata: Mapping[str, str]


class ObjectStore(Protocol):
    """S3-compatible storage. Raises StorageUnavailable (retryable) or ObjectNotFound."""

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None: ...

    def get(self, bucket: str, key: str, *, max_bytes: int | None = None) -> bytes:
        """Raises ObjectTooLarge when the object exceeds max_bytes (checked before download)."""

    def head(self, bucket: str, key: str) -> ObjectInfo | None: ...

    def delete(self, bucket: str, key: str) -> None: ...

    def list_keys(self, bucket: str, prefix: str) -> Iterator[str]: ...

    def presign_get(self, bucket: str, key: str, expires_s: int) -> str: ...


# --------------------------------------------------------------------- cache and single-flight --


@dataclass(frozen=True, slots=True)
class CachedAudio:
    """What the result cache stores per cache key: enough to answer without the engine."""

    uri: str
    content_type: str
    size_bytes: int
    duration_seconds: float
    sample_rate_hz: int
    sha256: str
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class Hit:
    audio: CachedAudio


@dataclass(frozen=True, slots=True)
class Acquired:
    """We hold the single-flight lease: synthesise, then `complete` (or `release`)."""


@dataclass(frozen=True, slots=True)
class HeldElsewhere:
    """Another worker holds the lease: wait for its result (claim again later)."""

    expires_in_ms: int


Claim = Hit | Acquired | HeldElsewhere


class DedupStore(Protocol):
    """Result cache plus single-flight leases (Redis). Raises CacheUnavailable."""

    def claim(self, keys: Sequence[str], owner: str, lease_ttl_ms: int) -> dict[str, Claim]:
        """For each key, in one round trip: the cached result, or take the lease if free
        (or expired: that is how a dead holder's work is taken over), or report the holder."""

    def renew(self, keys: Sequence[str], owner: str, lease_ttl_ms: int) -> set[str]:
        """Extend our leases; returns the keys we still hold."""

    def complete(self, key: str, audio: CachedAudio, owner: str, cache_ttl_s: int) -> None:
        """Store the result and drop our lease, atomically."""

    def release(self, keys: Sequence[str], owner: str) -> None:
        """Drop our leases without a result (abandoned work): waiters take over at once."""


# ---------------------------------------------------------------------------- audio finishing --


@dataclass(frozen=True, slots=True)
class FinishSpec:
    output_format: AudioFormat
    sample_rate_hz: int | None  # None: the engine's native rate (48000 for OGG_OPUS)
    loudness_lufs: float


@dataclass(frozen=True, slots=True)
class EncodedAudio:
    data: bytes
    content_type: str
    sample_rate_hz: int
    duration_seconds: float
    sha256: str


class AudioFinisher(Protocol):
    """Post-processing: resample, loudness-normalise, peak-limit and encode."""

    def profile(self, loudness_lufs: float) -> str:
        """A short string naming every setting that changes the output (part of the cache key)."""

    def finish(self, items: Sequence[tuple[AudioBuffer, FinishSpec]]) -> list[EncodedAudio]: ...
