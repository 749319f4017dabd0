"""From HTTP bodies and headers to a `SynthesisRequest`: our JSON, and OpenAI's speech JSON.

Framework-free. Every mistake is an `ApiError` naming the field, with the contract's codes:
the values go through the same `build_request` and `validate` as the Python client's.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from producer.errors import InvalidRequest
from producer.requests import build_request, validate
from schemas.model import AudioFormat, SynthesisRequest
from schemas.validation import RequestLimits
from tts_stream.gateway.errors import bad_request, invalid

# Attributes the gateway sets itself; a caller may not.
GATEWAY_ATTRIBUTE_PREFIX = "gateway."
KEY_ATTRIBUTE = "gateway.key"

TTS_FIELDS = frozenset(
    {
        "text",
        "voice",
        "prompt_text",
        "language",
        "style_instruction",
        "speed",
        "format",
        "sample_rate_hz",
        "loudness_lufs",
        "deadline",
        "attributes",
    }
)
SPEECH_FIELDS = frozenset(
    {"model", "input", "voice", "response_format", "speed", "instructions", "stream_format"}
)

# OpenAI's response formats; pcm is raw 24 kHz 16-bit mono, which we cut out of a WAV.
PCM_RATE_HZ = 24_000
_OPENAI_FORMATS = {
    "mp3": AudioFormat.MP3,
    "opus": AudioFormat.OGG_OPUS,
    "flac": AudioFormat.FLAC,
    "wav": AudioFormat.WAV,
    "pcm": AudioFormat.WAV,
}
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait=(\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request("body", f"is not JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise bad_request("body", "must be a JSON object")
    return body


def _unknown(body: Mapping[str, Any], known: frozenset[str]) -> None:
    extra = sorted(set(body) - known)
    if extra:
        raise bad_request(extra[0], f"unknown field(s) {', '.join(extra)}; known: {', '.join(sorted(known))}")


def _string(body: Mapping[str, Any], field: str, *, required: bool = False) -> str | None:
    value = body.get(field)
    if value is None:
        if required:
            raise bad_request(field, "is required")
        return None
    if not isinstance(value, str):
        raise bad_request(field, f"must be a string, not {type(value).__name__}")
    return value


def _required(body: Mapping[str, Any], field: str) -> str:
    value = _string(body, field, required=True)
    assert value is not None
    return value


def _deadline(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request("deadline", "must be an RFC 3339 timestamp such as 2030-01-01T12:00:00Z")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise bad_request("deadline", "must be an RFC 3339 timestamp such as 2030-01-01T12:00:00Z") from exc
    if parsed.tzinfo is None:
        raise bad_request("deadline", "must name its time zone (Z or +hh:mm)")
    return parsed


def _attributes(value: Any, key_name: str) -> dict[str, str]:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise bad_request("attributes", "must be an object of strings")
    if any(isinstance(k, str) and k.startswith(GATEWAY_ATTRIBUTE_PREFIX) for k in value):
        raise bad_request("attributes", f"keys starting with {GATEWAY_ATTRIBUTE_PREFIX!r} are the gateway's")
    return {**value, KEY_ATTRIBUTE: key_name}


@dataclass(frozen=True, slots=True)
class Wait:
    """How long a synchronous caller waits; its end is the request's deadline."""

    seconds: float
    deadline: datetime | None  # the caller's own deadline, when earlier than the wait's end


def wait_seconds(headers: Mapping[str, str], *, default_s: float, max_s: float) -> float:
    """The caller's timeout: `Prefer: wait=N` (RFC 7240), else the OpenAI client's
    `X-Stainless-Timeout`, else the default; never more than `max_s`."""
    asked: float | None = None
    prefer = headers.get("prefer")
    if prefer and (found := _PREFER_WAIT.search(prefer)):
        asked = float(found.group(1))
    elif (stainless := headers.get("x-stainless-timeout")) is not None:
        try:
            asked = float(stainless)
        except ValueError:
            asked = None
    if asked is None or not math.isfinite(asked) or asked <= 0:
        asked = default_s
    return min(asked, max_s)


