"""Worker settings: `TTS_*` environment variables, read once at start-up and passed down.

Every field is documented in docs/configuration.md; the Helm chart sets them from its values.
Secrets are `SecretStr` (never in a repr or a log line); units are in the names.
"""

from __future__ import annotations

import enum
import os
import socket
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import TopicNames
from schemas.transport import KafkaConnection
from schemas.validation import RequestLimits


class Guarantee(enum.StrEnum):
    EXACTLY_ONCE = "exactly_once"
    AT_LEAST_ONCE = "at_least_once"


class CacheFailurePolicy(enum.StrEnum):
    FAIL_OPEN = "fail_open"  # Redis down: synthesise anyway (duplicates possible), count and log it
    WAIT = "wait"  # Redis down: pause and retry until it is back


def _default_instance_id() -> str:
    # In Kubernetes the pod name (stable for a StatefulSet, unique for a Deployment).
    return os.environ.get("POD_NAME") or socket.gethostname()


def _split_list(value: object) -> object:
    """Lists arrive as comma-separated strings from the environment (and from Helm)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TTS_", env_nested_delimiter="_", env_nested_max_split=1, frozen=True, extra="ignore"
    )

    # ---- Kafka
    kafka: KafkaConnection = Field(default_factory=KafkaConnection)
    topics: TopicNames = Field(default_factory=TopicNames)
    group_id: str = "tts-workers"
    instance_id: str = Field(default_factory=_default_instance_id)
    guarantee: Guarantee = Guarantee.EXACTLY_ONCE
    session_timeout_ms: int = Field(default=45_000, ge=1_000)
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    transaction_timeout_ms: int = Field(default=60_000, ge=1_000)
    schema_registry_url: str | None = None
    schema_registry_username: str | None = None
    schema_registry_password: SecretStr | None = None

    # ---- Redis: result cache and single-flight leases
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6390/0")
    redis_password: SecretStr | None = None
    cache_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    lease_ttl_ms: int = Field(default=30_000, ge=1_000)
    cache_failure_policy: CacheFailurePolicy = CacheFailurePolicy.FAIL_OPEN

    # ---- S3-compatible object storage
    s3_endpoint_url: str | None = None  # None: AWS, from the region
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None  # None: the default chain (pod identity, env, files)
    s3_secret_access_key: SecretStr | None = None
    s3_audio_bucket: str = "tts-audio"
    s3_audio_prefix: str = "audio/"
    s3_voices_bucket: str = "tts-voices"
    presign_expiry_s: int = Field(default=0, ge=0, le=7 * 24 * 3600)  # 0: no presigned URLs

    # ---- what requests may reference
    prompt_audio_allowlist: list[str] = Field(default_factory=list)  # "bucket/prefix/" entries
    reply_topic_allowlist: list[str] = Field(default_factory=list)
    max_text_chars: int = Field(default=5000, ge=1, le=100_000)
    max_prompt_audio_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_prompt_audio_seconds: float = Field(default=30.0, gt=0)

    # ---- engine
    engine: str = "espeak"
    model_dir: Path | None = None
    model_version: str | None = None  # overrides what the engine reports (e.g. a release tag)
    espeak_processes: int = Field(default=0, ge=0)  # 0: one per CPU
    null_latency_ms: int = Field(default=0, ge=0)  # the null engine's fixed per-batch latency
    null_latency_per_item_ms: float = Field(default=0.0, ge=0)
    cosyvoice_fp16: bool = False
    cosyvoice_load_jit: bool = False
    cosyvoice_load_trt: bool = False
    cosyvoice_load_vllm: bool = False
    cosyvoice_trt_concurrent: int = Field(default=1, ge=1)

    # ---- batching and flow control
    max_batch_items: int | None = Field(default=None, ge=1)  # None: the engine's own limit
    max_batch_cost: int | None = Field(default=None, ge=1)
    batch_max_wait_ms: int = Field(default=20, ge=0)
    max_in_flight: int = Field(default=2000, ge=1)  # messages taken and not yet committed
    poll_batch_size: int = Field(default=500, ge=1)
    engine_max_retries: int = Field(default=3, ge=0)
    engine_retry_backoff_ms: int = Field(default=500, ge=0)
    commit_interval_ms: int = Field(default=100, ge=1)

    # ---- audio post-processing
    loudness_lufs: float = Field(default=-16.0, ge=-40.0, le=-5.0)
    true_peak_dbtp: float = Field(default=-1.0, ge=-12.0, le=0.0)
    device: str = "auto"  # torch device for post-processing: auto, cpu, cuda, cuda:1

    # ---- lifecycle, health, crash-loop protection
    drain_timeout_s: float = Field(default=20.0, gt=0)
    http_host: str = "127.0.0.1"  # the chart sets 0.0.0.0 so kubelet probes reach it
    http_port: int = Field(default=8080, ge=0, le=65535)  # 0: no HTTP server
    liveness_stall_s: float = Field(default=60.0, gt=0)
    poison_max_attempts: int = Field(default=3, ge=1)

    @field_validator("prompt_audio_allowlist", "reply_topic_allowlist", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return _split_list(value)

    @model_validator(mode="after")
    def _check(self) -> WorkerSettings:
        for entry in self.prompt_audio_allowlist:
            if "/" not in entry or entry.startswith(("/", "s3:", "http")):
                raise ValueError(
                    f"prompt_audio_allowlist entry {entry!r} must look like 'bucket/prefix/' (no scheme)"
                )
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("set both s3_access_key_id and s3_secret_access_key, or neither")
        return self

    @property
    def request_limits(self) -> RequestLimits:
        return RequestLimits(max_text_chars=self.max_text_chars)

    @property
    def transactional_id(self) -> str:
        """Stable per instance so a restarted pod fences its previous incarnation."""
        return f"{self.group_id}.{self.instance_id}"
