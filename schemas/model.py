"""Domain objects of the event contract and their explicit conversion to and from Avro datums.

The dataclasses are what both sides program against; the `*_to_avro` / `*_from_avro` functions
are the only place that knows the Avro field layout (union branches are written in fastavro's
tuple notation so the writer never has to guess a branch).
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

NAMESPACE = "io.ttsstream"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class AudioFormat(enum.StrEnum):
    WAV = "WAV"
    FLAC = "FLAC"
    OGG_OPUS = "OGG_OPUS"
    MP3 = "MP3"

    @property
    def extension(self) -> str:
        return _EXTENSIONS[self]

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES[self]


_EXTENSIONS = {
    AudioFormat.WAV: "wav",
    AudioFormat.FLAC: "flac",
    AudioFormat.OGG_OPUS: "ogg",
    AudioFormat.MP3: "mp3",
}
_CONTENT_TYPES = {
    AudioFormat.WAV: "audio/wav",
    AudioFormat.FLAC: "audio/flac",
    AudioFormat.OGG_OPUS: "audio/ogg; codecs=opus",
    AudioFormat.MP3: "audio/mpeg",
}


class ResultStatus(enum.StrEnum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class ErrorCode(enum.StrEnum):
    """Stable failure codes carried in results (see docs/errors.md)."""

    INVALID_REQUEST = "INVALID_REQUEST"
    TEXT_TOO_LONG = "TEXT_TOO_LONG"
    UNSUPPORTED_LANGUAGE = "UNSUPPORTED_LANGUAGE"
    UNSUPPORTED = "UNSUPPORTED"
    VOICE_NOT_FOUND = "VOICE_NOT_FOUND"
    VOICE_NOT_ALLOWED = "VOICE_NOT_ALLOWED"
    VOICE_INVALID = "VOICE_INVALID"
    REPLY_TOPIC_NOT_ALLOWED = "REPLY_TOPIC_NOT_ALLOWED"
    EXPIRED = "EXPIRED"
    ENGINE_ERROR = "ENGINE_ERROR"
    INTERNAL = "INTERNAL"
    UNKNOWN = "UNKNOWN"


# ------------------------------------------------------------------------------------ voices --


@dataclass(frozen=True, slots=True)
class PresetVoice:
    """An engine's built-in voice, by name."""

    name: str


@dataclass(frozen=True, slots=True)
class RegisteredVoice:
    """A voice from the registry, by content id (64 hex) or alias."""

    ref: str


@dataclass(frozen=True, slots=True)
class PromptAudioVoice:
    """Zero-shot cloning from prompt audio stored at an allow-listed object URI."""

    audio_uri: str
    transcript: str


Voice = PresetVoice | RegisteredVoice | PromptAudioVoice

_VOICE_BRANCHES: dict[type[Any], str] = {
    PresetVoice: f"{NAMESPACE}.PresetVoice",
    RegisteredVoice: f"{NAMESPACE}.RegisteredVoice",
    PromptAudioVoice: f"{NAMESPACE}.PromptAudioVoice",
}


def voice_to_avro(voice: Voice) -> tuple[str, dict[str, str]]:
    if isinstance(voice, PresetVoice):
        return _VOICE_BRANCHES[PresetVoice], {"name": voice.name}
    if isinstance(voice, RegisteredVoice):
        return _VOICE_BRANCHES[RegisteredVoice], {"ref": voice.ref}
    return _VOICE_BRANCHES[PromptAudioVoice], {
        "audio_uri": voice.audio_uri,
        "transcript": voice.transcript,
    }


def voice_from_avro(value: tuple[str, Mapping[str, str]]) -> Voice:
    name, fields = value
    short = name.rsplit(".", 1)[-1]
    if short == "PresetVoice":
        return PresetVoice(fields["name"])
    if short == "RegisteredVoice":
        return RegisteredVoice(fields["ref"])
    if short == "PromptAudioVoice":
        return PromptAudioVoice(fields["audio_uri"], fields["transcript"])
    raise ValueError(f"unknown voice branch {name!r}")


def voice_label(voice: Voice) -> str:
    """A short, log-safe description of a voice reference (no transcript text)."""
    if isinstance(voice, PresetVoice):
        return f"preset:{voice.name}"
    if isinstance(voice, RegisteredVoice):
        return f"registered:{voice.ref}"
    return f"prompt:{voice.audio_uri}"


# ---------------------------------------------------------------------------------- requests --


def now_ms() -> int:
    """Wall-clock epoch milliseconds (UTC)."""
    return time.time_ns() // 1_000_000


def new_request_id() -> str:
    """A random (version 4) UUID in its usual text form."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class SynthesisRequest:
    """One text-to-speech job (schemas/avro/synthesis_request)."""

    request_id: str
    text: str
    voice: Voice
    created_at_ms: int
    deadline_ms: int | None = None
    language: str | None = None
    style_instruction: str | None = None
    speed: float = 1.0
    output_format: AudioFormat = AudioFormat.WAV
    sample_rate_hz: int | None = None
    reply_topic: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    loudness_lufs: float | None = None


def _datetime_to_ms(value: Any) -> int | None:
    """fastavro reads timestamp-millis as aware datetimes; the model keeps integers (which
    fastavro also accepts when writing, so no conversion is needed on the way out)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        # Exact integer arithmetic: float seconds * 1000 can land a millisecond short.
        return (value - _EPOCH) // timedelta(milliseconds=1)
    return int(value)


