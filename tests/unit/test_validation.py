"""Request rules: each broken rule is reported once, naming its field and the error code."""

from __future__ import annotations

import dataclasses
import unicodedata
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.errors import ValidationError
from schemas.model import (
    AudioFormat,
    PresetVoice,
    PromptAudioVoice,
    RegisteredVoice,
    SynthesisRequest,
)
from schemas.validation import RequestLimits, _control_character, request_problems, validate_request

VALID = SynthesisRequest(
    request_id="0b7e3c1e-4f0a-4c57-9a43-8d3f0b5e2c11",
    text="Hello, world.",
    voice=PresetVoice("en-us"),
    created_at_ms=1_700_000_000_000,
)
LIMITS = RequestLimits()


def _problems(**changes: Any) -> list[tuple[str, str, str]]:
    request = dataclasses.replace(VALID, **changes)
    return [(p.field, p.code, p.detail) for p in request_problems(request, LIMITS)]


def _fields(**changes: Any) -> list[str]:
    return [field for field, _, _ in _problems(**changes)]


def test_a_plain_request_is_valid() -> None:
    assert request_problems(VALID, LIMITS) == []
    validate_request(VALID)


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"text": ""}, "text", "INVALID_REQUEST"),
        ({"text": " \n\t "}, "text", "INVALID_REQUEST"),
        ({"text": "x" * 5001}, "text", "TEXT_TOO_LONG"),
        ({"text": "bell\x07"}, "text", "INVALID_REQUEST"),
        ({"text": "\ufffe"}, "text", "INVALID_REQUEST"),
        ({"request_id": ""}, "request_id", "INVALID_REQUEST"),
        ({"request_id": "has space"}, "request_id", "INVALID_REQUEST"),
        ({"request_id": "a" * 129}, "request_id", "INVALID_REQUEST"),
        ({"language": "english"}, "language", "INVALID_REQUEST"),
        ({"voice": PresetVoice("")}, "voice.name", "INVALID_REQUEST"),
        ({"voice": PresetVoice("en us")}, "voice.name", "INVALID_REQUEST"),
        ({"voice": RegisteredVoice("Not An Alias!")}, "voice.ref", "INVALID_REQUEST"),
        (
            {"voice": PromptAudioVoice("https://evil.example/a.wav", "hi")},
            "voice.audio_uri",
            "VOICE_NOT_ALLOWED",
        ),
        ({"voice": PromptAudioVoice("s3://ok-bucket/a.wav", " ")}, "voice.transcript", "INVALID_REQUEST"),
        (
            {"voice": PromptAudioVoice("s3://ok-bucket/a.wav", "x" * 1001)},
            "voice.transcript",
            "INVALID_REQUEST",
        ),
        ({"style_instruction": "  "}, "style_instruction", "INVALID_REQUEST"),
        ({"style_instruction": "x" * 501}, "style_instruction", "INVALID_REQUEST"),
        ({"style_instruction": "line one\nline two"}, "style_instruction", "INVALID_REQUEST"),
        ({"speed": 0.1}, "speed", "INVALID_REQUEST"),
        ({"speed": 2.5}, "speed", "INVALID_REQUEST"),
        ({"speed": float("nan")}, "speed", "INVALID_REQUEST"),
        ({"sample_rate_hz": 12345}, "sample_rate_hz", "INVALID_REQUEST"),
        (
            {"sample_rate_hz": 44100, "output_format": AudioFormat.OGG_OPUS},
            "sample_rate_hz",
            "INVALID_REQUEST",
        ),
        ({"loudness_lufs": 0.0}, "loudness_lufs", "INVALID_REQUEST"),
        ({"loudness_lufs": float("-inf")}, "loudness_lufs", "INVALID_REQUEST"),
        ({"reply_topic": "bad topic"}, "reply_topic", "INVALID_REQUEST"),
        ({"attributes": {str(i): "v" for i in range(33)}}, "attributes", "INVALID_REQUEST"),
        ({"attributes": {"": "v"}}, "attributes", "INVALID_REQUEST"),
        ({"attributes": {"tenant": "v" * 257}}, "attributes.tenant", "INVALID_REQUEST"),
    ],
)  # fmt: skip
def test_each_rule_names_its_field(changes: dict[str, Any], field: str, code: str) -> None:
    problems = _problems(**changes)
    assert [(f, c) for f, c, _ in problems] == [(field, code)]
    with pytest.raises(ValidationError) as caught:
        validate_request(dataclasses.replace(VALID, **changes))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    "changes",
    [
        {"language": "zh-CN"},
        {"language": "zh-Hans-CN"},
        {"language": "es-419"},
        {"voice": RegisteredVoice("a" * 64)},
        {"voice": RegisteredVoice("alice.v2")},
        {"voice": PromptAudioVoice("s3://tts-voices/prompts/a b.wav", "Hi there.")},
        {"text": "今天天气很好。\n\n第二段。"},
        {"text": "Tabs\tand\r\nCRLF are speakable"},
        {"speed": 0.5},
        {"speed": 2.0},
        {"sample_rate_hz": 48000, "output_format": AudioFormat.OGG_OPUS},
        {"loudness_lufs": -23.0},
        {"style_instruction": "say it cheerfully"},
        {"reply_topic": "team-a.tts.results"},
    ],
)
def test_valid_variants_pass(changes: dict[str, Any]) -> None:
    assert _problems(**changes) == []


