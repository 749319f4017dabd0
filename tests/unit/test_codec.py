"""The codec: both framings, round trips, every decode failure named, strict encoding."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas import codec, model
from schemas.codec import CONFLUENT_MAGIC, SINGLE_OBJECT_MAGIC, Framing
from schemas.errors import DecodeError, DecodeReason, EncodeError
from schemas.model import PresetVoice, PromptAudioVoice, SynthesisRequest
from tests.unit.contract_strategies import REQUESTS, RESULTS, FakeRegistry

REQUEST = SynthesisRequest(
    request_id="r-1",
    text="Hello, world.",
    voice=PresetVoice("en-us"),
    created_at_ms=1_700_000_000_123,
    attributes={"tenant": "acme"},
)


def _fastavro_bytes(schema: Any, datum: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, datum, strict=True)
    return buf.getvalue()


# ------------------------------------------------------------------------------------ round trips


@given(REQUESTS)
def test_request_round_trip_single_object(request: SynthesisRequest) -> None:
    c = codec.request_codec()
    data = c.encode(request)
    assert data[:2] == SINGLE_OBJECT_MAGIC
    assert c.decode(data) == request


@given(RESULTS)
def test_result_round_trip_single_object(result: model.SynthesisResult) -> None:
    c = codec.result_codec()
    assert c.decode(c.encode(result)) == result


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(REQUESTS)
def test_request_round_trip_confluent(request: SynthesisRequest) -> None:
    registry = FakeRegistry()
    writer = codec.request_codec(registry)  # type: ignore[arg-type]
    data = writer.encode(request, framing=Framing.CONFLUENT, topic="tts.requests")
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert (magic, schema_id) == (CONFLUENT_MAGIC, registry.subjects["tts.requests-value"].popitem()[1])
    # A fresh codec knows no ids: it must fetch the writer schema from the registry.
    reader = codec.request_codec(registry)  # type: ignore[arg-type]
    assert reader.decode(data) == request
    assert reader.decode(data) == request
    assert registry.fetches == 1, "writer schemas are cached by id"


@given(REQUESTS)
def test_fast_writer_writes_exactly_what_fastavro_writes(request: SynthesisRequest) -> None:
    c = codec.request_codec()
    datum = model.request_to_avro(request)
    assert c.encode(request)[10:] == _fastavro_bytes(codec.REQUEST_SCHEMAS.latest.parsed, datum)


@given(RESULTS)
def test_fast_writer_matches_fastavro_for_results(result: model.SynthesisResult) -> None:
    c = codec.result_codec()
    datum = model.result_to_avro(result)
    assert c.encode(result)[10:] == _fastavro_bytes(codec.RESULT_SCHEMAS.latest.parsed, datum)


def test_timestamps_beyond_the_datetime_range_survive() -> None:
    c = codec.request_codec()
    far = SynthesisRequest("r", "t", PresetVoice("p"), created_at_ms=2**62, deadline_ms=-(2**62))
    assert c.decode(c.encode(far)) == far


def test_data_written_with_v1_reads_with_the_latest_schema() -> None:
    v1 = codec.REQUEST_SCHEMAS.versions[0]
    datum = model.request_to_avro(REQUEST)
    del datum["loudness_lufs"]
    data = SINGLE_OBJECT_MAGIC + v1.fingerprint + _fastavro_bytes(v1.parsed, datum)
    decoded = codec.request_codec().decode(data)
    assert decoded == REQUEST
    assert decoded.loudness_lufs is None


def test_single_object_header_is_the_crc64_fingerprint_of_the_canonical_form() -> None:
    # CRC-64-AVRO as the Avro specification defines it, computed here without fastavro.
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in codec.REQUEST_SCHEMAS.latest.canonical_form.encode():
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    assert codec.request_codec().encode(REQUEST)[2:10] == fp.to_bytes(8, "little")


# ------------------------------------------------------------------------------- decode failures


def _decode_error(data: bytes, c: codec.AvroCodec[Any] | None = None) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        (c or codec.request_codec()).decode(data)
    assert caught.value.raw == data, "the raw bytes travel with the error (for the DLQ)"
    return caught.value


def _valid() -> bytes:
    return codec.request_codec().encode(REQUEST)


def test_empty_message() -> None:
    assert _decode_error(b"").reason is DecodeReason.EMPTY


def test_bad_magic_first_byte() -> None:
    error = _decode_error(b'{"text": "json"}')
    assert error.reason is DecodeReason.BAD_MAGIC
    assert "0x7b" in str(error)


def test_bad_magic_second_byte() -> None:
    data = b"\xc3\x02" + _valid()[2:]
    assert _decode_error(data).reason is DecodeReason.BAD_MAGIC


def test_unknown_fingerprint() -> None:
    data = SINGLE_OBJECT_MAGIC + b"\x01" * 8 + _valid()[10:]
    error = _decode_error(data)
    assert error.reason is DecodeReason.UNKNOWN_FINGERPRINT
    assert "0101010101010101" in str(error)


def test_result_bytes_fed_to_the_request_codec() -> None:
    result = model.SynthesisResult(
        "r", model.ResultStatus.SUCCEEDED, "e", "m", model.Timings(1, 2, 3), completed_at_ms=5
    )
    error = _decode_error(codec.result_codec().encode(result))
    assert error.reason is DecodeReason.UNKNOWN_FINGERPRINT


def test_confluent_framing_without_a_registry() -> None:
    data = b"\x00\x00\x00\x00\x07" + _valid()[10:]
    error = _decode_error(data)
    assert error.reason is DecodeReason.NO_REGISTRY
    assert not error.retryable


def test_unknown_schema_id() -> None:
    c = codec.request_codec(FakeRegistry())  # type: ignore[arg-type]
    error = _decode_error(b"\x00\x00\x00\x03\xe7" + _valid()[10:], c)
    assert error.reason is DecodeReason.UNKNOWN_SCHEMA_ID
    assert "999" in str(error)


def test_registry_down_is_retryable() -> None:
    c = codec.request_codec(FakeRegistry(unavailable=True))  # type: ignore[arg-type]
    error = _decode_error(b"\x00\x00\x00\x00\x65" + _valid()[10:], c)
    assert error.reason is DecodeReason.REGISTRY_UNAVAILABLE
    assert error.retryable, "the bytes may be fine: retry, never dead-letter"


def test_schema_id_of_another_record_type() -> None:
    registry = FakeRegistry()
    result_schema = codec.RESULT_SCHEMAS.latest.canonical_form
    from confluent_kafka.schema_registry import Schema

    schema_id = registry.register_schema("tts.results-value", Schema(result_schema, "AVRO"))
    c = codec.request_codec(registry)  # type: ignore[arg-type]
    error = _decode_error(struct.pack(">bI", 0, schema_id) + b"\x00", c)
    assert error.reason is DecodeReason.WRONG_RECORD_TYPE


def test_truncated_header_and_body() -> None:
    assert _decode_error(_valid()[:6]).reason is DecodeReason.TRUNCATED
    assert _decode_error(b"\x00\x00\x01").reason is DecodeReason.TRUNCATED
    assert _decode_error(_valid()[:-3]).reason is DecodeReason.TRUNCATED


def test_trailing_bytes() -> None:
    error = _decode_error(_valid() + b"\x00\x00")
    assert error.reason is DecodeReason.TRAILING_BYTES
    assert "2 bytes" in str(error)


def test_invalid_utf8_in_a_string() -> None:
    header = _valid()[:10]
    # request_id: length 2 (zigzag 4), then two bytes that are not UTF-8
    error = _decode_error(header + b"\x04\xff\xfe" + b"\x00" * 20)
    assert error.reason is DecodeReason.INVALID_UTF8


@pytest.mark.parametrize("length_varint", [b"\x01", b"\x7f", b"\xfe\xff\xff\xff\x0f"])
def test_out_of_range_length_prefix(length_varint: bytes) -> None:
    error = _decode_error(_valid()[:10] + length_varint + b"abc")
    assert error.reason is DecodeReason.BAD_LENGTH
    assert "length prefix" in str(error)


@settings(max_examples=400)
@given(st.binary(max_size=200))
@example(b"\xc3")
@example(b"\x00\x00\x00\x00")
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    # Anything other than DecodeError escaping here fails the test.
    assert _raw_of_failure(codec.request_codec(), data) in (None, data)


def _raw_of_failure(c: codec.AvroCodec[Any], data: bytes) -> bytes | None:
    try:
        c.decode(data)
    except DecodeError as exc:
        return exc.raw
    return None


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_random_bodies_behind_a_valid_header_only_raise_decode_errors(body: bytes) -> None:
    # The header is right, so these exercise the Avro body reader rather than the framing checks.
    for c, header in (
        (codec.request_codec(), _valid()[:10]),
        (codec.result_codec(), SINGLE_OBJECT_MAGIC + codec.RESULT_SCHEMAS.latest.fingerprint),
    ):
        assert _raw_of_failure(c, header + body) in (None, header + body)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(REQUESTS, st.data())
def test_corrupted_valid_messages_decode_or_raise_decode_error(
    request: SynthesisRequest, data: st.DataObject
) -> None:
    encoded = bytearray(codec.request_codec().encode(request))
    position = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    encoded[position] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded)))
    corrupted = bytes(encoded[:cut])
    try:
        decoded = codec.request_codec().decode(corrupted)
    except DecodeError:
        return
    assert isinstance(decoded, SynthesisRequest)


# ------------------------------------------------------------------------------- strict encoding


def _encode_error(datum: dict[str, Any]) -> EncodeError:
    with pytest.raises(EncodeError) as caught:
        codec.request_codec().encode_datum(datum)
    return caught.value


def test_wrong_type_names_the_field() -> None:
    datum = model.request_to_avro(REQUEST)
    datum["speed"] = "fast"
    error = _encode_error(datum)
    assert error.field == "speed"
    assert "speed" in str(error)
    assert "'fast'" in str(error)


def test_missing_field_is_named() -> None:
    datum = model.request_to_avro(REQUEST)
    del datum["text"]
    error = _encode_error(datum)
    assert error.field == "text"
    assert "missing" in str(error)


def test_unknown_field_is_named() -> None:
    datum = model.request_to_avro(REQUEST)
    datum["colour"] = "blue"
    assert _encode_error(datum).field == "colour"


def test_nested_field_inside_the_voice_union_is_named() -> None:
    datum = model.request_to_avro(REQUEST)
    datum["voice"] = ("io.ttsstream.PresetVoice", {"name": 42})
    error = _encode_error(datum)
    assert error.field == "voice.name"


def test_out_of_range_int_is_an_error_not_silent_truncation() -> None:
    datum = model.request_to_avro(REQUEST)
    datum["sample_rate_hz"] = 2**40
    assert _encode_error(datum).field == "sample_rate_hz"


def test_model_object_with_a_wrong_type_names_the_field() -> None:
    bad = SynthesisRequest("r", "t", PromptAudioVoice("s3://b/k", None), created_at_ms=1)  # type: ignore[arg-type]
    with pytest.raises(EncodeError) as caught:
        codec.request_codec().encode(bad)
    assert caught.value.field == "voice.transcript"


def test_confluent_framing_needs_a_topic_and_a_registry() -> None:
    with pytest.raises(EncodeError, match="topic"):
        codec.request_codec(FakeRegistry()).encode(REQUEST, framing=Framing.CONFLUENT)  # type: ignore[arg-type]
    with pytest.raises(EncodeError, match="registry"):
        codec.request_codec().encode(REQUEST, framing=Framing.CONFLUENT, topic="t")


def test_confluent_framing_without_auto_register_looks_the_schema_up() -> None:
    registry = FakeRegistry()
    from confluent_kafka.schema_registry import Schema

    schema_id = registry.register_schema(
        "t-value", Schema(codec.REQUEST_SCHEMAS.latest.canonical_form, "AVRO")
    )
    c = codec.request_codec(registry, auto_register=False)  # type: ignore[arg-type]
    data = c.encode(REQUEST, framing=Framing.CONFLUENT, topic="t")
    assert struct.unpack(">I", data[1:5])[0] == schema_id
    assert c.decode(data) == REQUEST


def test_bundled_schemas_document_every_field() -> None:
    for family in (codec.REQUEST_SCHEMAS, codec.RESULT_SCHEMAS):
        for version in family.versions:
            folder = "synthesis_request" if family is codec.REQUEST_SCHEMAS else "synthesis_result"
            from importlib import resources

            raw = json.loads(
                (resources.files("schemas") / "avro" / folder / f"v{version.version}.avsc").read_text()
            )
            undocumented = [path for path in _fields(raw, "") if not path[1]]
            assert not undocumented, f"{folder} v{version.version}: {undocumented}"


def _fields(schema: Any, prefix: str) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    if isinstance(schema, list):
        for branch in schema:
            out += _fields(branch, prefix)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            for f in schema["fields"]:
                out.append((f"{prefix}{f['name']}", bool(f.get("doc"))))
                out += _fields(f["type"], f"{prefix}{f['name']}.")
        elif isinstance(schema.get("type"), dict | list):
            out += _fields(schema["type"], prefix)
    return out
