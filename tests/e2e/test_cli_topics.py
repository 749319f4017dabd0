"""`tts-stream topics init-group` as the Helm hook runs it: the lag KEDA reads is real from the
first message, running it again changes nothing, and a group that ever committed is untouched."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from producer.subscriber import watermarks
from tests.support.kafka_io import Lanes, committed_offsets
from tests.support.stack import ROOT, StackAddresses, unique_name


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tts_stream", "--log-format", "text", "topics", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _lag(kafka_config: dict[str, Any], group: str, topic: str, partitions: int) -> int:
    """Lag as KEDA's Kafka scaler computes it with offsetResetPolicy latest: log end minus the
    committed offset per partition, and nothing for a partition without a committed offset."""
    consumer = Consumer({**kafka_config, "group.id": unique_name("lag")})
    try:
        committed = committed_offsets(kafka_config, group, topic, partitions)
        total = 0
        for partition in range(partitions):
            _, end = watermarks(consumer, TopicPartition(topic, partition), 30)
            total += end - committed[partition] if committed.get(partition, -1) >= 0 else 0
        return total
    finally:
        consumer.close()


def test_init_group_makes_the_first_requests_count_as_lag(
    kafka_config: dict[str, Any], stack: StackAddresses, lanes: Lanes
) -> None:
    env = {**os.environ, **lanes.env(), "TTS_KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap}
    assert _lag(kafka_config, lanes.group, lanes.requests, lanes.partitions) == 0

    first = _cli(env, "init-group", "--group", lanes.group)
    assert first.returncode == 0, first.stderr
    assert f"group {lanes.group}: 6 of 6 partition(s) initialised" in first.stdout
    assert f"{lanes.bulk}[2]: committed the log end" in first.stdout

    producer = Producer(kafka_config)
    for i in range(5):
        producer.produce(lanes.requests, f"request {i}".encode(), key=str(i).encode())
    producer.flush(30)
    assert _lag(kafka_config, lanes.group, lanes.requests, lanes.partitions) == 5

    again = _cli(env, "init-group", "--group", lanes.group)
    assert again.returncode == 0, again.stderr
    assert f"group {lanes.group}: 0 of 6 partition(s) initialised" in again.stdout
    assert f"group {lanes.group} already has committed offsets: left untouched" in again.stdout
    assert _lag(kafka_config, lanes.group, lanes.requests, lanes.partitions) == 5


def test_a_group_with_any_committed_offset_is_left_untouched(
    kafka_config: dict[str, Any], stack: StackAddresses, lanes: Lanes
) -> None:
    """Partitions without an offset in a group that consumed before (added later, or never
    reached) hold real work: committing their end would skip it, so nothing is committed."""
    env = {**os.environ, **lanes.env(), "TTS_KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap}
    producer = Producer(kafka_config)
    for partition in range(lanes.partitions):
        for i in range(2):
            producer.produce(lanes.requests, f"backlog {i}".encode(), partition=partition)
            producer.produce(lanes.bulk, f"backlog {i}".encode(), partition=partition)
    producer.flush(30)
    # The group consumed only the results topic so far: one offset, on another topic.
    admin = AdminClient(kafka_config)
    admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(lanes.group, [TopicPartition(lanes.results, 0, 0)])]
    )[lanes.group].result()

    result = _cli(env, "init-group", "--group", lanes.group)
    assert result.returncode == 0, result.stderr
    assert f"group {lanes.group} already has committed offsets: left untouched" in result.stdout
    assert f"group {lanes.group}: 0 of 6 partition(s) initialised" in result.stdout
    assert f"{lanes.requests}[1]: no committed offset, but the group has others; left alone" in result.stdout
    for topic in (lanes.requests, lanes.bulk):
        committed = committed_offsets(kafka_config, lanes.group, topic, lanes.partitions)
        assert all(offset < 0 for offset in committed.values()), f"{topic}: {committed}"


def test_init_group_on_chosen_topics_and_a_missing_one(
    kafka_config: dict[str, Any], stack: StackAddresses, lanes: Lanes
) -> None:
    env = {**os.environ, "TTS_KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap}
    group = unique_name("g")
    chosen = _cli(env, "init-group", "--group", group, "--topic", lanes.results)
    assert chosen.returncode == 0, chosen.stderr
    assert f"group {group}: 3 of 3 partition(s) initialised" in chosen.stdout

    missing = _cli(env, "init-group", "--group", group, "--topic", unique_name("absent"))
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr
