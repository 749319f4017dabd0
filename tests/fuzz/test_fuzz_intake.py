"""Property-based fuzzing of everything a request producer controls.

The codec's own property tests (tests/unit/test_codec.py) throw random bytes and random bodies
at the decoder. These go further in three ways: inputs are built field by field from the Avro
layout, so most of each message is valid and the broken part sits deep inside it; every input
runs through the worker's whole intake and what the worker does next (tests/fuzz/targets.py),
not only the decoder; and the strings are hostile Unicode rather than random text.

TTS_FUZZ_EXAMPLES sets the examples per test (300 in `make test`, 5000 in `make fuzz`).
"""

from __future__ import annotations

import math
import os
import struct
import unicodedata

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import REQUEST_SCHEMAS, SINGLE_OBJECT_MAGIC, request_codec
from schemas.keys import CacheKeyInputs, ResolvedVoice, cache_key, canonical_encoding, normalise_text
from schemas.model import AudioFormat, PresetVoice, PromptAudioVoice, RegisteredVoice, SynthesisRequest
from schemas.validation import RequestLimits, request_problems
from tests.fuzz.make_corpus import avro_string, zigzag
from tests.fuzz.targets import ERROR_CODES, AllowListTarget, IntakeTarget

EXAMPLES = int(os.environ.get("TTS_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # a shared CI machine; the corpus replay checks time per input
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TARGET = IntakeTarget()
ALLOWLIST = AllowListTarget()

# ------------------------------------------------------------------------------ hostile text

COMBINING = st.sampled_from(["\u0301", "\u0316", "\u0323", "\u0358", "\u20dd", "\u302a", "\U0001d167"])
FORMAT_AND_CONTROL = st.sampled_from(
    ["\u200b", "\u200d", "\u202e", "\u2066", "\ufeff", "\x00", "\x1b", "\x7f", "\x85", "\x9b", "\u2028"]
)
ODD = st.sampled_from(
    ["\ufffe", "\U0010ffff", "\ufdd0", "\U000e0001", "\U0001f469\u200d\U0001f467", "ǅ", "ﬃ"]
)


@st.composite
def zalgo(draw: st.DrawFn) -> str:
    base = draw(st.characters(codec="utf-8"))
    return base + "".join(draw(st.lists(COMBINING, min_size=1, max_size=60)))


@st.composite
def hostile_text(draw: st.DrawFn, max_pieces: int = 12) -> str:
    """Text that is valid UTF-8 (it must survive Avro) and as unpleasant as possible."""
    pieces = draw(
        st.lists(
            st.one_of(
                st.text(st.characters(codec="utf-8"), max_size=20),
                zalgo(),
                FORMAT_AND_CONTROL,
                ODD,
                st.sampled_from([" " * 50, "\n" * 5, "\r\n", "\t", "\u3000", "\u00a0"]),
                st.sampled_from(["..", "../", "%2e%2e", "\\", "s3://", "http://169.254.169.254/"]),
            ),
            max_size=max_pieces,
        )
    )
    return "".join(pieces)


FLOATS = st.floats(width=32) | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e-45, 0.5, 2.0])
LONGS = st.integers(-(2**63), 2**63 - 1)
VOICES = st.one_of(
    st.builds(PresetVoice, hostile_text(4) | st.sampled_from(["en-us", "cmn", "silence"])),
    st.builds(RegisteredVoice, hostile_text(4) | st.just("0" * 64)),
    st.builds(PromptAudioVoice, hostile_text(6), hostile_text(6)),
)
REQUESTS = st.builds(
    SynthesisRequest,
    request_id=hostile_text(3) | st.uuids().map(str),
    text=hostile_text(),
    voice=VOICES,
    created_at_ms=LONGS,
    deadline_ms=st.none() | LONGS,
    language=st.none() | hostile_text(2) | st.sampled_from(["en-US", "zh-CN", "tlh", "en_US"]),
    style_instruction=st.none() | hostile_text(4),
    speed=FLOATS,
    output_format=st.sampled_from(AudioFormat),
    sample_rate_hz=st.none() | st.integers(-(2**31), 2**31 - 1) | st.sampled_from([16000, 24000, 48000]),
    reply_topic=st.none() | hostile_text(2) | st.sampled_from(["replies", "results", "a b"]),
    attributes=st.dictionaries(hostile_text(2), hostile_text(3), max_size=40),
    loudness_lufs=st.none() | FLOATS,
)


