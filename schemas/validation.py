"""Request rules both sides apply: producers before producing, the worker authoritatively.

Only rules that need no deployment state live here (lengths, ranges, syntax). The worker adds
the ones that do: the engine's languages and capabilities, the voice registry, the allow-lists
for prompt-audio buckets and reply topics, and deadlines.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from schemas.errors import ValidationError
from schemas.keys import normalise_text
from schemas.model import (
    AudioFormat,
    ErrorCode,
    PresetVoice,
    RegisteredVoice,
    SynthesisRequest,
    Voice,
)

REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
VOICE_ID = re.compile(r"[0-9a-f]{64}")
VOICE_ALIAS = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
# BCP-47, the shapes people use: language[-script][-region][-variant]* (no extensions).
LANGUAGE_TAG = re.compile(
    r"[A-Za-z]{2,3}(?:-[A-Za-z]{4})?(?:-(?:[A-Za-z]{2}|[0-9]{3}))?(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*"
)
S3_URI = re.compile(r"s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(?P<key>[^\x00-\x1f\x7f]{1,1024})")

SAMPLE_RATES_HZ = frozenset({8000, 16000, 22050, 24000, 32000, 44100, 48000})
OPUS_SAMPLE_RATES_HZ = frozenset({8000, 12000, 16000, 24000, 48000})


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Deployment limits; the defaults are what docs/errors.md documents."""

    max_text_chars: int = 5000
    max_style_chars: int = 500
    max_transcript_chars: int = 1000
    min_speed: float = 0.5
    max_speed: float = 2.0
    min_loudness_lufs: float = -40.0
    max_loudness_lufs: float = -5.0
    max_attributes: int = 32
    max_attribute_key_chars: int = 64
    max_attribute_value_chars: int = 256


def _forbidden_class(*, allow_newlines: bool) -> re.Pattern[str]:
    """C0/C1 controls (category Cc), surrogates (Cs) and the 66 noncharacters, as one class."""
    spans = [(0x00, 0x08), (0x0B, 0x0C), (0x0E, 0x1F)] if allow_newlines else [(0x00, 0x1F)]
    spans += [(0x7F, 0x9F), (0xD800, 0xDFFF), (0xFDD0, 0xFDEF)]
    spans += [(plane + 0xFFFE, plane + 0xFFFF) for plane in range(0, 0x110000, 0x10000)]
    return re.compile("[" + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in spans) + "]")


_FORBIDDEN_IN_TEXT = _forbidden_class(allow_newlines=True)  # text may have lines and tabs
_FORBIDDEN_IN_LINE = _forbidden_class(allow_newlines=False)
# The same classes cut down to ASCII: a small bitmap is several times faster to scan with.
_FORBIDDEN_ASCII_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FORBIDDEN_ASCII_IN_LINE = re.compile("[\x00-\x1f\x7f]")


def _control_character(text: str, *, allow_newlines: bool) -> str | None:
    """The first character that has no place in speakable text (C0/C1 controls, noncharacters)."""
    if text.isascii():
        pattern = _FORBIDDEN_ASCII_IN_TEXT if allow_newlines else _FORBIDDEN_ASCII_IN_LINE
    else:
        pattern = _FORBIDDEN_IN_TEXT if allow_newlines else _FORBIDDEN_IN_LINE
    found = pattern.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


# Unicode's stream-safe text format (UAX #15) allows at most 30 combining marks in a row: no
# language needs more. Longer runs are refused before normalising, because NFC puts a run into
# canonical order in quadratic time (800 kB of marks held a worker's poll loop for minutes).
MAX_COMBINING_RUN = 30
# Normalisation can lengthen text (by at most 3x), so limits count characters after it; a text
# more than this many times over its limit is refused without being normalised at all.
RAW_LENGTH_FACTOR = 4


