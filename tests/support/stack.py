"""Where the services are, and a loud failure when one is missing.

The addresses come from the same `TTS_*` variables the product reads, defaulting to the local
stack (`make up`), so the suites also run against an existing cluster: export
TTS_KAFKA_BOOTSTRAP_SERVERS, TTS_REDIS_URL, TTS_S3_ENDPOINT_URL, ... and run pytest.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from producer.settings import ProducerSettings
from schemas.transport import KafkaConnection

ROOT = Path(__file__).resolve().parents[2]
HOW_TO_START = "start the local stack with `make up` (or point the TTS_* variables at your services)"


@dataclass(frozen=True)
class StackAddresses:
    kafka_bootstrap: str
    redis_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    s3_region: str
    audio_bucket: str
    voices_bucket: str
    registry_url: str

    @classmethod
    def from_env(cls) -> StackAddresses:
        env = os.environ.get
        return cls(
            kafka_bootstrap=env("TTS_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            redis_url=env("TTS_REDIS_URL", "redis://127.0.0.1:6390/0"),
            s3_endpoint=env("TTS_S3_ENDPOINT_URL", "http://127.0.0.1:7070"),
            s3_access_key=env("TTS_S3_ACCESS_KEY_ID", "ttsstream-local"),
            s3_secret_key=env("TTS_S3_SECRET_ACCESS_KEY", "ttsstream-local-secret"),
            s3_region=env("TTS_S3_REGION", "us-east-1"),
            audio_bucket=env("TTS_S3_AUDIO_BUCKET", "tts-audio"),
            voices_bucket=env("TTS_S3_VOICES_BUCKET", "tts-voices"),
            registry_url=env("TTS_SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v7"),
        )

    @property
    def kafka(self) -> KafkaConnection:
        """How clients reach the brokers: the same TTS_KAFKA_* variables the product reads
        (security protocol, SASL, TLS files), so the suites run against a secured cluster too."""
        return ProducerSettings().kafka.model_copy(update={"bootstrap_servers": self.kafka_bootstrap})

    def kafka_values(self) -> dict[str, object]:
        """`kafka=` for ProducerSettings.from_values."""
        return self.kafka.model_dump(exclude_defaults=True) | {"bootstrap_servers": self.kafka_bootstrap}

    @property
    def is_local(self) -> bool:
        return self.kafka_bootstrap.startswith(("127.0.0.1:", "localhost:"))

    def worker_env(self) -> dict[str, str]:
        """Environment for a worker or CLI process pointed at this stack."""
        return {
            "TTS_KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "TTS_REDIS_URL": self.redis_url,
            "TTS_S3_ENDPOINT_URL": self.s3_endpoint,
            "TTS_S3_ACCESS_KEY_ID": self.s3_access_key,
            "TTS_S3_SECRET_ACCESS_KEY": self.s3_secret_key,
            "TTS_S3_REGION": self.s3_region,
            "TTS_S3_AUDIO_BUCKET": self.audio_bucket,
            "TTS_S3_VOICES_BUCKET": self.voices_bucket,
        }


def unique_name(prefix: str) -> str:
    """Topic and group names are unique per test so tests never see each other's data."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def start_local_registry() -> None:
    """The registry is started only for the tests that need it (it costs ~10 s and 500 MB)."""
    subprocess.run([str(ROOT / "scripts" / "stack.sh"), "up", "--registry"], check=True, timeout=600)