@FUZZ
@given(REQUESTS)
def test_any_encodable_request_is_accepted_or_refused_with_a_code(request: SynthesisRequest) -> None:
    outcome = TARGET(request_codec().encode(request))
    assert outcome.kind in ("accepted", "failed"), "well-formed Avro is never dead-lettered"
    if outcome.kind == "failed":
        assert outcome.detail in ERROR_CODES


@FUZZ
@given(REQUESTS, st.text(max_size=40) | st.sampled_from(["\ud800", "a\udfffb"]))
def test_validation_never_raises_even_on_text_avro_cannot_carry(request: SynthesisRequest, odd: str) -> None:
    # Lone surrogates cannot be UTF-8 encoded, so they never arrive from Kafka; a library caller
    # can still pass them in.
    for candidate in (request, _with_text(request, request.text + odd)):
        problems = request_problems(candidate, RequestLimits())
        assert all(p.code in ERROR_CODES for p in problems)
        if any("\ud800" <= ch <= "\udfff" for ch in candidate.text) and normalise_text(candidate.text):
            assert problems, "surrogates are never speakable text"


def _with_text(request: SynthesisRequest, text: str) -> SynthesisRequest:
    from dataclasses import replace

    return replace(request, text=text)


# ---------------------------------------------------------------- messages built field by field