def request_to_avro(request: SynthesisRequest) -> dict[str, Any]:
    return {
        "request_id": request.request_id,
        "created_at": request.created_at_ms,
        "deadline": request.deadline_ms,
        "text": request.text,
        "language": request.language,
        "voice": voice_to_avro(request.voice),
        "style_instruction": request.style_instruction,
        "speed": request.speed,
        "output_format": request.output_format.value,
        "sample_rate_hz": request.sample_rate_hz,
        "reply_topic": request.reply_topic,
        "attributes": dict(request.attributes),
        "loudness_lufs": request.loudness_lufs,
    }


def request_from_avro(datum: Mapping[str, Any]) -> SynthesisRequest:
    created = _datetime_to_ms(datum["created_at"])
    assert created is not None  # the field is not nullable in any version
    return SynthesisRequest(
        request_id=datum["request_id"],
        text=datum["text"],
        voice=voice_from_avro(datum["voice"]),
        created_at_ms=created,
        deadline_ms=_datetime_to_ms(datum.get("deadline")),
        language=datum.get("language"),
        style_instruction=datum.get("style_instruction"),
        speed=float(datum.get("speed", 1.0)),
        output_format=AudioFormat(datum.get("output_format", "WAV")),
        sample_rate_hz=datum.get("sample_rate_hz"),
        reply_topic=datum.get("reply_topic"),
        attributes=dict(datum.get("attributes") or {}),
        loudness_lufs=datum.get("loudness_lufs"),
    )


# ----------------------------------------------------------------------------------- results --


@dataclass(frozen=True, slots=True)
class AudioDescriptor:
    uri: str
    content_type: str
    size_bytes: int
    duration_seconds: float
    sample_rate_hz: int
    sha256: str
    presigned_url: str | None = None
    presigned_url_expires_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ResultError:
    code: ErrorCode
    message: str
    retryable: bool


@dataclass(frozen=True, slots=True)
class Timings:
    queued_ms: int
    synthesis_ms: int
    total_ms: int


@dataclass(frozen=True, slots=True)
class SynthesisResult:
    """The answer to one request (schemas/avro/synthesis_result)."""

    request_id: str
    status: ResultStatus
    engine: str
    model_version: str
    timings: Timings
    completed_at_ms: int
    cache_key: str | None = None
    audio: AudioDescriptor | None = None
    error: ResultError | None = None
    cache_hit: bool = False
    attributes: Mapping[str, str] = field(default_factory=dict)
    traceparent: str | None = None
    worker_id: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status is ResultStatus.SUCCEEDED


def result_to_avro(result: SynthesisResult) -> dict[str, Any]:
    audio = result.audio
    error = result.error
    return {
        "request_id": result.request_id,
        "cache_key": result.cache_key,
        "status": result.status.value,
        "audio": None
        if audio is None
        else {
            "uri": audio.uri,
            "presigned_url": audio.presigned_url,
            "presigned_url_expires_at": audio.presigned_url_expires_at_ms,
            "content_type": audio.content_type,
            "size_bytes": audio.size_bytes,
            "duration_seconds": audio.duration_seconds,
            "sample_rate_hz": audio.sample_rate_hz,
            "sha256": audio.sha256,
        },
        "error": None
        if error is None
        else {"code": error.code.value, "message": error.message, "retryable": error.retryable},
        "cache_hit": result.cache_hit,
        "engine": result.engine,
        "model_version": result.model_version,
        "timings": {
            "queued_ms": result.timings.queued_ms,
            "synthesis_ms": result.timings.synthesis_ms,
            "total_ms": result.timings.total_ms,
        },
        "attributes": dict(result.attributes),
        "traceparent": result.traceparent,
        "completed_at": result.completed_at_ms,
        "worker_id": result.worker_id,
    }


def result_from_avro(datum: Mapping[str, Any]) -> SynthesisResult:
    audio = datum.get("audio")
    error = datum.get("error")
    timings = datum["timings"]
    completed = _datetime_to_ms(datum["completed_at"])
    assert completed is not None  # the field is not nullable in any version
    return SynthesisResult(
        request_id=datum["request_id"],
        status=ResultStatus(datum["status"]),
        engine=datum["engine"],
        model_version=datum["model_version"],
        timings=Timings(timings["queued_ms"], timings["synthesis_ms"], timings["total_ms"]),
        completed_at_ms=completed,
        cache_key=datum.get("cache_key"),
        audio=None
        if audio is None
        else AudioDescriptor(
            uri=audio["uri"],
            content_type=audio["content_type"],
            size_bytes=audio["size_bytes"],
            duration_seconds=audio["duration_seconds"],
            sample_rate_hz=audio["sample_rate_hz"],
            sha256=audio["sha256"],
            presigned_url=audio.get("presigned_url"),
            presigned_url_expires_at_ms=_datetime_to_ms(audio.get("presigned_url_expires_at")),
        ),
        error=None
        if error is None
        else ResultError(ErrorCode(error["code"]), error["message"], bool(error["retryable"])),
        cache_hit=bool(datum.get("cache_hit", False)),
        attributes=dict(datum.get("attributes") or {}),
        traceparent=datum.get("traceparent"),
        worker_id=datum.get("worker_id"),
    )
