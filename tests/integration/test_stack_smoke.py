"""The local stack is made of real servers: each one does what production relies on."""

from __future__ import annotations

import io
import os
import time
from typing import Any

import pytest
from confluent_kafka import Producer

from tests.support.kafka_io import subscriber
from tests.support.stack import StackAddresses, unique_name


def _read_all(
    kafka_config: dict[str, Any], topic: str, *, isolation: str, expected_at_least: int
) -> list[bytes]:
    consumer = subscriber(kafka_config, topic, name="smoke", isolation=isolation)
    values: list[bytes] = []
    deadline = time.monotonic() + 20
    idle_polls = 0
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                idle_polls += 1
                if len(values) >= expected_at_least and idle_polls >= 4:
                    break
                continue
            assert msg.error() is None, msg.error()
            values.append(msg.value())
            idle_polls = 0
    finally:
        consumer.close()
    return values


def test_kafka_transactions_commit_and_abort(kafka_config: dict[str, Any], make_topic: Any) -> None:
    topic = make_topic("smoke-txn")
    producer = Producer({**kafka_config, "transactional.id": unique_name("smoke-tx")})
    producer.init_transactions(30)

    producer.begin_transaction()
    producer.produce(topic, b"committed-1")
    producer.produce(topic, b"committed-2")
    producer.commit_transaction(30)

    producer.begin_transaction()
    producer.produce(topic, b"aborted")
    producer.flush(10)
    producer.abort_transaction(30)

    committed = _read_all(kafka_config, topic, isolation="read_committed", expected_at_least=2)
    everything = _read_all(kafka_config, topic, isolation="read_uncommitted", expected_at_least=3)
    assert committed == [b"committed-1", b"committed-2"]
    # The aborted record is physically in the log: only read_committed hides it.
    assert b"aborted" in everything


def test_redis_set_get_with_ttl(redis_client: Any) -> None:
    key = unique_name("smoke")
    redis_client.set(key, b"value", px=300)
    assert redis_client.get(key) == b"value"
    assert 0 < redis_client.pttl(key) <= 300
    time.sleep(0.5)
    assert redis_client.get(key) is None


def test_s3_put_get_head_delete_and_multipart(s3_client: Any, stack: StackAddresses) -> None:
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import ClientError

    bucket = stack.audio_bucket
    key = f"smoke/{unique_name('obj')}"
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"hello", ContentType="text/plain", Metadata={"k": "v"})
    head = s3_client.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == 5
    assert head["Metadata"] == {"k": "v"}
    assert s3_client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"hello"
    s3_client.delete_object(Bucket=bucket, Key=key)
    with pytest.raises(ClientError) as missing:
        s3_client.head_object(Bucket=bucket, Key=key)
    assert missing.value.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound")

    # 10 MB in 5 MB parts: the multipart API, not a single PUT.
    payload = os.urandom(10 * 1024 * 1024)
    big_key = f"smoke/{unique_name('multipart')}"
    config = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    s3_client.upload_fileobj(io.BytesIO(payload), bucket, big_key, Config=config)
    head = s3_client.head_object(Bucket=bucket, Key=big_key)
    assert head["ContentLength"] == len(payload)
    assert head["ETag"].strip('"').endswith("-2"), "expected a two-part multipart ETag"
    assert s3_client.get_object(Bucket=bucket, Key=big_key)["Body"].read() == payload
    s3_client.delete_object(Bucket=bucket, Key=big_key)


@pytest.mark.registry
def test_registry_register_lookup_and_compatibility(registry_url: str) -> None:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    client = SchemaRegistryClient({"url": registry_url})
    subject = f"{unique_name('smoke')}-value"
    v1 = Schema('{"type":"record","name":"S","fields":[{"name":"a","type":"string"}]}', "AVRO")
    schema_id = client.register_schema(subject, v1)
    assert client.get_schema(schema_id).schema_str is not None
    assert client.lookup_schema(subject, v1).schema_id == schema_id
    client.set_compatibility(subject, "FULL_TRANSITIVE")
    with_default = Schema(
        '{"type":"record","name":"S","fields":[{"name":"a","type":"string"},'
        '{"name":"b","type":"int","default":0}]}',
        "AVRO",
    )
    without_default = Schema(
        '{"type":"record","name":"S","fields":[{"name":"a","type":"string"},{"name":"b","type":"int"}]}',
        "AVRO",
    )
    assert client.test_compatibility(subject, with_default) is True
    assert client.test_compatibility(subject, without_default) is False
    client.delete_subject(subject, permanent=False)
