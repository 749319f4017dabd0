"""Building a `SynthesisRequest` from the loose values callers have (strings, floats, mappings).

Every mistake becomes an `InvalidRequest` that names the field, before anything is produced.
The contract's own rules (lengths, ranges, syntax) are then checked by `schemas.validation`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from producer.errors import InvalidRequest
from schemas.model import (
    AudioFormat,
    PresetVoice,
    PromptAudioVoice,
    RegisteredVoice,
    SynthesisRequest,
    Voice,
    new_request_id,
    now_ms,
)
from schemas.validation import RequestLimits, request_problems

VOICE_FORMS = "preset:NAME, registered:ID_OR_ALIAS or prompt:s3://BUCKET/KEY"

_FORMAT_ALIASES = {
    "wav": AudioFormat.WAV,
    "flac": AudioFormat.FLAC,
    "ogg_opus": AudioFormat.OGG_OPUS,
    "ogg-opus": AudioFormat.OGG_OPUS,
    "ogg": AudioFormat.OGG_OPUS,
    "opus": AudioFormat.OGG_OPUS,
    "mp3": AudioFormat.MP3,
}


@functools.lru_cache(maxsize=1024)
def parse_voice(spec: str, prompt_text: str | None = None) -> Voice:
    """`preset:en-us`, `registered:<64 hex or alias>`, or `prompt:s3://bucket/key` (with the
    transcript of the prompt audio as `prompt_text`).

    Cached: a service or a backfill uses a handful of voices, and voices are immutable.
    """
    kind, sep, value = spec.partition(":")
    if not sep or not value:
        raise InvalidRequest.one("voice", f"{spec!r} is not one of {VOICE_FORMS}")
    kind = kind.strip().lower()
    if kind == "prompt":
        if prompt_text is None:
            raise InvalidRequest.one(
                "voice.transcript", "a prompt: voice needs the transcript of its audio (prompt text)"
            )
        return PromptAudioVoice(value, prompt_text)
    if prompt_text is not None:
        raise InvalidRequest.one("voice.transcript", f"only a prompt: voice takes a transcript, not {kind}:")
    if kind == "preset":
        return PresetVoice(value)
    if kind == "registered":
        return RegisteredVoice(value)
    raise InvalidRequest.one("voice", f"unknown kind {kind!r}: use {VOICE_FORMS}")


def parse_format(value: str | AudioFormat) -> AudioFormat:
    if isinstance(value, AudioFormat):
        return value
    found = _FORMAT_ALIASES.get(value) or _FORMAT_ALIASES.get(str(value).strip().lower())
    if found is None:
        raise InvalidRequest.one("output_format", f"{value!r} is not one of wav, flac, ogg_opus, mp3")
    return found


def _number(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest.one(field, f"must be a number, not {type(value).__name__}")
    return float(value)


def _integer(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise InvalidRequest.one(field, f"must be an integer, not {value!r}"[:120])
    return value


def _optional_text(field: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidRequest.one(field, f"must be a string, not {type(value).__name__}")


def _attributes(value: Mapping[str, Any] | None) -> dict[str, str]:
    if value is None:
        return {}
    if type(value) is not dict and not isinstance(value, Mapping):
        raise InvalidRequest.one("attributes", f"must be a mapping of strings, not {type(value).__name__}")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise InvalidRequest.one(f"attributes.{key}", "keys and values must be strings")
        out[key] = item
    return out


def _deadline_ms(deadline: datetime | None, ttl_s: float | None, created_at_ms: int) -> int | None:
    if deadline is not None and ttl_s is not None:
        raise InvalidRequest.one("deadline", "give a deadline or a ttl_s, not both")
    if deadline is not None:
        if not isinstance(deadline, datetime) or deadline.tzinfo is None:
            raise InvalidRequest.one("deadline", "must be a timezone-aware datetime")
        return int(deadline.timestamp() * 1000)
    if ttl_s is not None:
        ttl = _number("ttl_s", ttl_s)
        if not math.isfinite(ttl) or ttl <= 0:
            raise InvalidRequest.one("ttl_s", "must be a positive number of seconds")
        return created_at_ms + round(ttl * 1000)
    return None


def build_request(
    text: str,
    voice: Voice | str,
    *,
    prompt_text: str | None = None,
    request_id: str | None = None,
    language: str | None = None,
    style_instruction: str | None = None,
    speed: float = 1.0,
    output_format: str | AudioFormat = AudioFormat.WAV,
    sample_rate_hz: int | None = None,
    loudness_lufs: float | None = None,
    deadline: datetime | None = None,
    ttl_s: float | None = None,
    reply_topic: str | None = None,
    attributes: Mapping[str, str] | None = None,
    created_at_ms: int | None = None,
) -> SynthesisRequest:
    """A request from plain values; raises `InvalidRequest` naming the field on a wrong type.

    Does not apply the contract's rules: `validate()` (or the client) does that.
    """
    if not isinstance(text, str):
        raise InvalidRequest.one("text", f"must be a string, not {type(text).__name__}")
    if isinstance(voice, str):
        voice = parse_voice(voice, prompt_text)
    elif prompt_text is not None:
        raise InvalidRequest.one("voice.transcript", "give the transcript inside the PromptAudioVoice")
    if not isinstance(voice, PresetVoice | RegisteredVoice | PromptAudioVoice):
        raise InvalidRequest.one("voice", f"must be a voice or a string like {VOICE_FORMS}")
    created = now_ms() if created_at_ms is None else created_at_ms
    return SynthesisRequest(
        request_id=new_request_id() if request_id is None else request_id,
        text=text,
        voice=voice,
        created_at_ms=created,
        deadline_ms=_deadline_ms(deadline, ttl_s, created),
        language=_optional_text("language", language),
        style_instruction=_optional_text("style_instruction", style_instruction),
        speed=_number("speed", speed),
        output_format=parse_format(output_format),
        sample_rate_hz=None if sample_rate_hz is None else _integer("sample_rate_hz", sample_rate_hz),
        reply_topic=_optional_text("reply_topic", reply_topic),
        attributes=_attributes(attributes),
        loudness_lufs=None if loudness_lufs is None else _number("loudness_lufs", loudness_lufs),
    )


def validate(request: SynthesisRequest, limits: RequestLimits | None = None) -> SynthesisRequest:
    """Return `request` unchanged, or raise `InvalidRequest` listing every rule it breaks."""
    problems = request_problems(request, limits or RequestLimits())
    if problems:
        raise InvalidRequest(problems)
    return request
