"""Producer-side settings: from `TTS_*` environment variables for the CLI, or keyword arguments
for library users (who then need no environment at all)."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from schemas.codec import Framing
from schemas.topics import (
    Lane,
    TopicNames,
)
from schemas.transport import KafkaConnection
from schemas.validation import RequestLimits

# librdkafka's own log lines (connection refused, broker down) go through stdlib logging under
# this name instead of straight to stderr, so applications decide what to show.
LIBRDKAFKA_LOGGER = "tts_stream.librdkafka"


# Typed factories rather than the classes themselves: mypy (without pydantic's plugin) infers
# `default_factory=SomeModel` inconsistently from one run to the next.
def _default_kafka() -> KafkaConnection:
    return KafkaConnection()


def _default_topics() -> TopicNames:
    return TopicNames()


def _default_limits() -> RequestLimits:
    return RequestLimits()


class ProducerSettings(BaseSettings):
    """Environment: TTS_KAFKA_BOOTSTRAP_SERVERS, TTS_KAFKA_SASL_PASSWORD, TTS_TOPICS_RESULTS, ...

    Library users call `ProducerSettings.from_values(...)` (or pass keyword arguments to the
    client), which reads no environment variable at all.
    """

    model_config = SettingsConfigDict(
        env_prefix="TTS_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        frozen=True,
        extra="ignore",
    )

    kafka: KafkaConnection = Field(default_factory=_default_kafka)
    topics: TopicNames = Field(default_factory=_default_topics)
    lane: Lane = Lane.INTERACTIVE
    framing: Framing = Framing.SINGLE_OBJECT
    schema_registry_url: str | None = None
    schema_registry_username: str | None = None
    schema_registry_password: SecretStr | None = None
    # Auto-registering the writer schema is convenient in development; production registries
    # are usually locked down and the schema registered by CI, so turn it off there.
    schema_registry_auto_register: bool = True
    # The same rules the worker applies, so a request is refused before it is produced.
    limits: RequestLimits = Field(default_factory=_default_limits)
    # Small batches for interactive callers; backfill raises it for throughput.
    linger_ms: int = Field(default=5, ge=0, le=10_000)
    delivery_timeout_ms: int = Field(default=120_000, ge=1_000)
    compression_type: str = Field(default="lz4", pattern="^(none|gzip|snappy|lz4|zstd)$")

    @classmethod
    def from_values(cls, **values: Any) -> ProducerSettings:
        """Settings from keyword arguments only: the environment is not read."""
        return _ExplicitProducerSettings(**values)

    def producer_config(self) -> dict[str, Any]:
        """librdkafka properties of a request producer: idempotent, acks from every in-sync replica."""
        return {
            **self.kafka.librdkafka_config(),
            "logger": logging.getLogger(LIBRDKAFKA_LOGGER),
            "enable.idempotence": True,
            "acks": "all",
            "max.in.flight.requests.per.connection": 5,
            "linger.ms": self.linger_ms,
            "delivery.timeout.ms": self.delivery_timeout_ms,
            "compression.type": self.compression_type,
            # The Java client's default, so producers in any language put a key on one partition.
            "partitioner": "murmur2_random",
        }

    def consumer_config(self, group_id: str) -> dict[str, Any]:
        """librdkafka properties of a results consumer. read_committed: the worker publishes
        results inside transactions, and only committed ones are real."""
        return {
            **self.kafka.librdkafka_config(),
            "logger": logging.getLogger(LIBRDKAFKA_LOGGER),
            "group.id": group_id,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "latest",
        }

    def registry_config(self) -> dict[str, Any]:
        """Extra configuration for confluent-kafka's SchemaRegistryClient (besides the URL)."""
        if self.schema_registry_username is None:
            return {}
        password = self.schema_registry_password.get_secret_value() if self.schema_registry_password else ""
        return {"basic.auth.user.info": f"{self.schema_registry_username}:{password}"}


class _ExplicitProducerSettings(ProducerSettings):
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)
