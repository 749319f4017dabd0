"""The gateway's framework-free parts: key files, body mapping, timeouts, error mapping, Retry-After."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from schemas.model import AudioFormat, ErrorCode, PresetVoice, RegisteredVoice, ResultError
from schemas.validation import RequestLimits
from tts_stream.gateway import bodies
from tts_stream.gateway.backpressure import MAX_RETRY_S, UNKNOWN_RATE_RETRY_S, retry_after_s
from tts_stream.gateway.errors import ApiError, GatewayCode, from_result, retry_later
from tts_stream.gateway.keys import KeyFile, KeyFileError, hash_key, key_line, new_key, parse_keys
from tts_stream.gateway.settings import GatewaySettings

LIMITS = RequestLimits()


# ------------------------------------------------------------------------------ keys


def test_key_lines_round_trip_and_only_hashes_are_stored() -> None:
    key = new_key()
    line = key_line("web", key, rate_per_s=5, burst=7)
    assert key not in line
    parsed = parse_keys(f"# comment\n\n{line} scopes=tts,voices\n", rate_per_s=1, burst=1)
    found = parsed[hash_key(key)]
    assert (found.name, found.rate_per_s, found.burst, found.scopes) == ("web", 5.0, 7, {"tts", "voices"})
    default = parse_keys(key_line("app", key), rate_per_s=3, burst=4)[hash_key(key)]
    assert (default.rate_per_s, default.burst, default.scopes) == (3.0, 4, {"tts"})


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("web", "expected NAME SHA256"),
        ("Web " + "a" * 64, "name must be"),
        ("web abc", "sha256"),
        (f"web {'a' * 64} colour=red", "unknown option"),
        (f"web {'a' * 64} rate=fast", "numbers"),
        (f"web {'a' * 64} rate=0", "rate must be > 0"),
        (f"web {'a' * 64} scopes=admin", "scopes are"),
        (f"web {'a' * 64}\nweb {'b' * 64}", "listed twice"),
    ],
)
def test_bad_key_files_name_the_line(text: str, says: str) -> None:
    with pytest.raises(KeyFileError, match=says):
        parse_keys(text, rate_per_s=1, burst=1)


def test_the_key_file_is_reloaded_and_a_broken_edit_keeps_the_old_keys(tmp_path: Path) -> None:
    first, second = new_key(), new_key()
    path = tmp_path / "keys"
    path.write_text(key_line("one", first) + "\n")
    keys = KeyFile(path, rate_per_s=1, burst=1, check_every_s=0)
    assert keys.authenticate(first) is not None and keys.authenticate(second) is None
    path.write_text(key_line("two", second) + "\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert keys.authenticate(second) is not None and keys.authenticate(first) is None
    path.write_text("broken line\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2_000_000))
    assert keys.authenticate(second) is not None  # the last good file still counts
    with pytest.raises(KeyFileError):
        KeyFile(tmp_path / "missing", rate_per_s=1, burst=1)


# ------------------------------------------------------------------------------ bodies


def test_our_body_maps_onto_the_contract_with_the_key_as_an_attribute() -> None:
    request = bodies.tts_request(
        {
            "text": "Hello.",
            "voice": "preset:en-us",
            "format": "ogg_opus",
            "sample_rate_hz": 24000,
            "loudness_lufs": -20,
            "speed": 1.5,
            "attributes": {"ticket": "T-1"},
        },
        key_name="web",
        limits=LIMITS,
        ttl_s=7.0,
    )
    assert request.voice == PresetVoice("en-us")
    assert request.output_format is AudioFormat.OGG_OPUS
    assert request.deadline_ms == request.created_at_ms + 7000
    assert request.attributes == {"ticket": "T-1", "gateway.key": "web"}


def test_an_earlier_caller_deadline_wins_over_the_wait() -> None:
    request = bodies.tts_request(
        {"text": "Hi.", "voice": "preset:en-us", "deadline": "2000-01-01T00:00:00Z"},
        key_name="web",
        limits=LIMITS,
        ttl_s=30.0,
    )
    assert request.deadline_ms is not None and request.deadline_ms - request.created_at_ms <= 1


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"voice": "preset:en-us"}, "INVALID_REQUEST", "text"),
        ({"text": "Hi.", "voice": "preset:en-us", "colour": "red"}, "INVALID_REQUEST", "colour"),
        ({"text": "x" * 5001, "voice": "preset:en-us"}, "TEXT_TOO_LONG", "text"),
        ({"text": "Hi.", "voice": "preset:en-us", "speed": 9}, "INVALID_REQUEST", "speed"),
        ({"text": "Hi.", "voice": "nonsense"}, "INVALID_REQUEST", "voice"),
        ({"text": "Hi.", "voice": "preset:en-us", "deadline": "tomorrow"}, "INVALID_REQUEST", "deadline"),
        (
            {"text": "Hi.", "voice": "preset:en-us", "deadline": "2030-01-01T00:00:00"},
            "INVALID_REQUEST",
            "deadline",
        ),
        (
            {"text": "Hi.", "voice": "preset:en-us", "attributes": {"gateway.key": "x"}},
            "INVALID_REQUEST",
            "attributes",
        ),
        (
            {"text": "Hi.", "voice": "prompt:http://evil/x.wav", "prompt_text": "Hi."},
            "VOICE_NOT_ALLOWED",
            "voice.audio_uri",
        ),
    ],
)
def test_bad_bodies_get_the_contract_codes(body: dict[str, object], code: str, param: str) -> None:
    with pytest.raises(ApiError) as refused:
        bodies.tts_request(body, key_name="web", limits=LIMITS, ttl_s=None)
    assert (refused.value.status, refused.value.code, refused.value.param) == (400, code, param)


def test_openai_speech_bodies() -> None:
    call = bodies.speech_request(
        {"model": "tts-1", "input": "Hi.", "voice": "alloy", "response_format": "pcm", "speed": 1.25},
        key_name="web",
        limits=LIMITS,
        ttl_s=10,
        voice_map={"alloy": "preset:en-us"},
    )
    assert call.pcm and call.request.output_format is AudioFormat.WAV and call.request.sample_rate_hz == 24000
    assert call.request.voice == PresetVoice("en-us") and call.request.speed == 1.25
    custom = bodies.speech_request(
        {"model": "tts-1", "input": "Hi.", "voice": {"id": "Narrator"}},
        key_name="w",
        limits=LIMITS,
        ttl_s=1,
        voice_map={},
    )
    assert custom.request.voice == RegisteredVoice("narrator")
    assert custom.request.output_format is AudioFormat.MP3  # OpenAI's default
    for bad, param in (
        ({"input": "Hi.", "voice": "alloy"}, "model"),
        ({"model": "m", "input": "Hi.", "voice": "alloy", "response_format": "aac"}, "response_format"),
        ({"model": "m", "input": "Hi.", "voice": "alloy", "stream_format": "sse"}, "stream_format"),
        ({"model": "m", "input": "Hi.", "voice": ""}, "voice"),
    ):
        with pytest.raises(ApiError) as refused:
            bodies.speech_request(bad, key_name="w", limits=LIMITS, ttl_s=1, voice_map={})
        assert refused.value.param == param


def test_waits_come_from_prefer_or_the_openai_client_and_are_capped() -> None:
    assert bodies.wait_seconds({}, default_s=30, max_s=120) == 30
    assert bodies.wait_seconds({"prefer": "respond-sync, wait=5"}, default_s=30, max_s=120) == 5
    assert bodies.wait_seconds({"x-stainless-timeout": "600"}, default_s=30, max_s=120) == 120
    assert bodies.wait_seconds({"x-stainless-timeout": "soon"}, default_s=30, max_s=120) == 30
    assert bodies.respond_async({"prefer": "respond-async, wait=10"})
    assert not bodies.respond_async({"prefer": "wait=10"})


def test_parse_json_refuses_what_is_not_an_object() -> None:
    for raw in (b"[1]", b"{", b"\xff"):
        with pytest.raises(ApiError):
            bodies.parse_json(raw)


# ------------------------------------------------------------------------------ errors


def test_result_errors_keep_their_codes_and_get_fitting_statuses() -> None:
    def status(code: ErrorCode) -> int:
        return from_result(ResultError(code, "m", False), "id").status

    assert status(ErrorCode.VOICE_NOT_FOUND) == 400
    assert status(ErrorCode.EXPIRED) == 504
    assert status(ErrorCode.ENGINE_ERROR) == 502
    error = from_result(ResultError(ErrorCode.ENGINE_ERROR, "boom", True), "rid")
    assert error.body()["error"]["code"] == "ENGINE_ERROR" and error.body()["id"] == "rid"
    assert error.retryable


def test_retry_after_is_whole_seconds_and_drain_based() -> None:
    assert retry_later(GatewayCode.RATE_LIMITED, "m", 0.2).headers == {"Retry-After": "1"}
    assert retry_later(GatewayCode.RATE_LIMITED, "m", 1.5).headers == {"Retry-After": "2"}
    assert retry_after_s(1100, 1000, 50.0) == 2
    assert retry_after_s(1100, 1000, None) == UNKNOWN_RATE_RETRY_S
    assert retry_after_s(10**9, 1000, 1.0) == MAX_RETRY_S


def test_settings_validate_lists() -> None:
    settings = GatewaySettings(openai_voices="alloy=preset:en-us, echo=registered:narrator", cors_origins="")
    assert settings.openai_voice_map == {"alloy": "preset:en-us", "echo": "registered:narrator"}
    assert settings.cors_origins == []
    with pytest.raises(ValueError, match="NAME=VOICE"):
        GatewaySettings(openai_voices="alloy")
    with pytest.raises(ValueError, match="default_timeout_s"):
        GatewaySettings(default_timeout_s=200, max_timeout_s=100)