@functools.cache
def _combining_run() -> re.Pattern[str]:
    """A run of more than MAX_COMBINING_RUN characters with a non-zero combining class."""
    marks = [cp for cp in range(0x300, 0x110000) if unicodedata.combining(chr(cp))]
    spans: list[list[int]] = []
    for cp in marks:
        if spans and spans[-1][1] == cp - 1:
            spans[-1][1] = cp
        else:
            spans.append([cp, cp])
    members = "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in spans)
    return re.compile(f"[{members}]{{{MAX_COMBINING_RUN + 1}}}")


def _unsafe_to_normalise(text: str, limit: int) -> tuple[bool, str] | None:
    """(too long?, why) when `text` must be refused before normalisation, else None."""
    if len(text) > limit * RAW_LENGTH_FACTOR:
        return True, f"has {len(text)} characters before normalisation; the limit is {limit}"
    if not text.isascii() and _combining_run().search(text) is not None:
        return False, f"has more than {MAX_COMBINING_RUN} combining marks in a row"
    return None


Report = Callable[[ErrorCode, str, str], None]


def _check_text(request: SynthesisRequest, limits: RequestLimits, bad: Report) -> None:
    if (unsafe := _unsafe_to_normalise(request.text, limits.max_text_chars)) is not None:
        too_long, why = unsafe
        bad(ErrorCode.TEXT_TOO_LONG if too_long else ErrorCode.INVALID_REQUEST, "text", why)
        return
    text = normalise_text(request.text)
    if not text:
        bad(ErrorCode.INVALID_REQUEST, "text", "is empty")
        return
    if len(text) > limits.max_text_chars:
        bad(
            ErrorCode.TEXT_TOO_LONG,
            "text",
            f"has {len(text)} characters; the limit is {limits.max_text_chars}",
        )
    if (ch := _control_character(text, allow_newlines=True)) is not None:
        bad(ErrorCode.INVALID_REQUEST, "text", f"contains the control character {ch}")


def _check_voice(voice: Voice, limits: RequestLimits, bad: Report) -> None:
    if isinstance(voice, PresetVoice):
        if not PRESET_NAME.fullmatch(voice.name):
            bad(ErrorCode.INVALID_REQUEST, "voice.name", "must be 1-64 characters of A-Z a-z 0-9 . _ + -")
    elif isinstance(voice, RegisteredVoice):
        if not (VOICE_ID.fullmatch(voice.ref) or VOICE_ALIAS.fullmatch(voice.ref)):
            bad(
                ErrorCode.INVALID_REQUEST,
                "voice.ref",
                "must be a voice id (64 lowercase hex) or an alias (1-64 of a-z 0-9 . _ -)",
            )
    else:
        if not S3_URI.fullmatch(voice.audio_uri):
            bad(
                ErrorCode.VOICE_NOT_ALLOWED,
                "voice.audio_uri",
                "must be an s3://bucket/key URI (other schemes are never fetched)",
            )
        if (unsafe := _unsafe_to_normalise(voice.transcript, limits.max_transcript_chars)) is not None:
            bad(ErrorCode.INVALID_REQUEST, "voice.transcript", unsafe[1])
            return
        transcript = normalise_text(voice.transcript)
        if not transcript:
            bad(ErrorCode.INVALID_REQUEST, "voice.transcript", "is empty")
        elif len(transcript) > limits.max_transcript_chars:
            bad(
                ErrorCode.INVALID_REQUEST,
                "voice.transcript",
                f"is longer than {limits.max_transcript_chars} characters",
            )


