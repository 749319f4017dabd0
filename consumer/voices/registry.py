"""The voice registry: canonical prompt audio and its metadata in the voices bucket.

Layout (docs/voices.md), under an optional root prefix of the voices bucket:

    voices/<id>/prompt.wav   canonical prompt: mono PCM16 WAV, 24 kHz; <id> = its sha256
    voices/<id>/voice.json   transcript, duration, rate, source description, timestamps
    aliases/<alias>.json     {"alias": ..., "voice_id": <id>, "updated_at_ms": ...}

A voice's id is the hash of what it sounds like, so the cache key changes exactly when the
audio does. Writes go audio, metadata, alias (an alias never points at a voice without audio);
removal goes the other way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from consumer.audio.prompt import CanonicalPrompt, InvalidPromptAudio, PromptLimits, SourceInfo, canonicalise
from consumer.errors import ObjectNotFound
from consumer.ports import ObjectStore
from consumer.voices.errors import VoiceInvalid, VoiceNotFound
from schemas.keys import normalise_text
from schemas.validation import VOICE_ALIAS, VOICE_ID, RequestLimits

log = logging.getLogger(__name__)

VOICES_PREFIX = "voices/"
ALIASES_PREFIX = "aliases/"
RECORD_VERSION = 1
MAX_TRANSCRIPT_CHARS = RequestLimits().max_transcript_chars


def audio_key(voice_id: str, root: str = "") -> str:
    return f"{root}{VOICES_PREFIX}{voice_id}/prompt.wav"


def record_key(voice_id: str, root: str = "") -> str:
    return f"{root}{VOICES_PREFIX}{voice_id}/voice.json"


def alias_key(alias: str, root: str = "") -> str:
    return f"{root}{ALIASES_PREFIX}{alias}.json"


def check_alias(alias: str) -> str:
    """Aliases share the request syntax (schemas.validation) but may not look like an id."""
    if not VOICE_ALIAS.fullmatch(alias) or VOICE_ID.fullmatch(alias):
        raise VoiceInvalid(
            f"voice name {alias!r} must be 1-64 characters of a-z 0-9 . _ - (starting with a letter "
            "or digit) and must not look like a voice id"
        )
    return alias


def check_transcript(transcript: str) -> str:
    """The normalised transcript (what the cache key and the engine see)."""
    text = normalise_text(transcript)
    if not text:
        raise VoiceInvalid("the transcript is empty: give the exact words spoken in the prompt audio")
    if len(text) > MAX_TRANSCRIPT_CHARS:
        raise VoiceInvalid(f"the transcript is longer than {MAX_TRANSCRIPT_CHARS} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cs") and ch != "\n" for ch in text):
        raise VoiceInvalid("the transcript contains control characters")
    return text


@dataclass(frozen=True, slots=True)
class VoiceRecord:
    voice_id: str
    transcript: str
    duration_seconds: float
    sample_rate_hz: int
    created_at_ms: int
    updated_at_ms: int
    source_name: str  # a file name or object URI, for people; never used to resolve anything
    source: SourceInfo

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"version": RECORD_VERSION, **asdict(self)}
        return json.dumps(body, ensure_ascii=False, sort_keys=True, indent=2).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> VoiceRecord:
        try:
            body = json.loads(data)
            return cls(
                voice_id=str(body["voice_id"]),
                transcript=str(body["transcript"]),
                duration_seconds=float(body["duration_seconds"]),
                sample_rate_hz=int(body["sample_rate_hz"]),
                created_at_ms=int(body["created_at_ms"]),
                updated_at_ms=int(body["updated_at_ms"]),
                source_name=str(body.get("source_name", "")),
                source=SourceInfo(**body["source"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise VoiceInvalid("the voice's metadata record is corrupt") from exc


@dataclass(frozen=True, slots=True)
class AliasRecord:
    alias: str
    voice_id: str
    updated_at_ms: int

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> AliasRecord:
        try:
            body = json.loads(data)
            record = cls(str(body["alias"]), str(body["voice_id"]), int(body["updated_at_ms"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise VoiceInvalid("the alias record is corrupt") from exc
        if not VOICE_ID.fullmatch(record.voice_id):
            raise VoiceInvalid("the alias record names no valid voice id")
        return record


@dataclass(frozen=True, slots=True)
class AddOutcome:
    record: VoiceRecord
    alias: str | None
    new_voice: bool  # the audio was not registered before
    transcript_changed: bool  # the audio was registered with another transcript
    previous_voice_id: str | None  # the alias pointed at this other voice before


@dataclass(frozen=True, slots=True)
class RemoveOutcome:
    voice_id: str | None  # the voice deleted, if any
    aliases: list[str] = field(default_factory=list)  # the aliases deleted


class VoiceRegistry:
    """Registry operations on an ObjectStore (StorageUnavailable propagates from every call)."""

    def __init__(
        self,
        store: ObjectStore,
        bucket: str,
        *,
        root: str = "",
        limits: PromptLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if root and not root.endswith("/"):
            raise ValueError("the registry root must be empty or end with '/'")
        self.store = store
        self.bucket = bucket
        self.root = root
        self.limits = limits or PromptLimits()
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # --------------------------------------------------------------------------- writing --

    def add(self, alias: str | None, audio: bytes, transcript: str, *, source_name: str) -> AddOutcome:
        """Register prompt audio (and point `alias` at it). Raises VoiceInvalid."""
        if alias is not None:
            check_alias(alias)
        text = check_transcript(transcript)
        try:
            prompt = canonicalise(audio, self.limits)
        except InvalidPromptAudio as exc:
            raise VoiceInvalid(str(exc)) from exc
        existing = self.record(prompt.content_id)
        now = self._now_ms()
        if existing is None or self.store.head(self.bucket, audio_key(prompt.content_id, self.root)) is None:
            self._put_audio(prompt)
        record = existing
        changed = existing is not None and existing.transcript != text
        if existing is None or changed:
            record = VoiceRecord(
                voice_id=prompt.content_id,
                transcript=text,
                duration_seconds=round(prompt.duration_seconds, 6),
                sample_rate_hz=prompt.audio.sample_rate_hz,
                created_at_ms=existing.created_at_ms if existing else now,
                updated_at_ms=now,
                source_name=source_name,
                source=prompt.source,
            )
            self.store.put(
                self.bucket,
                record_key(record.voice_id, self.root),
                record.to_json(),
                content_type="application/json",
            )
        assert record is not None
        previous = None
        if alias is not None:
            old = self.alias(alias)
            previous = old.voice_id if old is not None and old.voice_id != record.voice_id else None
            self.store.put(
                self.bucket,
                alias_key(alias, self.root),
                AliasRecord(alias, record.voice_id, now).to_json(),
                content_type="application/json",
            )
        log.info(
            "voice registered",
            extra={
                "voice_id": record.voice_id,
                "alias": alias,
                "new_voice": existing is None,
                "duration_s": record.duration_seconds,
            },
        )
        return AddOutcome(record, alias, existing is None, changed, previous)

    def _put_audio(self, prompt: CanonicalPrompt) -> None:
        self.store.put(
            self.bucket,
            audio_key(prompt.content_id, self.root),
            prompt.wav,
            content_type="audio/wav",
            metadata={"voice-id": prompt.content_id},
        )

    def remove(self, ref: str, *, purge: bool = False) -> RemoveOutcome:
        """Remove an alias (and with `purge` its voice), or a voice by id with all its aliases.
        Raises VoiceNotFound."""
        if VOICE_ID.fullmatch(ref):
            voice_id: str | None = ref
            if self.record(ref) is None:
                raise VoiceNotFound(f"no voice with id {ref}")
            doomed = [alias for alias, target in self.aliases().items() if target == ref]
        else:
            record = self.alias(ref)
            if record is None:
                raise VoiceNotFound(f"no voice named {ref!r}")
            voice_id = record.voice_id if purge else None
            doomed = [ref]
            if purge:
                others = self.aliases().items()
                doomed += [a for a, target in others if target == record.voice_id and a != ref]
        for alias in doomed:
            self.store.delete(self.bucket, alias_key(alias, self.root))
        if voice_id is not None:
            self.store.delete(self.bucket, record_key(voice_id, self.root))
            self.store.delete(self.bucket, audio_key(voice_id, self.root))
        log.info("voice removed", extra={"voice_id": voice_id, "aliases": len(doomed)})
        return RemoveOutcome(voice_id, sorted(doomed))

    # --------------------------------------------------------------------------- reading --

    def record(self, voice_id: str) -> VoiceRecord | None:
        try:
            return VoiceRecord.from_json(
                self.store.get(self.bucket, record_key(voice_id, self.root), max_bytes=1 << 20)
            )
        except ObjectNotFound:
            return None

    def audio(self, voice_id: str) -> bytes:
        """The canonical prompt, checked against its id. Raises VoiceNotFound, VoiceInvalid."""
        try:
            data = self.store.get(
                self.bucket, audio_key(voice_id, self.root), max_bytes=self._max_canonical_bytes()
            )
        except ObjectNotFound as exc:
            raise VoiceNotFound(f"voice {voice_id} has no audio") from exc
        if hashlib.sha256(data).hexdigest() != voice_id:
            raise VoiceInvalid(f"the stored audio of voice {voice_id} does not match its id")
        return data

    def _max_canonical_bytes(self) -> int:
        # 16-bit mono at 24 kHz for the longest prompt we accept, plus a generous header.
        return int(self.limits.max_seconds * 24_000 * 2) + 4096

    def alias(self, alias: str) -> AliasRecord | None:
        try:
            return AliasRecord.from_json(
                self.store.get(self.bucket, alias_key(alias, self.root), max_bytes=4096)
            )
        except ObjectNotFound:
            return None

    def voice_id_of(self, ref: str) -> str | None:
        if VOICE_ID.fullmatch(ref):
            return ref
        if not VOICE_ALIAS.fullmatch(ref):
            return None
        record = self.alias(ref)
        return None if record is None else record.voice_id

    def aliases(self) -> dict[str, str]:
        """alias -> voice id, for every alias."""
        result: dict[str, str] = {}
        for key in self.store.list_keys(self.bucket, self.root + ALIASES_PREFIX):
            name = key[len(self.root + ALIASES_PREFIX) :].removesuffix(".json")
            record = self.alias(name)
            if record is not None:
                result[name] = record.voice_id
        return result

    def voices(self) -> list[tuple[VoiceRecord, list[str]]]:
        """Every voice with its aliases, newest first."""
        by_voice: dict[str, list[str]] = {}
        for alias, voice_id in self.aliases().items():
            by_voice.setdefault(voice_id, []).append(alias)
        found: list[tuple[VoiceRecord, list[str]]] = []
        for key in self.store.list_keys(self.bucket, self.root + VOICES_PREFIX):
            if not key.endswith("/voice.json"):
                continue
            record = self.record(key[len(self.root + VOICES_PREFIX) :].split("/", 1)[0])
            if record is not None:
                found.append((record, sorted(by_voice.get(record.voice_id, []))))
        return sorted(found, key=lambda item: item[0].created_at_ms, reverse=True)
