"""The client library against the real broker, read back with plain confluent-kafka clients."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer, murmur2

from producer import (
    DeliveryFailed,
    ProducerSettings,
    ResultSubscriber,
    ResultTimeout,
    StartAt,
    TtsProducer,
)
from schemas.codec import SINGLE_OBJECT_MAGIC, request_codec, result_codec
from schemas.keys import routing_key
from schemas.model import ResultStatus, SynthesisResult, Timings
from schemas.topics import TopicNames
from tests.support.kafka_io import subscriber
from tests.support.responder import private_topics
from tests.support.stack import StackAddresses, unique_name

CASES: list[dict[str, Any]] = [
    {"text": "Hello, world.", "voice": "preset:en-us"},
    {
        "text": "今天天气很好。",
        "voice": "preset:cmn",
        "language": "zh-CN",
        "style_instruction": "用欢快的语气说",
    },
    {
        "text": "Paragraph one.\n\nParagraph two.",
        "voice": "prompt:s3://tts-voices/prompts/alice.wav",
        "prompt_text": "Hi, I am Alice.",
        "speed": 1.25,
        "output_format": "ogg_opus",
        "sample_rate_hz": 48000,
        "loudness_lufs": -14.0,
        "ttl_s": 60,
        "attributes": {"tenant": "acme", "correlation_id": "c-42"},
    },
    {"text": "Your order has shipped.", "voice": "registered:" + "ab" * 32, "output_format": "mp3"},
]


@pytest.fixture
def topics(make_topic: Callable[..., str]) -> TopicNames:
    return private_topics(make_topic, partitions=3)


def _settings(stack: StackAddresses, topics: TopicNames, **values: Any) -> ProducerSettings:
    return ProducerSettings.from_values(kafka=stack.kafka_values(), topics=topics, **values)


def _read(kafka_config: dict[str, Any], topic: str, count: int) -> list[Any]:
    consumer = subscriber(kafka_config, topic)
    messages: list[Any] = []
    deadline = time.monotonic() + 30
    try:
        while len(messages) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                messages.append(msg)
        # a little longer, to catch anything that should not be there
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                messages.append(msg)
    finally:
        consumer.close()
    return messages


def test_requests_arrive_intact_keyed_and_partitioned_like_java(
    kafka_config: dict[str, Any], stack: StackAddresses, topics: TopicNames
) -> None:
    with TtsProducer(_settings(stack, topics)) as tts:
        ids = [tts.submit(**case) for case in CASES]
        duplicate = tts.submit(**CASES[0])
    messages = _read(kafka_config, topics.requests, len(CASES) + 1)
    assert len(messages) == len(CASES) + 1
    codec = request_codec()  # a fresh codec: nothing cached from the producing side
    by_id = {}
    for msg in messages:
        assert msg.value()[:2] == SINGLE_OBJECT_MAGIC
        request = codec.decode(msg.value())
        assert msg.key() == routing_key(request).encode()
        assert msg.partition() == murmur2(msg.key(), 3), "partitioned like the Java client's default"
        by_id[request.request_id] = (request, msg)
    assert set(by_id) == {*ids, duplicate}
    assert by_id[ids[0]][1].partition() == by_id[duplicate][1].partition()
    prompt = by_id[ids[2]][0]
    assert prompt.attributes == {"tenant": "acme", "correlation_id": "c-42"}
    assert prompt.deadline_ms == prompt.created_at_ms + 60_000
    assert prompt.text == CASES[2]["text"]


def test_traceparent_travels_as_a_header(
    kafka_config: dict[str, Any], stack: StackAddresses, topics: TopicNames
) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with TtsProducer(_settings(stack, topics, lane="bulk")) as tts:
        tts.submit("Traced.", voice="preset:en-us", traceparent=traceparent)
    [msg] = _read(kafka_config, topics.bulk, 1)
    assert ("traceparent", traceparent.encode()) in msg.headers()


def test_delivery_failure_is_raised_at_flush_naming_the_request(
    kafka_config: dict[str, Any], stack: StackAddresses, make_topic: Callable[..., str]
) -> None:
    small = TopicNames(requests=make_topic("small", 1, {"max.message.bytes": "1024"}))
    with TtsProducer(_settings(stack, small, compression_type="none")) as tts:
        fine = tts.submit("Short.", voice="preset:en-us")
        tts.flush(30)  # on its own: in one batch with the big one, both would be refused
        too_big = tts.submit("A long sentence. " * 250, voice="preset:en-us")
        with pytest.raises(DeliveryFailed) as caught:
            tts.flush(30)
    assert caught.value.request_ids == [too_big]
    assert caught.value.failures[0].code == "MSG_SIZE_TOO_LARGE"
    [msg] = _read(kafka_config, small.requests, 1)
    assert request_codec().decode(msg.value()).request_id == fine


# ---------------------------------------------------------------------------------------- results


def _result(request_id: str) -> bytes:
    return result_codec().encode(
        SynthesisResult(request_id, ResultStatus.SUCCEEDED, "test", "1", Timings(1, 2, 3), completed_at_ms=1)
    )


def _publish(kafka_config: dict[str, Any], topic: str, committed: list[str], aborted: list[str]) -> None:
    producer = Producer({**kafka_config, "transactional.id": unique_name("results-tx")})
    producer.init_transactions(30)
    for ids, commit in ((committed[:1], True), (aborted, False), (committed[1:], True)):
        producer.begin_transaction()
        for request_id in ids:
            producer.produce(topic, _result(request_id), request_id.encode())
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)


def test_subscriber_sees_committed_results_only(
    kafka_config: dict[str, Any], stack: StackAddresses, topics: TopicNames
) -> None:
    _publish(kafka_config, topics.results, committed=["a", "c"], aborted=["b"])
    settings = _settings(stack, topics)
    with ResultSubscriber(settings, start=StartAt.BEGINNING) as results:
        found = results.wait_for(["a", "c"], timeout_s=30)
        assert set(found) == {"a", "c"}
        with pytest.raises(ResultTimeout) as caught:
            results.wait_for(["b"], timeout_s=2)
    assert caught.value.missing == frozenset({"b"})


def test_subscriber_starting_now_misses_nothing_published_after(
    kafka_config: dict[str, Any], stack: StackAddresses, topics: TopicNames
) -> None:
    _publish(kafka_config, topics.results, committed=["old"], aborted=[])
    settings = _settings(stack, topics)
    with ResultSubscriber(settings) as results:  # from now on
        _publish(kafka_config, topics.results, committed=["new-1", "new-2"], aborted=[])
        seen = [results.poll(10.0), results.poll(10.0)]
        assert results.poll(1.0) is None
    assert sorted(r.request_id for r in seen if r is not None) == ["new-1", "new-2"]


def test_subscriber_from_a_time(
    kafka_config: dict[str, Any], stack: StackAddresses, topics: TopicNames
) -> None:
    _publish(kafka_config, topics.results, committed=["before"], aborted=[])
    time.sleep(1.0)
    since = int(time.time() * 1000)
    _publish(kafka_config, topics.results, committed=["after"], aborted=[])
    with ResultSubscriber(_settings(stack, topics), start=since) as results:
        first = results.poll(10.0)
        assert first is not None
        assert first.request_id == "after"
        assert results.poll(1.0) is None