def _check_style(style_instruction: str | None, limits: RequestLimits, bad: Report) -> None:
    if style_instruction is None:
        return
    if (unsafe := _unsafe_to_normalise(style_instruction, limits.max_style_chars)) is not None:
        bad(ErrorCode.INVALID_REQUEST, "style_instruction", unsafe[1])
        return
    style = normalise_text(style_instruction)
    if not style:
        bad(ErrorCode.INVALID_REQUEST, "style_instruction", "is empty (omit it instead)")
    elif len(style) > limits.max_style_chars:
        bad(
            ErrorCode.INVALID_REQUEST,
            "style_instruction",
            f"is longer than {limits.max_style_chars} characters",
        )
    elif (ch := _control_character(style, allow_newlines=False)) is not None:
        bad(ErrorCode.INVALID_REQUEST, "style_instruction", f"contains the control character {ch}")


def _check_audio_parameters(request: SynthesisRequest, limits: RequestLimits, bad: Report) -> None:
    speed = request.speed
    if not (math.isfinite(speed) and limits.min_speed <= speed <= limits.max_speed):
        bad(ErrorCode.INVALID_REQUEST, "speed", f"must be between {limits.min_speed} and {limits.max_speed}")
    rate = request.sample_rate_hz
    if rate is not None:
        opus = request.output_format is AudioFormat.OGG_OPUS
        allowed = OPUS_SAMPLE_RATES_HZ if opus else SAMPLE_RATES_HZ
        if rate not in allowed:
            listed = ", ".join(str(r) for r in sorted(allowed))
            bad(
                ErrorCode.INVALID_REQUEST,
                "sample_rate_hz",
                f"{rate} is not one of {listed} for {request.output_format.value}",
            )
    lufs = request.loudness_lufs
    if lufs is not None and not (
        math.isfinite(lufs) and limits.min_loudness_lufs <= lufs <= limits.max_loudness_lufs
    ):
        bad(
            ErrorCode.INVALID_REQUEST,
            "loudness_lufs",
            f"must be between {limits.min_loudness_lufs} and {limits.max_loudness_lufs}",
        )


def _check_routing(request: SynthesisRequest, limits: RequestLimits, bad: Report) -> None:
    if request.reply_topic is not None and not TOPIC_NAME.fullmatch(request.reply_topic):
        bad(ErrorCode.INVALID_REQUEST, "reply_topic", "is not a valid Kafka topic name")
    if len(request.attributes) > limits.max_attributes:
        bad(ErrorCode.INVALID_REQUEST, "attributes", f"has more than {limits.max_attributes} entries")
    for key, value in request.attributes.items():
        if not key or len(key) > limits.max_attribute_key_chars:
            bad(
                ErrorCode.INVALID_REQUEST,
                "attributes",
                f"keys must be 1-{limits.max_attribute_key_chars} characters",
            )
            return
        if len(value) > limits.max_attribute_value_chars:
            bad(
                ErrorCode.INVALID_REQUEST,
                f"attributes.{key}",
                f"is longer than {limits.max_attribute_value_chars} characters",
            )
            return


def request_problems(request: SynthesisRequest, limits: RequestLimits) -> list[ValidationError]:
    """Every rule `request` breaks, in field order (empty when it is valid)."""
    problems: list[ValidationError] = []

    def bad(code: ErrorCode, field: str, message: str) -> None:
        problems.append(ValidationError(code.value, field, message))

    if not REQUEST_ID.fullmatch(request.request_id):
        bad(ErrorCode.INVALID_REQUEST, "request_id", "must be 1-128 characters of A-Z a-z 0-9 . _ : -")
    _check_text(request, limits, bad)
    if request.language is not None and not LANGUAGE_TAG.fullmatch(request.language):
        bad(ErrorCode.INVALID_REQUEST, "language", "is not a BCP-47 tag such as en-US or zh-CN")
    _check_voice(request.voice, limits, bad)
    _check_style(request.style_instruction, limits, bad)
    _check_audio_parameters(request, limits, bad)
    _check_routing(request, limits, bad)
    return problems


def validate_request(request: SynthesisRequest, limits: RequestLimits | None = None) -> None:
    """Raise the first `ValidationError` for `request`, if any."""
    problems = request_problems(request, limits or RequestLimits())
    if problems:
        raise problems[0]