def respond_async(headers: Mapping[str, str]) -> bool:
    prefer = headers.get("prefer") or ""
    return any(token.strip().lower() == "respond-async" for token in re.split(r"[,;]", prefer))


def _finish(build: Any, limits: RequestLimits) -> SynthesisRequest:
    try:
        request: SynthesisRequest = build()
        return validate(request, limits)
    except InvalidRequest as exc:
        raise invalid(exc) from exc


def tts_request(
    body: Mapping[str, Any], *, key_name: str, limits: RequestLimits, ttl_s: float | None
) -> SynthesisRequest:
    """`POST /v1/tts`'s body. `ttl_s` (a synchronous wait) bounds the deadline."""
    _unknown(body, TTS_FIELDS)
    text = _required(body, "text")
    voice = _required(body, "voice")
    deadline = _deadline(body.get("deadline"))
    attributes = _attributes(body.get("attributes"), key_name)
    speed = body.get("speed", 1.0)
    fmt = body.get("format", "wav")
    if not isinstance(fmt, str):
        raise bad_request("format", "must be one of wav, flac, ogg_opus, mp3")
    ttl = ttl_s
    if deadline is not None and ttl is not None:
        ttl = min(ttl, max(0.001, deadline.timestamp() - datetime.now(deadline.tzinfo).timestamp()))
        deadline = None

    return _finish(
        lambda: build_request(
            text,
            voice,
            prompt_text=_string(body, "prompt_text"),
            language=_string(body, "language"),
            style_instruction=_string(body, "style_instruction"),
            speed=speed,
            output_format=fmt,
            sample_rate_hz=body.get("sample_rate_hz"),
            loudness_lufs=body.get("loudness_lufs"),
            deadline=deadline,
            ttl_s=ttl,
            attributes=attributes,
        ),
        limits,
    )


@dataclass(frozen=True, slots=True)
class SpeechCall:
    request: SynthesisRequest
    pcm: bool  # answer raw PCM cut out of the WAV the worker made


def _openai_voice(value: Any, voice_map: Mapping[str, str]) -> str:
    if isinstance(value, dict):  # newer clients may send {"id": "..."} for custom voices
        value = value.get("id")
    if not isinstance(value, str) or not value.strip():
        raise bad_request(
            "voice", "is required: a voice name such as alloy, or preset:NAME / registered:NAME"
        )
    name = value.strip()
    if ":" in name:
        return name
    return voice_map.get(name) or f"registered:{name.lower()}"


def speech_request(
    body: Mapping[str, Any],
    *,
    key_name: str,
    limits: RequestLimits,
    ttl_s: float,
    voice_map: Mapping[str, str],
) -> SpeechCall:
    """OpenAI's `POST /v1/audio/speech` body, mapped onto our request.

    `model` is required, as OpenAI's API has it, but the deployment's engine decides: it is not
    part of our request. Unmapped bare voice names are registered voices (`POST /v1/voices`).
    """
    _unknown(body, SPEECH_FIELDS)
    text = _required(body, "input")
    _required(body, "model")
    if body.get("stream_format") not in (None, "audio"):
        raise bad_request("stream_format", "only 'audio' is supported (no server-sent events)")
    fmt = body.get("response_format", "mp3")
    if fmt not in _OPENAI_FORMATS:
        raise bad_request("response_format", f"{fmt!r} is not one of {', '.join(_OPENAI_FORMATS)}")
    pcm = fmt == "pcm"
    voice = _openai_voice(body.get("voice"), voice_map)
    speed = body.get("speed", 1.0)
    return SpeechCall(
        _finish(
            lambda: build_request(
                text,
                voice,
                style_instruction=_string(body, "instructions"),
                speed=speed,
                output_format=_OPENAI_FORMATS[fmt],
                sample_rate_hz=PCM_RATE_HZ if pcm else None,
                ttl_s=ttl_s,
                attributes={KEY_ATTRIBUTE: key_name},
            ),
            limits,
        ),
        pcm,
    )
