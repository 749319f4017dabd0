"""The key contract: the checked-in vectors, an independent re-implementation of docs/keys.md,
and the properties normalisation promises."""

from __future__ import annotations

import hashlib
import json
import struct
import unicodedata
from importlib import resources
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import keys
from schemas.keys import CacheKeyInputs, ResolvedVoice
from schemas.model import (
    AudioFormat,
    PresetVoice,
    PromptAudioVoice,
    RegisteredVoice,
    SynthesisRequest,
    Voice,
)

VECTORS: dict[str, Any] = json.loads(
    (resources.files("schemas") / "vectors" / "keys.json").read_text("utf-8")
)


def _voice(spec: dict[str, str]) -> Voice:
    if "preset" in spec:
        return PresetVoice(spec["preset"])
    if "registered" in spec:
        return RegisteredVoice(spec["registered"])
    return PromptAudioVoice(spec["prompt_audio_uri"], spec["transcript"])


def _request(spec: dict[str, Any]) -> SynthesisRequest:
    return SynthesisRequest(
        request_id="vector",
        created_at_ms=0,
        text=spec["text"],
        voice=_voice(spec["voice"]),
        language=spec["language"],
        style_instruction=spec["style_instruction"],
        speed=spec["speed"],
        output_format=AudioFormat(spec["output_format"]),
        sample_rate_hz=spec["sample_rate_hz"],
        loudness_lufs=spec["loudness_lufs"],
    )


def _cache_inputs(spec: dict[str, Any]) -> CacheKeyInputs:
    voice_spec = spec["voice"]
    voice = (
        ResolvedVoice(preset=voice_spec["preset"])
        if "preset" in voice_spec
        else ResolvedVoice(content_id=voice_spec["content_id"], transcript=voice_spec["transcript"])
    )
    return CacheKeyInputs(
        engine=spec["engine"],
        model_version=spec["model_version"],
        voice=voice,
        text=spec["text"],
        language=spec["language"],
        style_instruction=spec["style_instruction"],
        speed=spec["speed"],
        output_format=spec["output_format"],
        sample_rate_hz=spec["sample_rate_hz"],
        postprocess=spec["postprocess"],
    )


# ------------------------------------------------------------------ the library against the vectors


@pytest.mark.parametrize("case", VECTORS["routing_key"], ids=lambda c: c["name"])
def test_routing_key_matches_vector(case: dict[str, Any]) -> None:
    assert keys.routing_key(_request(case["input"])) == case["expected"]


@pytest.mark.parametrize("case", VECTORS["cache_key"], ids=lambda c: c["name"])
def test_cache_key_matches_vector(case: dict[str, Any]) -> None:
    assert keys.cache_key(_cache_inputs(case["input"])) == case["expected"]


@pytest.mark.parametrize("case", VECTORS["normalise_text"], ids=lambda c: repr(c["input"]))
def test_normalise_text_matches_vector(case: dict[str, str]) -> None:
    assert keys.normalise_text(case["input"]) == case["expected"]


def test_vectors_show_what_they_claim() -> None:
    routing = {c["name"]: c["expected"] for c in VECTORS["routing_key"]}
    plain = routing["plain English, preset voice, defaults"]
    assert routing["same request with messy whitespace and CRLF: same key as the first"] == plain
    assert routing["case is kept: a different key"] != plain
    cache = [c["expected"] for c in VECTORS["cache_key"]]
    assert cache[1] == cache[2], "transcript whitespace, language case and float noise must not split"
    assert cache[0] != cache[3], "a new model version must not reuse old audio"
    assert len(set(routing.values())) == len(routing) - 1  # only the whitespace twin repeats


# ------------------------------------------------------- an independent implementation of the spec


def _spec_encoding(domain: str, fields: list[tuple[str, str]]) -> bytes:
    """docs/keys.md §1, written from the page and nothing else."""
    out = domain.encode() + b"\x00"
    for name, value in fields:
        name_b, value_b = name.encode(), value.encode()
        out += bytes([len(name_b)]) + name_b + struct.pack(">I", len(value_b)) + value_b
    return out


ROUTING_FIELDS = ["text", "voice", "language", "style", "speed", "format", "sample_rate", "loudness"]
CACHE_FIELDS = [
    "engine",
    "model_version",
    "voice",
    "voice_transcript",
    "text",
    "language",
    "style",
    "speed",
    "format",
    "sample_rate",
    "postprocess",
]


