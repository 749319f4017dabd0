"""Fixtures for suites that talk to real services. Unit tests request none of them.

A test that needs a service and cannot reach it fails with a message saying how to start it;
nothing here ever skips.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import HOW_TO_START, StackAddresses, start_local_registry, unique_name


@pytest.fixture(scope="session")
def stack() -> StackAddresses:
    return StackAddresses.from_env()


@pytest.fixture(scope="session")
def kafka_config(stack: StackAddresses) -> dict[str, Any]:
    from confluent_kafka.admin import AdminClient

    config: dict[str, Any] = {**stack.kafka.librdkafka_config(), "logger": logging.getLogger("librdkafka")}
    try:
        metadata = AdminClient(config).list_topics(timeout=10)
    except Exception as exc:
        pytest.fail(f"Kafka at {stack.kafka_bootstrap} is not reachable ({exc}): {HOW_TO_START}")
    if not metadata.brokers:
        pytest.fail(f"Kafka at {stack.kafka_bootstrap} reports no brokers: {HOW_TO_START}")
    return config


@pytest.fixture
def make_topic(kafka_config: dict[str, Any]) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics for one test; they are deleted afterwards."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(kafka_config)
    created: list[str] = []

    def create(prefix: str = "t", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = unique_name(prefix)
        futures = admin.create_topics(
            [NewTopic(name, partitions, 1, config=config or {})], operation_timeout=30
        )
        futures[name].result()
        created.append(name)
        return name

    yield create
    if created:
        for future in admin.delete_topics(created, operation_timeout=30).values():
            try:
                future.result()
            except Exception as exc:  # a leftover topic is harmless; say so and carry on
                logging.getLogger(__name__).warning("could not delete test topic: %s", exc)


@pytest.fixture(scope="session")
def redis_client(stack: StackAddresses) -> Any:
    import redis

    client = redis.Redis.from_url(stack.redis_url, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {stack.redis_url} is not reachable ({exc}): {HOW_TO_START}")
    return client


@pytest.fixture(scope="session")
def s3_client(stack: StackAddresses) -> Any:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint,
        aws_access_key_id=stack.s3_access_key,
        aws_secret_access_key=stack.s3_secret_key,
        region_name=stack.s3_region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )
    try:
        client.head_bucket(Bucket=stack.audio_bucket)
    except (BotoCoreError, ClientError) as exc:
        pytest.fail(
            f"S3 at {stack.s3_endpoint} (bucket {stack.audio_bucket}) is not usable ({exc}): {HOW_TO_START}"
        )
    return client


@pytest.fixture(scope="session")
def registry_url(stack: StackAddresses) -> str:
    """A Confluent-compatible registry; the local one is started on first use."""
    import urllib.error
    import urllib.request

    def reachable() -> bool:
        try:
            with urllib.request.urlopen(f"{stack.registry_url}/subjects", timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    if not reachable() and stack.is_local:
        start_local_registry()
    if not reachable():
        pytest.fail(
            f"schema registry at {stack.registry_url} is not reachable: start it with `make up REGISTRY=1`"
        )
    return stack.registry_url


@pytest.fixture(scope="session")
def object_store(stack: StackAddresses, s3_client: Any) -> Any:
    """Our own ObjectStore adapter on the stack's S3 server (s3_client checked it is reachable)."""
    from consumer.adapters.s3 import S3ObjectStore

    return S3ObjectStore(
        endpoint_url=stack.s3_endpoint,
        region=stack.s3_region,
        access_key_id=stack.s3_access_key,
        secret_access_key=stack.s3_secret_key,
    )


@pytest.fixture(scope="session")
def cosyvoice3_tiny() -> Path:
    """A tiny random-weight CosyVoice 3 model that the real library loads (made once, cached)."""
    from tests.support.cosyvoice_models import tiny_model

    return tiny_model("cosyvoice3")


@pytest.fixture(scope="session")
def cosyvoice2_tiny() -> Path:
    from tests.support.cosyvoice_models import tiny_model

    return tiny_model("cosyvoice2")


@pytest.fixture(scope="session")
def sentinel_redis() -> Iterator[Any]:
    """A private Redis master, replica and three sentinels (scripts/stack.sh), for the session."""
    from tests.support.redis_topologies import RedisDeployment

    try:
        deployment = RedisDeployment.start("sentinel")
    except RuntimeError as exc:
        pytest.fail(f"could not start Redis with Sentinel: {exc}")
    yield deployment
    deployment.stop()


@pytest.fixture(scope="session")
def cluster_redis() -> Iterator[Any]:
    """A private three-master Redis Cluster, a replica each (scripts/stack.sh), for the session."""
    from tests.support.redis_topologies import RedisDeployment

    try:
        deployment = RedisDeployment.start("cluster")
    except RuntimeError as exc:
        pytest.fail(f"could not start a Redis Cluster: {exc}")
    yield deployment
    deployment.stop()


@pytest.fixture(params=["single", "sentinel", "cluster"])
def redis_topology(request: pytest.FixtureRequest, stack: StackAddresses) -> Any:
    """The three ways to deploy Redis, each as the product reaches it (RedisTopology)."""
    from consumer.adapters.redis_connect import RedisTopology

    if request.param == "single":
        return RedisTopology(url=stack.redis_url, options={"socket_timeout": 5})
    deployment = request.getfixturevalue(f"{request.param}_redis")
    return deployment.topology(socket_timeout=5)
