"""Fixtures of the chaos suite: a private stack (never the shared one) and its clients."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.private_stack import PrivateStack
from tests.support.kafka_io import Lanes, create_lanes, delete_lanes

REPORT_DIR_ENV = "TTS_CHAOS_REPORT_DIR"
# librdkafka logs every refused reconnect while a broker is down on purpose: thousands of lines.
_CLIENT_LOGGERS = ("librdkafka", "librdkafka.collector", "tts_stream.librdkafka")


@pytest.fixture(autouse=True)
def quiet_kafka_clients() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _CLIENT_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


@pytest.fixture(scope="session")
def private_stack() -> Iterator[PrivateStack]:
    """Redis, S3 and Kafka of our own on free ports; stopped and deleted afterwards."""
    data_dir = Path(tempfile.mkdtemp(prefix="tts-chaos-stack-"))
    stack = PrivateStack.create(data_dir)
    try:
        stack.up()
    except Exception as exc:
        stack.down()
        stack.remove()
        pytest.fail(f"could not start the private stack for the chaos tests: {exc}")
    yield stack
    try:
        stack.down()
    finally:
        stack.remove()


@pytest.fixture
def healthy_stack(private_stack: PrivateStack) -> PrivateStack:
    """Every service runs at the start of a test (a failed test may have left one stopped)."""
    for service in ("redis", "s3", "kafka"):
        if not private_stack.running(service):
            private_stack.start(service)
    return private_stack


@pytest.fixture
def private_kafka_config(healthy_stack: PrivateStack) -> dict[str, Any]:
    return {
        "bootstrap.servers": healthy_stack.addresses.kafka_bootstrap,
        "logger": logging.getLogger("librdkafka"),
    }


@pytest.fixture
def private_lanes(
    private_kafka_config: dict[str, Any], healthy_stack: PrivateStack
) -> Iterator[Callable[..., Lanes]]:
    created: list[Lanes] = []
    # On a three-broker stack the lanes get what production gets: RF 3, min ISR 2.
    replicas = 3 if healthy_stack.brokers >= 3 else 1

    def make(partitions: int = 6) -> Lanes:
        lanes = create_lanes(
            private_kafka_config, partitions, replication_factor=replicas, min_insync=min(2, replicas)
        )
        created.append(lanes)
        return lanes

    yield make
    for lanes in created:
        try:
            delete_lanes(private_kafka_config, lanes)
        except Exception as exc:  # the broker may be the thing a failed test left down
            logging.getLogger(__name__).warning("could not delete chaos topics: %s", exc)


@pytest.fixture
def private_s3(healthy_stack: PrivateStack) -> Any:
    import boto3
    from botocore.config import Config

    addresses = healthy_stack.addresses
    return boto3.client(
        "s3",
        endpoint_url=addresses.s3_endpoint,
        aws_access_key_id=addresses.s3_access_key,
        aws_secret_access_key=addresses.s3_secret_key,
        region_name=addresses.s3_region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


@pytest.fixture
def report_dir(tmp_path: Path) -> Path:
    """Where scenario reports (JSON) go: $TTS_CHAOS_REPORT_DIR, or the test's tmp folder."""
    chosen = os.environ.get(REPORT_DIR_ENV)
    path = Path(chosen) if chosen else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path