def test_every_problem_is_reported_not_just_the_first() -> None:
    fields = _fields(text="", speed=9.0, language="??", voice=PresetVoice(""))
    assert fields == ["text", "language", "voice.name", "speed"]


def test_text_limit_counts_characters_after_normalisation() -> None:
    limits = RequestLimits(max_text_chars=5)
    spaced = dataclasses.replace(VALID, text="  a    b  ")  # "a b" after normalisation
    assert request_problems(spaced, limits) == []
    chinese = dataclasses.replace(VALID, text="今天天气很好")  # six characters, 18 bytes
    assert [p.code for p in request_problems(chinese, limits)] == ["TEXT_TOO_LONG"]


def test_limits_are_the_deployments_to_choose() -> None:
    strict = RequestLimits(max_speed=1.5, max_attributes=1)
    request = dataclasses.replace(VALID, speed=1.8, attributes={"a": "1", "b": "2"})
    assert [p.field for p in request_problems(request, strict)] == ["speed", "attributes"]


def test_messages_never_echo_the_text() -> None:
    secret = "my credit card is 4111 1111 1111 1111"
    problems = request_problems(dataclasses.replace(VALID, text=secret * 200), LIMITS)
    assert problems
    assert all("4111" not in str(p) for p in problems)


def _slow_control_character(text: str, *, allow_newlines: bool) -> str | None:
    """The rule as first written: one unicodedata lookup per character."""
    for ch in text:
        if allow_newlines and ch in "\n\r\t":
            continue
        if (
            unicodedata.category(ch) in {"Cc", "Cs"}
            or 0xFDD0 <= ord(ch) <= 0xFDEF
            or (ord(ch) & 0xFFFE) == 0xFFFE
        ):
            return f"U+{ord(ch):04X}"
    return None


def test_the_control_character_class_matches_the_rule_for_every_code_point() -> None:
    for allow in (True, False):
        for cp in range(0x110000):
            ch = chr(cp)
            text = "ok " + ch
            if _control_character(text, allow_newlines=allow) != _slow_control_character(
                text, allow_newlines=allow
            ):
                pytest.fail(f"U+{cp:04X} (allow_newlines={allow}) disagrees")


@given(st.text(max_size=50), st.booleans())
def test_the_control_character_search_finds_the_first(text: str, allow: bool) -> None:
    assert _control_character(text, allow_newlines=allow) == _slow_control_character(
        text, allow_newlines=allow
    )
