"""Producer-side settings: from `TTS_*` environment variables for the CLI, or keyword arguments
for library users (who then need no environment at all)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.codec import Framing
from schemas.topics import TopicNames
from schemas.transport import KafkaConnection


class ProducerSettings(BaseSettings):
    """Environment: TTS_KAFKA_BOOTSTRAP_SERVERS, TTS_KAFKA_SASL_PASSWORD, TTS_TOPICS_RESULTS, ..."""

    model_config = SettingsConfigDict(
        env_prefix="TTS_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        frozen=True,
        extra="ignore",
    )

    kafka: KafkaConnection = Field(default_factory=KafkaConnection)
    topics: TopicNames = Field(default_factory=TopicNames)
    framing: Framing = Framing.SINGLE_OBJECT
    schema_registry_url: str | None = None
    schema_registry_username: str | None = None
    schema_registry_password: SecretStr | None = None
    # Small batches for interactive callers; backfill raises it for throughput.
    linger_ms: int = Field(default=5, ge=0, le=10_000)
    delivery_timeout_ms: int = Field(default=120_000, ge=1_000)
