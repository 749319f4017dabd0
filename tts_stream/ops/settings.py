"""Where the operator commands find the services: the same `TTS_*` settings the worker reads.

An operator points the commands at a deployment by exporting the worker's environment (or
running them in a worker pod); topic names and the consumer group therefore always match what
the workers use.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from consumer.settings import WorkerSettings

if TYPE_CHECKING:
    import redis
    from types_boto3_s3 import S3Client

LIBRDKAFKA_LOGGER = "tts_stream.ops.librdkafka"


def load_settings(bootstrap_servers: str | None = None) -> WorkerSettings:
    settings = WorkerSettings()
    if bootstrap_servers:
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers})
        settings = settings.model_copy(update={"kafka": kafka})
    return settings


def ops_settings(bootstrap_servers: str | None = None) -> WorkerSettings:
    """`load_settings` with a malformed TTS_* variable reported as a bad argument."""
    from tts_stream.ops.errors import BadArgument

    try:
        return load_settings(bootstrap_servers)
    except ValueError as exc:  # pydantic's ValidationError
        raise BadArgument(f"invalid TTS_* configuration: {exc}") from exc


def kafka_config(settings: WorkerSettings) -> dict[str, Any]:
    """librdkafka properties shared by every client the operator commands make."""
    return {**settings.kafka.librdkafka_config(), "logger": logging.getLogger(LIBRDKAFKA_LOGGER)}


def redis_client(settings: WorkerSettings, timeout_s: float = 5.0) -> redis.Redis | redis.RedisCluster:
    """Redis as the workers reach it: one server, a Sentinel master or a Redis Cluster."""
    from consumer.adapters.redis_connect import redis_topology

    return redis_topology(settings, socket_timeout=timeout_s, socket_connect_timeout=timeout_s).client()


def s3_client(settings: WorkerSettings, timeout_s: float = 10.0) -> S3Client:
    import boto3
    from botocore.config import Config

    access = settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else None
    secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
    client: S3Client = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
        ),
    )
    return client
