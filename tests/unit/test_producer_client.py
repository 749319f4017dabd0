"""TtsProducer against a fake librdkafka: configuration, validation first, keys, delivery errors."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from producer import (
    DeliveryFailed,
    InvalidRequest,
    KafkaUnavailable,
    Lane,
    PresetVoice,
    ProducerClosed,
    ProducerSettings,
    PromptAudioVoice,
    SynthesisRequest,
    TtsProducer,
)
from schemas.codec import request_codec
from schemas.keys import routing_key
from tests.unit.producer_fakes import FakeError, FakeProducer, Sent


def _client(fake: FakeProducer | None = None, **kwargs: Any) -> tuple[TtsProducer, FakeProducer]:
    made: list[FakeProducer] = []

    def factory(config: dict[str, Any]) -> FakeProducer:
        producer = fake if fake is not None else FakeProducer()
        producer.config = config
        made.append(producer)
        return producer

    client = TtsProducer(producer_factory=factory, **kwargs)
    return client, made[0]


def _decode(sent: Sent) -> SynthesisRequest:
    assert sent.value is not None
    return request_codec().decode(sent.value)


# ----------------------------------------------------------------------------------- configuration


def test_producer_is_idempotent_with_acks_all() -> None:
    _, fake = _client(bootstrap_servers="kafka-1:9092,kafka-2:9092")
    assert fake.config["enable.idempotence"] is True
    assert fake.config["acks"] == "all"
    assert fake.config["bootstrap.servers"] == "kafka-1:9092,kafka-2:9092"
    assert fake.config["partitioner"] == "murmur2_random"


def test_keyword_arguments_need_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTS_KAFKA_BOOTSTRAP_SERVERS", "from-env:9092")
    monkeypatch.setenv("TTS_LINGER_MS", "999")
    client, fake = _client(linger_ms=7)
    assert fake.config["bootstrap.servers"] == "127.0.0.1:9092", "the library must not read TTS_*"
    assert fake.config["linger.ms"] == 7
    assert client.settings.linger_ms == 7


def test_settings_object_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTS_KAFKA_BOOTSTRAP_SERVERS", "from-env:9092")
    monkeypatch.setenv("TTS_TOPICS_BULK", "team.bulk")
    settings = ProducerSettings()  # the CLI's way: environment variables
    client, fake = _client(settings=settings, lane="bulk", config={"client.id": "billing"})
    assert fake.config["bootstrap.servers"] == "from-env:9092"
    assert fake.config["client.id"] == "billing"
    assert client.topic_for() == "team.bulk"


def test_secrets_stay_out_of_reprs() -> None:
    settings = ProducerSettings.from_values(
        kafka={
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "svc",
            "sasl_password": "hunter2-secret",
        },
        schema_registry_username="reg",
        schema_registry_password="registry-secret",
    )
    assert "hunter2-secret" not in repr(settings)
    assert "registry-secret" not in repr(settings)
    assert settings.producer_config()["sasl.password"] == "hunter2-secret"


# ------------------------------------------------------------------------------------------ submit


def test_submit_returns_the_request_id_and_keys_by_routing_key() -> None:
    client, fake = _client()
    request_id = client.submit("Hello, world.", voice="preset:en-us", attributes={"tenant": "acme"})
    client.flush()
    assert uuid.UUID(request_id).version == 4
    [sent] = fake.delivered
    request = _decode(sent)
    assert sent.topic == "tts.requests"
    assert request.request_id == request_id
    assert request.voice == PresetVoice("en-us")
    assert sent.key == routing_key(request).encode()


def test_identical_requests_share_a_key_and_caller_ids_are_kept() -> None:
    client, fake = _client()
    client.submit("Same words", voice="preset:en-us", request_id="order-1")
    client.submit("Same  words ", voice="preset:en-us", request_id="order-2")
    client.flush()
    first, second = fake.delivered
    assert first.key == second.key
    assert [_decode(s).request_id for s in fake.delivered] == ["order-1", "order-2"]


def test_lane_chooses_the_topic() -> None:
    client, fake = _client()
    client.submit("a", voice="preset:en-us", lane=Lane.BULK)
    client.submit("b", voice="preset:en-us")
    client.flush()
    assert [s.topic for s in fake.delivered] == ["tts.requests.bulk", "tts.requests"]


def test_prompt_voice_and_every_option_arrive() -> None:
    client, fake = _client()
    client.submit(
        "今天天气很好。",
        voice="prompt:s3://tts-voices/alice.wav",
        prompt_text="Hi, I am Alice.",
        language="zh-CN",
        style_instruction="用欢快的语气说",
        speed=1.25,
        output_format="ogg",
        sample_rate_hz=48000,
        loudness_lufs=-14.0,
        ttl_s=30,
        reply_topic="team.results",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    client.flush()
    [sent] = fake.delivered
    request = _decode(sent)
    assert request.voice == PromptAudioVoice("s3://tts-voices/alice.wav", "Hi, I am Alice.")
    assert request.output_format.value == "OGG_OPUS"
    assert request.deadline_ms == request.created_at_ms + 30_000
    assert (request.speed, request.sample_rate_hz, request.loudness_lufs) == (1.25, 48000, -14.0)
    assert sent.headers == [("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]


@pytest.mark.parametrize(
    ("kwargs", "fields"),
    [
        ({"text": ""}, ["text"]),
        ({"text": "x" * 5001}, ["text"]),
        ({"speed": 3.0}, ["speed"]),
        ({"speed": "fast"}, ["speed"]),
        ({"output_format": "aac"}, ["output_format"]),
        ({"voice": "en-us"}, ["voice"]),
        ({"voice": "robot:x"}, ["voice"]),
        ({"voice": "prompt:s3://b/k.wav"}, ["voice.transcript"]),
        ({"voice": "prompt:http://b/k.wav", "prompt_text": "hi"}, ["voice.audio_uri"]),
        ({"voice": "registered:Not Valid"}, ["voice.ref"]),
        ({"language": "klingon!"}, ["language"]),
        ({"attributes": {"n": 1}}, ["attributes.n"]),
        ({"text": "", "speed": 9.0, "sample_rate_hz": 1}, ["text", "speed", "sample_rate_hz"]),
    ],
)
def test_invalid_requests_are_refused_before_producing(kwargs: dict[str, Any], fields: list[str]) -> None:
    client, fake = _client()
    arguments: dict[str, Any] = {"text": "Hello", "voice": "preset:en-us", **kwargs}
    with pytest.raises(InvalidRequest) as caught:
        client.submit(**arguments)
    assert caught.value.fields == fields
    assert all(f"{field}:" in str(caught.value) for field in fields)
    assert fake.queued == []
    assert fake.delivered == []


def test_a_ready_made_request_is_validated_too() -> None:
    client, fake = _client()
    bad = SynthesisRequest("id with spaces", "Hello", PresetVoice("en-us"), created_at_ms=1)
    with pytest.raises(InvalidRequest) as caught:
        client.submit_request(bad)
    assert caught.value.field == "request_id"
    assert fake.queued == []


def test_submit_many_streams_lazily() -> None:
    client, fake = _client()
    items = iter(
        [
            {"text": "one", "voice": "preset:en-us"},
            SynthesisRequest("r-2", "two", PresetVoice("en-us"), created_at_ms=1),
            {"text": "three", "voice": "preset:en-us"},
        ]
    )
    stream = client.submit_many(items, lane="bulk")
    first = next(stream)
    assert len(fake.queued) == 1, "nothing beyond the item asked for is read or produced"
    rest = list(stream)
    assert rest[0] == "r-2"
    assert len(rest) == 2
    client.flush()
    assert {s.topic for s in fake.delivered} == {"tts.requests.bulk"}
    assert _decode(fake.delivered[0]).request_id == first


def test_submit_many_stops_at_the_first_invalid_item() -> None:
    client, fake = _client()
    items = [{"text": "ok", "voice": "preset:en-us"}, {"text": "", "voice": "preset:en-us"}]
    produced = []
    with pytest.raises(InvalidRequest):
        produced.extend(client.submit_many(items))
    assert len(produced) == 1
    assert len(fake.queued) == 1


# ---------------------------------------------------------------------------------------- delivery


def test_delivery_failures_surface_at_flush_with_request_ids() -> None:
    def too_large(sent: Sent) -> FakeError | None:
        return FakeError("MSG_SIZE_TOO_LARGE", "too large") if b"big" in (sent.value or b"") else None

    fake = FakeProducer(fail=too_large)
    client, _ = _client(fake)
    ok = client.submit("small", voice="preset:en-us")
    bad = client.submit("big", voice="preset:en-us")
    with pytest.raises(DeliveryFailed) as caught:
        client.flush()
    assert caught.value.request_ids == [bad]
    assert caught.value.failures[0].code == "MSG_SIZE_TOO_LARGE"
    assert ok not in str(caught.value)
    client.flush()  # reported once, then cleared


def _submit_one_and_leave(client: TtsProducer, error: BaseException | None = None) -> None:
    with client:
        client.submit("a", voice="preset:en-us")
        if error is not None:
            raise error


def test_leaving_the_block_flushes_and_raises() -> None:
    fake = FakeProducer(fail=lambda sent: FakeError("_MSG_TIMED_OUT", "timed out", is_retriable=True))
    client = TtsProducer(producer_factory=lambda c: fake)
    with pytest.raises(DeliveryFailed):
        _submit_one_and_leave(client)
    assert fake.queued == []
    assert fake.delivered == []


def test_leaving_the_block_cleanly_delivers_everything() -> None:
    fake = FakeProducer()
    _submit_one_and_leave(TtsProducer(producer_factory=lambda c: fake))
    assert len(fake.delivered) == 1


def test_an_exception_inside_the_block_is_not_masked_by_delivery_errors() -> None:
    fake = FakeProducer(fail=lambda sent: FakeError("_MSG_TIMED_OUT"))
    client = TtsProducer(producer_factory=lambda c: fake)
    with pytest.raises(KeyError, match="own bug"):
        _submit_one_and_leave(client, KeyError("caller's own bug"))


def test_unacknowledged_messages_at_the_flush_timeout_are_reported() -> None:
    client, _ = _client(FakeProducer(stuck=True))
    client.submit("a", voice="preset:en-us")
    with pytest.raises(DeliveryFailed) as caught:
        client.flush(timeout_s=0.01)
    assert caught.value.undelivered == 1
    assert client.pending == 1


def test_a_full_local_queue_waits_instead_of_failing() -> None:
    client, fake = _client(FakeProducer(buffer_full=3))
    client.submit("a", voice="preset:en-us")
    assert fake.polls >= 3
    client.flush()
    assert len(fake.delivered) == 1


def test_callbacks_are_served_while_submitting_many() -> None:
    client, _ = _client()
    for i in range(2500):
        client.submit(f"line {i}", voice="preset:en-us")
    assert client.delivered >= 2000, "poll(0) runs every thousand messages"


def test_closed_client_refuses_work() -> None:
    client, _ = _client()
    client.close()
    with pytest.raises(ProducerClosed):
        client.submit("a", voice="preset:en-us")


def test_check_connection_names_missing_topics_and_dead_brokers() -> None:
    client, fake = _client(FakeProducer(topics={"tts.requests"}))
    client.check_connection()
    with pytest.raises(KafkaUnavailable, match=r"tts\.requests\.bulk.*topics ensure"):
        client.check_connection(lanes=["bulk"])
    fake.unreachable = True
    with pytest.raises(KafkaUnavailable, match="no Kafka broker answered"):
        client.check_connection()


def test_confluent_framing_needs_a_registry_url() -> None:
    with pytest.raises(ValueError, match="schema_registry_url"):
        _client(framing="confluent")


def test_counters_are_exposed_on_a_registry_when_asked() -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    fake = FakeProducer(
        fail=lambda sent: FakeError("_MSG_TIMED_OUT") if b"doomed" in (sent.value or b"") else None
    )
    client, _ = _client(fake, metrics_registry=registry)
    client.submit("hello", voice="preset:en-us")
    client.submit("doomed", voice="preset:en-us")
    with pytest.raises(InvalidRequest):
        client.submit("too fast", voice="preset:en-us", speed=9.0)
    with pytest.raises(DeliveryFailed):
        client.flush()
    topic = client.topic_for()

    def value(name: str, **labels: str) -> float:
        found = registry.get_sample_value(name, labels)
        return 0.0 if found is None else found

    assert value("tts_producer_requests_submitted_total", topic=topic) == 2
    assert value("tts_producer_requests_delivered_total", topic=topic) == 1
    assert value("tts_producer_delivery_failures_total", topic=topic, error="_MSG_TIMED_OUT") == 1
    assert value("tts_producer_invalid_requests_total", field="speed") == 1


def test_no_registry_no_counters() -> None:
    client, _ = _client()
    assert client._metrics is None
