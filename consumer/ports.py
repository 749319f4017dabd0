"""The worker core's view of the outside world, as Protocols.

The core (loop, batching, offsets, dedup policy, processing) is written against these; one
adapter per library implements them (consumer/adapters), and tests use in-memory fakes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from consumer.core.messages import InboundMessage, OutboundRecord, TopicPartition
from consumer.engine import AudioBuffer, PromptAudio
from schemas.keys import ResolvedVoice
from schemas.model import AudioFormat, Voice

# --------------------------------------------------------------------------- object storage --


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size_bytes: int


@dataclass(frozen=True, slots=True)
class PutObject:
    key: str
    data: bytes
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

    def put_many(self, bucket: str, objects: Sequence[PutObject]) -> list[Exception | None]:
        """Upload concurrently; per object, None or the error (already one of ours). Never raises
        for a single object, so one failure does not hide the others' success."""

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
    # What produced it, so operators can purge by voice or by engine/model version.
    engine: str = ""
    model_version: str = ""
    voice: str = ""  # ResolvedVoice.token(): "preset:<name>" or "content:<voice id>"


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

    def complete_many(self, entries: Sequence[tuple[str, CachedAudio]], owner: str, cache_ttl_s: int) -> None:
        """`complete` for many keys in one round trip."""

    def count_lookups(self, hits: int, misses: int) -> None:
        """Add to the cluster-wide hit/miss counters (written with the next round trip)."""


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


# ------------------------------------------------------------------------- crash-loop ledger --


class CrashLedger(Protocol):
    """Remembers which messages were in the engine when a worker died (Redis).

    Before each engine batch the worker records the batch's message ids under its instance id;
    a restarted instance turns the previous record into crash counts. A message with crashes is
    synthesised alone; one that reached the limit goes to the DLQ. Raises CacheUnavailable.
    """

    def recover(self, instance_id: str) -> int:
        """Count the previous incarnation's in-flight messages as crashed; returns how many."""

    def begin(self, instance_id: str, message_ids: Sequence[str]) -> dict[str, int]:
        """Record the batch as in flight; returns the crash count of each message id."""

    def end(self, instance_id: str) -> None:
        """The batch left the engine: nothing of ours is in flight."""


# ---------------------------------------------------------------------------------- kafka --


class ConsumerPort(Protocol):
    """The consumer side of the Kafka client as the loop uses it (confluent-kafka adapter)."""

    def subscribe(
        self,
        topics: Sequence[str],
        on_assign: AssignmentCallback,
        on_revoke: AssignmentCallback,
        on_lost: AssignmentCallback,
    ) -> None: ...

    def consume(self, max_messages: int, timeout_s: float) -> list[InboundMessage]: ...

    def pause(self, tps: Sequence[TopicPartition]) -> None: ...

    def resume(self, tps: Sequence[TopicPartition]) -> None: ...

    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    def assignment(self) -> list[TopicPartition]:
        """The partitions the client holds now (none while it is out of the group)."""

    def positions(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The next offset the application will receive per partition (past control records)."""

    def lag(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Messages between our position and the cached high watermark (no broker round trip)."""

    def committed(self, tps: Sequence[TopicPartition], timeout_s: float) -> dict[TopicPartition, int]:
        """The group's committed offset per partition, read as stable (a partition whose offset
        an open transaction is still writing is waited for); partitions the group never
        committed are absent. Raises BrokerUnavailable, also when `timeout_s` runs out."""

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Synchronous commit; raises BrokerUnavailable."""

    def group_metadata(self) -> object: ...

    def close(self) -> None: ...


class AssignmentCallback(Protocol):
    def __call__(self, tps: list[TopicPartition]) -> None: ...


class ProducerPort(Protocol):
    """Producing results and dead letters, optionally transactionally."""

    def produce(self, record: OutboundRecord) -> None: ...

    def flush(self, timeout_s: float) -> None:
        """Wait for every produced record to be acknowledged; raises BrokerUnavailable."""

    def begin(self) -> None: ...

    def send_offsets(self, offsets: Mapping[TopicPartition, int], group_metadata: object) -> None: ...

    def commit(self) -> None:
        """Commit the transaction; raises TransactionInDoubt (its outcome is unknown: commit
        again), BrokerUnavailable (it failed: abort, then retry) or ProducerFenced."""

    def abort(self) -> None:
        """Abort the transaction; raises BrokerUnavailable when it has not finished yet (abort
        again: librdkafka resumes it)."""

    def close(self) -> None: ...


# --------------------------------------------------------------------------------- voices --


@dataclass(frozen=True, slots=True)
class Resolution:
    """A request's voice as the worker understands it: what goes into the cache key, and the
    prompt audio the engine clones from (None for presets)."""

    key_voice: ResolvedVoice
    prompt: PromptAudio | None = None


class VoiceResolver(Protocol):
    """Turns a voice reference into a Resolution. Raises VoiceResolutionError (the request
    fails with its code) or RetryableError (storage down: try again later)."""

    def resolve(self, voice: Voice) -> Resolution: ...


# ------------------------------------------------------------------------------ result index --


class ResultIndex(Protocol):
    """A bounded, expiring index of recent results by request id (Redis), written after each
    commit so `tts-stream results get` finds a result without scanning the results topic.
    Best effort: raises CacheUnavailable, which the caller logs and ignores."""

    def record(self, results: Sequence[tuple[str, bytes]], ttl_s: int) -> None:
        """(request id, the result event's bytes as published) pairs."""
