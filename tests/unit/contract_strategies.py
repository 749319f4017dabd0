"""Hypothesis strategies for the event contract, shared by the codec and producer unit tests."""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry import RegisteredSchema, Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError
from hypothesis import strategies as st

from schemas.model import (
    AudioDescriptor,
    AudioFormat,
    ErrorCode,
    PresetVoice,
    PromptAudioVoice,
    RegisteredVoice,
    ResultError,
    ResultStatus,
    SynthesisRequest,
    SynthesisResult,
    Timings,
)

LONG = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INT = st.integers(min_value=-(2**31), max_value=2**31 - 1)
# Avro float is 32-bit: only float32 values survive a round trip unchanged. NaN never equals itself.
FLOAT32 = st.floats(width=32, allow_nan=False)
DOUBLE = st.floats(allow_nan=False)
TEXT = st.text(max_size=60)
OPTIONAL_TEXT = st.none() | TEXT
ATTRIBUTES = st.dictionaries(TEXT, TEXT, max_size=4)

VOICES = st.one_of(
    st.builds(PresetVoice, TEXT),
    st.builds(RegisteredVoice, TEXT),
    st.builds(PromptAudioVoice, TEXT, TEXT),
)

REQUESTS = st.builds(
    SynthesisRequest,
    request_id=TEXT,
    text=TEXT,
    voice=VOICES,
    created_at_ms=LONG,
    deadline_ms=st.none() | LONG,
    language=OPTIONAL_TEXT,
    style_instruction=OPTIONAL_TEXT,
    speed=FLOAT32,
    output_format=st.sampled_from(AudioFormat),
    sample_rate_hz=st.none() | INT,
    reply_topic=OPTIONAL_TEXT,
    attributes=ATTRIBUTES,
    loudness_lufs=st.none() | FLOAT32,
)

RESULTS = st.builds(
    SynthesisResult,
    request_id=TEXT,
    status=st.sampled_from(ResultStatus),
    engine=TEXT,
    model_version=TEXT,
    timings=st.builds(Timings, LONG, LONG, LONG),
    completed_at_ms=LONG,
    cache_key=OPTIONAL_TEXT,
    audio=st.none()
    | st.builds(
        AudioDescriptor,
        uri=TEXT,
        content_type=TEXT,
        size_bytes=LONG,
        duration_seconds=DOUBLE,
        sample_rate_hz=INT,
        sha256=TEXT,
        presigned_url=OPTIONAL_TEXT,
        presigned_url_expires_at_ms=st.none() | LONG,
    ),
    error=st.none() | st.builds(ResultError, st.sampled_from(ErrorCode), TEXT, st.booleans()),
    cache_hit=st.booleans(),
    attributes=ATTRIBUTES,
    traceparent=OPTIONAL_TEXT,
    worker_id=OPTIONAL_TEXT,
)


class FakeRegistry:
    """The three calls the codec makes on a confluent-kafka SchemaRegistryClient, in memory."""

    def __init__(self, *, unavailable: bool = False) -> None:
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, dict[str, int]] = {}
        self.unavailable = unavailable
        self.fetches = 0

    def register_schema(self, subject: str, schema: Schema) -> int:
        text = schema.schema_str or ""
        for schema_id, existing in self.schemas.items():
            if existing == text:
                self.subjects.setdefault(subject, {})[text] = schema_id
                return schema_id
        schema_id = 100 + len(self.schemas)
        self.schemas[schema_id] = text
        self.subjects.setdefault(subject, {})[text] = schema_id
        return schema_id

    def lookup_schema(self, subject: str, schema: Schema) -> RegisteredSchema:
        text = schema.schema_str or ""
        schema_id = self.subjects.get(subject, {}).get(text)
        if schema_id is None:
            raise SchemaRegistryError(404, 40403, "schema not found")
        return RegisteredSchema(subject, 1, schema_id, None, schema)

    def get_schema(self, schema_id: int) -> Schema:
        self.fetches += 1
        if self.unavailable:
            raise ConnectionError("registry down")
        if schema_id not in self.schemas:
            raise SchemaRegistryError(404, 40403, f"schema {schema_id} not found")
        return Schema(self.schemas[schema_id], "AVRO")


def registry(**kwargs: Any) -> Any:
    return FakeRegistry(**kwargs)