def test_plain_vector_recomputed_from_the_spec_alone() -> None:
    # The worked example of docs/keys.md §5, built by hand: no schemas.keys involved.
    fields = [
        ("text", "Hello, world."),
        ("voice", "preset:en-us"),
        ("language", ""),
        ("style", ""),
        ("speed", f"{1.0:.3f}"),
        ("format", "WAV"),
        ("sample_rate", "native"),
        ("loudness", ""),
    ]
    digest = hashlib.sha256(_spec_encoding("tts-stream/routing-key/v1", fields)).hexdigest()
    case = VECTORS["routing_key"][0]
    assert _spec_encoding("tts-stream/routing-key/v1", fields).hex() == case["encoding_hex"]
    assert digest[:32] == case["expected"]


def test_chinese_vector_recomputed_from_the_spec_alone() -> None:
    case = next(c for c in VECTORS["routing_key"] if c["name"].startswith("Chinese"))
    spec = case["input"]
    fields = [
        ("text", unicodedata.normalize("NFC", spec["text"]).strip()),
        ("voice", "preset:" + spec["voice"]["preset"]),
        ("language", spec["language"].replace("_", "-").lower()),
        ("style", spec["style_instruction"]),
        ("speed", "{:.3f}".format(spec["speed"])),
        ("format", spec["output_format"]),
        ("sample_rate", "native"),
        ("loudness", ""),
    ]
    encoding = _spec_encoding("tts-stream/routing-key/v1", fields)
    assert hashlib.sha256(encoding).hexdigest()[:32] == case["expected"]


def test_prompt_voice_vector_recomputed_from_the_spec_alone() -> None:
    case = next(c for c in VECTORS["routing_key"] if c["name"].startswith("prompt audio"))
    spec = case["input"]
    fields = [
        ("text", spec["text"].replace("\n\n\n\n", "\n\n")),
        ("voice", f"prompt:{spec['voice']['prompt_audio_uri']}\n{spec['voice']['transcript']}"),
        ("language", ""),
        ("style", ""),
        ("speed", "{:.3f}".format(spec["speed"])),
        ("format", "OGG_OPUS"),
        ("sample_rate", "native"),
        ("loudness", "{:.1f}".format(spec["loudness_lufs"])),
    ]
    encoding = _spec_encoding("tts-stream/routing-key/v1", fields)
    assert hashlib.sha256(encoding).hexdigest()[:32] == case["expected"]


def test_cache_vector_recomputed_from_the_spec_alone() -> None:
    case = VECTORS["cache_key"][1]
    spec = case["input"]
    fields = [
        ("engine", spec["engine"]),
        ("model_version", spec["model_version"]),
        ("voice", "content:" + spec["voice"]["content_id"]),
        ("voice_transcript", spec["voice"]["transcript"]),
        ("text", spec["text"]),
        ("language", spec["language"].lower()),
        ("style", spec["style_instruction"]),
        ("speed", "{:.3f}".format(spec["speed"])),
        ("format", spec["output_format"]),
        ("sample_rate", str(spec["sample_rate_hz"])),
        ("postprocess", spec["postprocess"]),
    ]
    encoding = _spec_encoding("tts-stream/cache-key/v1", fields)
    assert encoding.hex() == case["encoding_hex"]
    assert hashlib.sha256(encoding).hexdigest() == case["expected"]


@pytest.mark.parametrize(
    ("section", "domain", "names", "length"),
    [
        ("routing_key", "tts-stream/routing-key/v1", ROUTING_FIELDS, 32),
        ("cache_key", "tts-stream/cache-key/v1", CACHE_FIELDS, 64),
    ],
)
def test_every_vector_hashes_its_listed_fields(
    section: str, domain: str, names: list[str], length: int
) -> None:
    for case in VECTORS[section]:
        fields = [tuple(f) for f in case["fields"]]
        assert [name for name, _ in fields] == names, "field order is part of the contract"
        encoding = _spec_encoding(domain, fields)  # type: ignore[arg-type]
        assert encoding.hex() == case["encoding_hex"], case["name"]
        assert hashlib.sha256(encoding).hexdigest()[:length] == case["expected"], case["name"]


def test_length_prefixes_keep_field_boundaries_apart() -> None:
    # Without lengths these two would concatenate to the same bytes.
    a = keys.canonical_encoding("d", [("a", "xy"), ("b", "z")])
    b = keys.canonical_encoding("d", [("a", "x"), ("b", "yz")])
    assert a != b


# ------------------------------------------------------------------------- normalisation properties