def _string(valid: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """An Avro string: usually well-formed, sometimes with a lying length or broken UTF-8."""
    return st.one_of(
        valid.map(lambda s: avro_string(s.encode("utf-8"))),
        valid.map(lambda s: avro_string(s.encode("utf-8"))),
        st.binary(max_size=24).map(avro_string),  # arbitrary bytes: mostly invalid UTF-8
        st.tuples(st.integers(-(2**64), 2**64), st.binary(max_size=24)).map(lambda t: zigzag(t[0]) + t[1]),
    )


def _long() -> st.SearchStrategy[bytes]:
    return st.one_of(
        LONGS.map(zigzag),
        st.integers(-(2**80), 2**80).map(zigzag),  # past 64 bits
        st.binary(min_size=1, max_size=12).map(lambda b: bytes(x | 0x80 for x in b)),  # never ends
    )


def _union(*branches: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    index = st.integers(0, len(branches) - 1)
    return st.one_of(
        index.flatmap(lambda i: branches[i].map(lambda body: zigzag(i) + body)),
        st.integers(-5, 40).map(zigzag),  # out of range
    )


NULL = st.just(b"")
TEXT_FIELD = _string(hostile_text())
VOICE_FIELD = _union(
    _string(st.sampled_from(["en-us", "cmn"]) | hostile_text(2)),
    _string(hostile_text(2)),
    st.tuples(_string(hostile_text(3)), _string(hostile_text(3))).map(b"".join),
)
MAP_FIELD = st.one_of(
    st.just(zigzag(0)),
    st.lists(st.tuples(_string(hostile_text(2)), _string(hostile_text(2))), min_size=1, max_size=5).map(
        lambda pairs: zigzag(len(pairs)) + b"".join(k + v for k, v in pairs) + zigzag(0)
    ),
    st.tuples(st.integers(-(2**62), 2**62), st.integers(0, 2**62)).map(
        lambda t: zigzag(t[0]) + zigzag(t[1]) + b"kv"
    ),  # absurd block counts and byte sizes
)
FLOAT_FIELD = FLOATS.map(lambda f: struct.pack("<f", f)) | st.binary(min_size=0, max_size=4)
BODY = st.tuples(
    _string(st.uuids().map(str) | hostile_text(2)),  # request_id
    _long(),  # created_at
    _union(NULL, _long()),  # deadline
    TEXT_FIELD,
    _union(NULL, _string(st.sampled_from(["en-US", "tlh"]) | hostile_text(2))),  # language
    VOICE_FIELD,
    _union(NULL, _string(hostile_text(3))),  # style
    FLOAT_FIELD,  # speed
    st.integers(-3, 8).map(zigzag),  # output format enum
    _union(NULL, _long()),  # sample rate
    _union(NULL, _string(st.sampled_from(["replies", "x"]) | hostile_text(2))),  # reply topic
    MAP_FIELD,  # attributes
    _union(NULL, FLOAT_FIELD),  # loudness
).map(b"".join)
HEADERS = st.one_of(
    st.just(SINGLE_OBJECT_MAGIC + REQUEST_SCHEMAS.latest.fingerprint),
    st.just(SINGLE_OBJECT_MAGIC + REQUEST_SCHEMAS.versions[0].fingerprint),
    st.binary(min_size=8, max_size=8).map(lambda fp: SINGLE_OBJECT_MAGIC + fp),
    st.integers(0, 2**32 - 1).map(lambda i: b"\x00" + i.to_bytes(4, "big")),
    st.binary(max_size=3),
)
TRACEPARENT = st.none() | st.binary(max_size=80) | st.just(b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01")


@FUZZ
@given(HEADERS, BODY, st.binary(max_size=3), TRACEPARENT, st.none() | st.binary(max_size=40))
def test_messages_broken_deep_inside_end_in_the_dlq_or_an_answer(
    header: bytes, body: bytes, tail: bytes, traceparent: bytes | None, key: bytes | None
) -> None:
    outcome = TARGET(header + body + tail, key=key, traceparent=traceparent)
    assert outcome.kind in ("dlq", "failed", "accepted")


@FUZZ
@given(st.binary(max_size=600), TRACEPARENT)
def test_random_bytes_go_to_the_dlq(data: bytes, traceparent: bytes | None) -> None:
    outcome = TARGET(data, traceparent=traceparent)
    assert outcome.kind == "dlq" or data[:1] in (b"\xc3", b"\x00")


# ------------------------------------------------------------------------------ keys


@FUZZ
@given(
    st.text(max_size=10),
    st.lists(st.tuples(st.text(min_size=0, max_size=30), st.text(max_size=60)), max_size=8),
)
def test_the_canonical_encoding_can_be_read_back(domain: str, fields: list[tuple[str, str]]) -> None:
    """Injective: distinct (domain, fields) never hash alike, because the bytes parse back."""
    fields = [(n, v) for n, v in fields if len(n.encode("utf-8", "surrogatepass")) <= 255]
    try:
        data = canonical_encoding(domain, fields)
    except UnicodeEncodeError:
        return  # lone surrogates: never produced by the codec, refused by validation
    assert _parse_canonical(data, domain) == fields


def _parse_canonical(data: bytes, domain: str) -> list[tuple[str, str]]:
    prefix = domain.encode("utf-8") + b"\x00"
    assert data.startswith(prefix)
    position, out = len(prefix), []
    while position < len(data):
        name_len = data[position]
        name = data[position + 1 : position + 1 + name_len].decode("utf-8")
        position += 1 + name_len
        value_len = int.from_bytes(data[position : position + 4], "big")
        value = data[position + 4 : position + 4 + value_len].decode("utf-8")
        position += 4 + value_len
        out.append((name, value))
    return out


@FUZZ
@given(hostile_text(), st.sampled_from(["en-us", "cmn"]), FLOATS.filter(math.isfinite))
def test_the_cache_key_depends_on_the_normalised_text_only(text: str, preset: str, speed: float) -> None:
    def key(t: str) -> str:
        return cache_key(
            CacheKeyInputs("e", "m", ResolvedVoice(preset=preset), t, None, None, speed, "WAV", None, "p")
        )

    assert key(text) == key(normalise_text(text)) == key(unicodedata.normalize("NFC", text))


# ------------------------------------------------------------------------------ allow-list

SEGMENTS = st.one_of(
    st.sampled_from(["prompts", "secret", "..", ".", "", "%2e%2e", "..%2f", "a\\b", "x?y", "z#", "․․", "／"]),
    st.text(st.characters(codec="utf-8"), max_size=8),
)
SCHEMES = st.sampled_from(
    ["s3://", "S3://", "s3:/", "s3:///", "http://", "https://", "file://", "", "s3://@"]
)
BUCKETS = st.sampled_from(["tts-voices", "team-audio", "tts-audio", "169.254.169.254", "TTS-VOICES", "a", ""])


@FUZZ
@given(SCHEMES, BUCKETS, st.lists(SEGMENTS, max_size=6), st.text(max_size=6))
def test_the_prompt_allow_list_only_ever_yields_keys_inside_a_prefix(
    scheme: str, bucket: str, segments: list[str], suffix: str
) -> None:
    ALLOWLIST(f"{scheme}{bucket}/{'/'.join(segments)}{suffix}")


@FUZZ
@given(st.text(max_size=200))
def test_the_prompt_allow_list_takes_any_string(uri: str) -> None:
    ALLOWLIST(uri)
