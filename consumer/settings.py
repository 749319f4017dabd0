"""Worker settings: `TTS_*` environment variables, read once at start-up and passed down.

Every field is documented in docs/configuration.md; the Helm chart sets them from its values.
Secrets are `SecretStr` (never in a repr or a log line); units are in the names.
"""

from __future__ import annotations

import enum
import os
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.topics import TopicNames
from schemas.transport import KafkaConnection
from schemas.validation import RequestLimits


class Guarantee(enum.StrEnum):
    EXACTLY_ONCE = "exactly_once"
    AT_LEAST_ONCE = "at_least_once"


class GroupProtocol(enum.StrEnum):
    CONSUMER = "consumer"  # KIP-848: the broker assigns, incrementally (Kafka 4)
    CLASSIC = "classic"  # client-side cooperative-sticky assignment (older brokers)


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
    kafka: KafkaConnection = Field(
        default_factory=KafkaConnection,
        description="Brokers and security: TTS_KAFKA_BOOTSTRAP_SERVERS, TTS_KAFKA_SECURITY_PROTOCOL, "
        "TTS_KAFKA_SASL_MECHANISM, TTS_KAFKA_SASL_USERNAME, TTS_KAFKA_SASL_PASSWORD, "
        "TTS_KAFKA_SSL_CA_LOCATION, "
        "TTS_KAFKA_SSL_CERTIFICATE_LOCATION, TTS_KAFKA_SSL_KEY_LOCATION, TTS_KAFKA_SSL_KEY_PASSWORD.",
    )
    topics: TopicNames = Field(
        default_factory=TopicNames,
        description="Topic names: TTS_TOPICS_REQUESTS, TTS_TOPICS_BULK, TTS_TOPICS_RESULTS, TTS_TOPICS_DLQ.",
    )
    group_id: str = Field(
        default="tts-workers", description="Consumer group of the workers (KEDA watches its lag)."
    )
    instance_id: str = Field(
        default_factory=_default_instance_id,
        description="Static group member id and transactional-id suffix; defaults to POD_NAME, "
        "else the host name.",
    )
    static_membership: bool = Field(
        default=True,
        description="Join as a static member (group.instance.id = instance id): a restarted pod reclaims its "
        "partitions without a rebalance, but a removed pod's stay idle for the session timeout.",
    )
    guarantee: Guarantee = Field(
        default=Guarantee.EXACTLY_ONCE,
        description="exactly_once: results and offsets in one transaction; "
        "at_least_once: cheaper, may repeat.",
    )
    group_protocol: GroupProtocol = Field(
        default=GroupProtocol.CONSUMER,
        description="consumer: the broker assigns partitions (KIP-848, incremental, per-lane balance with "
        "the range assignor); classic: cooperative-sticky on the client, for brokers before 4.0.",
    )
    group_remote_assignor: str = Field(
        default="range",
        description="Broker-side assignor under the consumer protocol; range balances each lane on its own.",
    )
    session_timeout_ms: int = Field(
        default=45_000,
        ge=1_000,
        description="How long the group waits for a silent member (classic protocol only; under the "
        "consumer protocol the broker's group.consumer.session.timeout.ms decides).",
    )
    max_poll_interval_ms: int = Field(
        default=300_000, ge=10_000, description="librdkafka's poll watchdog; never measures model time here."
    )
    transaction_timeout_ms: int = Field(
        default=60_000,
        ge=1_000,
        description="Broker aborts a transaction left open this long (a dead worker's).",
    )
    durability_check: Literal["enforce", "warn", "off"] = Field(
        default="enforce",
        description="At start-up, read the lanes' replication factor, min.insync.replicas and unclean "
        "leader election and the brokers' transaction.max.timeout.ms (schemas/durability.py): enforce "
        "exits 2 on a setting that loses acknowledged records, warn logs it, off skips the check.",
    )
    schema_registry_url: str | None = Field(
        default=None,
        description="Confluent-compatible registry; set to publish results in Confluent framing.",
    )
    schema_registry_username: str | None = Field(default=None, description="Registry basic-auth user.")
    schema_registry_password: SecretStr | None = Field(
        default=None, description="Registry basic-auth password."
    )

    # ---- Redis: result cache and single-flight leases
    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6390/0"),
        description="Redis URL (rediss:// for TLS); treated as a secret.",
    )
    redis_password: SecretStr | None = Field(default=None, description="Redis password, if not in the URL.")
    redis_sentinels: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated host:port of Redis Sentinels: the master is found (and found again "
        "after a failover) through them; TTS_REDIS_URL still gives TLS, user, password and database.",
    )
    redis_sentinel_master: str = Field(
        default="mymaster", description="The master's name in the sentinels' configuration."
    )
    redis_sentinel_password: SecretStr | None = Field(
        default=None, description="Password of the sentinels themselves, when they require one."
    )
    redis_cluster_nodes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated host:port of some Redis Cluster nodes (the slot map is learnt from "
        "them); TTS_REDIS_URL still gives TLS, user and password. Not with TTS_REDIS_SENTINELS.",
    )
    cache_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=60, description="How long a finished result is served from the cache."
    )
    lease_ttl_ms: int = Field(
        default=30_000,
        ge=1_000,
        description="Single-flight lease lifetime; renewed every third of it while working.",
    )
    result_index_ttl_s: int = Field(
        default=24 * 3600,
        ge=0,
        description="Keep each result findable by request id this long (~0.5 kB each); 0: off.",
    )
    cache_failure_policy: CacheFailurePolicy = Field(
        default=CacheFailurePolicy.FAIL_OPEN,
        description="Redis down: fail_open synthesises anyway (counted, logged); "
        "wait pauses until it is back.",
    )

    # ---- S3-compatible object storage
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint; unset means AWS S3 for the region."
    )
    s3_region: str = Field(default="us-east-1", description="S3 region (signing).")
    s3_access_key_id: SecretStr | None = Field(
        default=None, description="S3 access key; unset uses the default chain (pod identity, env, files)."
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None, description="S3 secret key (with the access key)."
    )
    s3_audio_bucket: str = Field(default="tts-audio", description="Bucket for produced audio.")
    s3_audio_prefix: str = Field(
        default="audio/", description="Key prefix for produced audio (keys end in the sha256)."
    )
    s3_voices_bucket: str = Field(default="tts-voices", description="Bucket of the voice registry.")
    s3_voices_prefix: str = Field(
        default="", description="Key prefix of the voice registry inside its bucket."
    )
    voice_cache_ttl_s: float = Field(
        default=30.0,
        ge=0,
        description="How long a worker trusts an alias, a voice record or a prompt URI it resolved "
        "(re-registrations take effect after this).",
    )
    presign_expiry_s: int = Field(
        default=0,
        ge=0,
        le=7 * 24 * 3600,
        description="Add presigned https URLs valid this long to results; 0: none.",
    )

    # ---- what requests may reference
    prompt_audio_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated bucket/prefix/ entries prompt-audio URIs must fall in; "
        "empty: none allowed.",
    )
    reply_topic_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated topics a request may name as its reply topic."
    )
    max_text_chars: int = Field(
        default=5000, ge=1, le=100_000, description="Longest text accepted (after normalisation)."
    )
    max_prompt_audio_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="Largest prompt-audio object fetched."
    )
    max_prompt_audio_seconds: float = Field(default=30.0, gt=0, description="Longest prompt audio accepted.")

    # ---- engine
    engine: str = Field(
        default="espeak", description="Speech engine: espeak, cosyvoice, or null (benchmarks only)."
    )
    model_dir: Path | None = Field(
        default=None, description="Model directory (cosyvoice); mounted read-only."
    )
    model_version: str | None = Field(
        default=None,
        description="Overrides the engine's model version in results and cache keys (e.g. a release tag).",
    )
    espeak_processes: int = Field(default=0, ge=0, description="eSpeak NG worker processes; 0: one per CPU.")
    null_latency_ms: int = Field(
        default=0, ge=0, description="null engine: fixed latency per batch (imitates a GPU)."
    )
    null_latency_per_item_ms: float = Field(
        default=0.0, ge=0, description="null engine: extra latency per item."
    )
    null_audio_seconds: float | None = Field(
        default=None,
        gt=0,
        description="null engine: fixed audio length; unset: about 15 characters a second.",
    )
    null_load_seconds: float = Field(
        default=0.0,
        ge=0,
        description="null engine: seconds its load takes (imitates a model load, for startup probes).",
    )
    cosyvoice_fp16: bool = Field(default=False, description="cosyvoice: half precision.")
    cosyvoice_load_jit: bool = Field(default=False, description="cosyvoice: load the TorchScript modules.")
    cosyvoice_load_trt: bool = Field(default=False, description="cosyvoice: TensorRT flow decoder.")
    cosyvoice_load_vllm: bool = Field(default=False, description="cosyvoice: vLLM for the language model.")
    cosyvoice_trt_concurrent: int = Field(
        default=1, ge=1, description="cosyvoice: TensorRT execution contexts."
    )
    cosyvoice_batching: bool = Field(
        default=True,
        description="cosyvoice: batched inference (many requests decode and vocode together); off: the "
        "official API, one request at a time. Ignored with vLLM, which batches the LLM itself.",
    )
    cosyvoice_batch_max_sequences: int = Field(
        default=32, ge=1, description="cosyvoice batching: text segments decoding at once."
    )
    cosyvoice_batch_max_tokens: int | None = Field(
        default=None,
        ge=1,
        description="cosyvoice batching: KV-cache positions the decoding batch may reserve (each "
        "sequence its prefix plus its longest allowed output); unset: 30% of the GPU memory free "
        "after loading, or 65536 on a CPU.",
    )
    cosyvoice_vocoder_batch_max: int = Field(
        default=16, ge=1, description="cosyvoice batching: sequences per flow-matching and vocoder batch."
    )
    cosyvoice_text_frontend: Literal["auto", "wetext", "ttsfrd", "basic"] = Field(
        default="auto",
        description=(
            "cosyvoice: text normalisation. wetext (WeTextProcessing's FSTs), ttsfrd (needs "
            "TTS_COSYVOICE_TTSFRD_RESOURCE_DIR), basic (CosyVoice's built-in rules only); auto "
            "picks the first available in the order ttsfrd, wetext, basic."
        ),
    )
    cosyvoice_ttsfrd_resource_dir: Path | None = Field(
        default=None, description="cosyvoice: the ttsfrd resource directory (CosyVoice-ttsfrd/resource)."
    )

    # ---- batching and flow control
    max_batch_items: int | None = Field(
        default=None, ge=1, description="Cap on tasks per engine batch; unset: the engine's."
    )
    max_batch_cost: int | None = Field(
        default=None, ge=1, description="Cap on a batch's estimated cost (characters); unset: the engine's."
    )
    batch_max_wait_ms: int = Field(
        default=2,
        ge=0,
        description="How long a partial batch waits for company when the engine is free (a full batch "
        "goes at once; under load batches fill while the engine works).",
    )
    max_in_flight: int = Field(
        default=2000, ge=1, description="Messages taken and not yet committed before partitions are paused."
    )
    poll_batch_size: int = Field(default=500, ge=1, description="Messages taken per poll.")
    engine_max_retries: int = Field(
        default=3, ge=0, description="Retries of a transient engine failure per task."
    )
    engine_retry_backoff_ms: int = Field(
        default=500,
        ge=0,
        description="First retry back-off (doubles each time up to 30 s; each wait is jittered between half "
        "and all of it).",
    )
    commit_interval_ms: int = Field(
        default=20,
        ge=1,
        description="Shortest time between commits (each is a transaction under exactly_once).",
    )

    # ---- audio post-processing
    loudness_lufs: float = Field(
        default=-16.0, ge=-40.0, le=-5.0, description="Integrated loudness target (BS.1770)."
    )
    true_peak_dbtp: float = Field(
        default=-1.0, ge=-12.0, le=0.0, description="True-peak ceiling of the limiter."
    )
    device: str = Field(
        default="auto", description="torch device for post-processing: auto, cpu, cuda, cuda:N."
    )

    # ---- lifecycle, health, crash-loop protection
    drain_timeout_s: float = Field(
        default=20.0,
        gt=0,
        description="On SIGTERM or revocation, how long in-flight work may take to finish.",
    )
    http_host: str = Field(
        default="127.0.0.1", description="Health/metrics bind address (the chart sets 0.0.0.0)."
    )
    http_port: int = Field(
        default=8080, ge=0, le=65535, description="Health and metrics port; 0: no HTTP server."
    )
    tracing_exporter: str = Field(
        default="none",
        description="Export a span per request: none, otlp (OTEL_EXPORTER_OTLP_* variables; "
        "tts-stream[otel]) or console.",
    )
    liveness_stall_s: float = Field(
        default=60.0, gt=0, description="/livez fails after the loop stalls this long."
    )
    # Its own bound, not liveness_stall_s: a poll-loop iteration takes milliseconds, an engine
    # batch on a slow GPU can take minutes, and a restart in the middle of it only reloads the model.
    liveness_pipeline_stall_s: float = Field(
        default=300.0,
        gt=0,
        description="/livez fails when the pipeline holds work and no stage has moved any of it on "
        "for this long (a hung engine or CUDA call); keep it above the slowest engine batch.",
    )
    poison_max_attempts: int = Field(
        default=3, ge=1, description="A message in the engine during this many crashes goes to the DLQ."
    )

    @field_validator(
        "prompt_audio_allowlist",
        "reply_topic_allowlist",
        "redis_sentinels",
        "redis_cluster_nodes",
        mode="before",
    )
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
        if self.redis_sentinels and self.redis_cluster_nodes:
            raise ValueError("set redis_sentinels or redis_cluster_nodes, not both")
        for name, entries in (
            ("redis_sentinels", self.redis_sentinels),
            ("redis_cluster_nodes", self.redis_cluster_nodes),
        ):
            for entry in entries:
                host, sep, port = entry.rpartition(":")
                if not sep or not host or not port.isdigit():
                    raise ValueError(f"{name} entry {entry!r} must be host:port")
        return self

    @property
    def request_limits(self) -> RequestLimits:
        return RequestLimits(max_text_chars=self.max_text_chars)

    @property
    def transactional_id(self) -> str:
        """Stable per instance so a restarted pod fences its previous incarnation."""
        return f"{self.group_id}.{self.instance_id}"