# Small alphabets of the characters the rules treat specially find the corner cases quickly.
TEXT = st.lists(
    st.sampled_from([*list("ab é́\t\n\r\xa0\u3000\u2028²\u200dZ.,?今天\x1c"), "  ", "\r\n"]),
    max_size=40,
).map("".join)


@given(TEXT)
def test_normalisation_is_idempotent(text: str) -> None:
    once = keys.normalise_text(text)
    assert keys.normalise_text(once) == once


@given(TEXT)
def test_fast_path_agrees_with_the_full_rules(text: str) -> None:
    # _already_normal is an optimisation: whenever it says "leave it", the rules must agree.
    if keys._already_normal(text):
        rewritten = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
        rewritten = keys._PARAGRAPH_BREAKS.sub(
            "\n\n", keys._SPACE_AROUND_NEWLINE.sub("\n", keys._HORIZONTAL_SPACE.sub(" ", rewritten))
        ).strip()
        assert rewritten == text


@given(st.text(max_size=30))
def test_normalised_text_has_no_irregular_whitespace(text: str) -> None:
    result = keys.normalise_text(text)
    assert result == result.strip()
    assert "  " not in result
    assert "\n\n\n" not in result
    assert "\r" not in result
    assert unicodedata.is_normalized("NFC", result)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("US", "us"),
        ("read.", "read?"),
        ("x²", "x2"),
        ("①", "1"),
        ("ﬁne", "fine"),
        ("ＡＢＣ", "ABC"),
        ("one\n\ntwo", "one two"),
        ("👨\u200d👩", "👨👩"),
    ],
)
def test_normalisation_keeps_what_sounds_different(left: str, right: str) -> None:
    assert keys.normalise_text(left) != keys.normalise_text(right)


def test_routing_key_ignores_request_identity_and_attributes() -> None:
    base = SynthesisRequest("a", "Hello", PresetVoice("en-us"), created_at_ms=1)
    other = SynthesisRequest(
        "b", "Hello", PresetVoice("en-us"), created_at_ms=2, attributes={"tenant": "x"}, reply_topic="t"
    )
    assert keys.routing_key(base) == keys.routing_key(other)
    assert keys.routing_key(base) != keys.routing_key(
        SynthesisRequest("a", "Hello", PresetVoice("en-gb"), created_at_ms=1)
    )


def test_cache_key_uses_voice_content_not_its_name() -> None:
    def inputs(content: str) -> CacheKeyInputs:
        return CacheKeyInputs(
            "cosyvoice", "v1", ResolvedVoice(content_id=content, transcript="hi"), "t", None, None,
            1.0, "WAV", None, "lufs=-16.0",
        )  # fmt: skip

    assert keys.cache_key(inputs("a" * 64)) != keys.cache_key(inputs("b" * 64))


@given(
    st.sampled_from(["Hello.", "Hi  there", "今天"]),
    st.sampled_from([PresetVoice("en-us"), RegisteredVoice("alice"), PromptAudioVoice("s3://b/k", " hi ")]),
    st.sampled_from([None, "en_US", "zh-CN"]),
    st.sampled_from([None, "calmly", ""]),
    st.sampled_from([1.0, 0.0, -0.0, 1.1000000238418579, 2]),
    st.sampled_from(list(AudioFormat)),
    st.sampled_from([None, 0, 24000]),
    st.sampled_from([None, -14.04, 0.0, -0.0]),
)
def test_cached_routing_key_equals_the_spelled_out_encoding(
    text: str,
    voice: Voice,
    language: str | None,
    style: str | None,
    speed: float,
    fmt: AudioFormat,
    rate: int | None,
    loudness: float | None,
) -> None:
    # routing_key caches the encoding of everything but the text; it must never change the key.
    request = SynthesisRequest(
        "r", text, voice, 0, None, language, style, speed, fmt, rate, None, {}, loudness
    )
    fields = [
        ("text", keys.normalise_text(text)),
        ("voice", keys._voice_reference(voice)),
        ("language", keys.normalise_language(language)),
        ("style", keys.normalise_text(style or "")),
        ("speed", keys.speed_token(speed)),
        ("format", fmt.value),
        ("sample_rate", str(rate or "native")),
        ("loudness", "" if loudness is None else keys.loudness_token(loudness)),
    ]
    expected = hashlib.sha256(_spec_encoding(keys.ROUTING_KEY_DOMAIN, fields)).hexdigest()[:32]
    assert keys.routing_key(request) == expected
