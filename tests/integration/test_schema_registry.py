"""The contract through a Confluent-compatible registry (Apicurio's ccompat API): the registry's
own compatibility check agrees with ours, and Confluent framing works end to end."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from producer import ProducerSettings, ResultSubscriber, StartAt, TtsProducer
from schemas import codec
from schemas.codec import Framing, registry_client, request_codec, result_codec
from schemas.compat import full_transitive_problems
from schemas.model import ResultStatus, SynthesisResult, Timings
from schemas.topics import TopicNames
from tests.support.kafka_io import subscriber
from tests.support.responder import private_topics
from tests.support.stack import StackAddresses, unique_name

pytestmark = pytest.mark.registry

FAMILIES = {"synthesis_request": codec.REQUEST_SCHEMAS, "synthesis_result": codec.RESULT_SCHEMAS}


def _raw(folder: str, version: int) -> dict[str, Any]:
    text = (resources.files("schemas") / "avro" / folder / f"v{version}.avsc").read_text("utf-8")
    return dict(json.loads(text))


@pytest.fixture
def registry(registry_url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": registry_url})


@pytest.mark.parametrize("folder", FAMILIES)
def test_registry_accepts_every_version_under_full_transitive(
    registry: SchemaRegistryClient, folder: str
) -> None:
    subject = f"{unique_name(folder)}-value"
    family = FAMILIES[folder]
    try:
        for version in family.versions:
            schema = Schema(json.dumps(_raw(folder, version.version)), "AVRO")
            if version.version > 1:
                assert registry.test_compatibility(subject, schema) is True, f"v{version.version}"
            registry.register_schema(subject, schema)
            if version.version == 1:
                registry.set_compatibility(subject, "FULL_TRANSITIVE")
        assert len(registry.get_versions(subject)) == len(family.versions)
    finally:
        registry.delete_subject(subject, permanent=False)


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("new field without default", lambda raw: raw["fields"].append({"name": "priority", "type": "int"})),
        ("removed field without default", lambda raw: raw.update(fields=raw["fields"][1:])),
        ("changed type", lambda raw: raw["fields"][3].update(type="int")),
    ],
)
def test_registry_and_our_checker_both_refuse_an_incompatible_request_schema(
    registry: SchemaRegistryClient, name: str, change: Callable[[dict[str, Any]], None]
) -> None:
    subject = f"{unique_name('incompatible')}-value"
    released = codec.REQUEST_SCHEMAS.versions
    candidate = copy.deepcopy(_raw("synthesis_request", len(released)))
    change(candidate)
    try:
        for version in released:
            registry.register_schema(
                subject, Schema(json.dumps(_raw("synthesis_request", version.version)), "AVRO")
            )
            if version.version == 1:
                registry.set_compatibility(subject, "FULL_TRANSITIVE")
        as_schema = Schema(json.dumps(candidate), "AVRO")
        assert registry.test_compatibility(subject, as_schema) is False, name
        with pytest.raises(SchemaRegistryError) as refused:
            registry.register_schema(subject, as_schema)
        assert refused.value.http_status_code == 409
        ours = full_transitive_problems(
            [(f"v{v.version}", v.parsed) for v in released]
            + [("candidate", codec.parse_schema_text(json.dumps(candidate)))]
        )
        assert ours, f"our checker missed: {name}"
    finally:
        registry.delete_subject(subject, permanent=False)


# -------------------------------------------------------------------------------- Confluent framing


@pytest.fixture
def topics(make_topic: Callable[..., str]) -> TopicNames:
    return private_topics(make_topic, partitions=2)


def _read_values(kafka_config: dict[str, Any], topic: str, count: int) -> list[bytes]:
    consumer = subscriber(kafka_config, topic)
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(values) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                values.append(msg.value())
    finally:
        consumer.close()
    return values


def test_confluent_framed_requests_through_broker_and_registry(
    kafka_config: dict[str, Any], stack: StackAddresses, registry_url: str, topics: TopicNames
) -> None:
    settings = ProducerSettings.from_values(
        kafka=stack.kafka_values(),
        topics=topics,
        framing=Framing.CONFLUENT,
        schema_registry_url=registry_url,
    )
    with TtsProducer(settings) as tts:
        ids = [
            tts.submit("Hello over the registry.", voice="preset:en-us", attributes={"tenant": "acme"}),
            tts.submit("今天天气很好。", voice="preset:cmn", language="zh-CN", loudness_lufs=-20.0),
        ]
    values = _read_values(kafka_config, topics.requests, 2)
    assert [v[0] for v in values] == [0, 0], "magic byte 0 + schema id"
    fresh = request_codec(registry_client(registry_url))
    decoded = {fresh.decode(v).request_id: fresh.decode(v) for v in values}
    assert set(decoded) == set(ids)
    assert decoded[ids[1]].loudness_lufs == -20.0

    # The ecosystem's own deserializer reads our bytes too.
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
    context = SerializationContext(topics.requests, MessageField.VALUE)
    plain = [deserialize(v, context) for v in values]
    assert {p["request_id"] for p in plain} == set(ids)
    assert {p["text"] for p in plain} == {"Hello over the registry.", "今天天气很好。"}


def test_subscriber_reads_confluent_framed_results(
    kafka_config: dict[str, Any], stack: StackAddresses, registry_url: str, topics: TopicNames
) -> None:
    from confluent_kafka import Producer

    framed = result_codec(registry_client(registry_url)).encode(
        SynthesisResult(
            "r-confluent", ResultStatus.SUCCEEDED, "test", "1", Timings(1, 2, 3), completed_at_ms=1
        ),
        framing=Framing.CONFLUENT,
        topic=topics.results,
    )
    producer = Producer(kafka_config)
    producer.produce(topics.results, framed, b"r-confluent")
    producer.flush(30)
    settings = ProducerSettings.from_values(
        kafka=stack.kafka_values(), topics=topics, schema_registry_url=registry_url
    )
    with ResultSubscriber(settings, start=StartAt.BEGINNING) as results:
        found = results.wait_for(["r-confluent"], timeout_s=30)
    assert found["r-confluent"].engine == "test"
