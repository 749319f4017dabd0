"""How both sides reach Kafka: connection and security settings shared by producer and worker.

Secrets are `SecretStr` so they never appear in a repr, a log line or an error message; they are
revealed only when the librdkafka configuration is built.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class KafkaConnection(BaseModel):
    """Where the brokers are and how to authenticate to them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str = Field(default="127.0.0.1:9092", description="Comma-separated host:port list")
    security_protocol: SecurityProtocol = Field(
        default=SecurityProtocol.PLAINTEXT, description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    sasl_mechanism: SaslMechanism | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
    )
    sasl_username: str | None = Field(default=None, description="SASL user")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password (secret)")
    ssl_ca_location: str | None = Field(
        default=None, description="PEM file of the CA that signed the brokers"
    )
    ssl_certificate_location: str | None = Field(default=None, description="client certificate (mTLS)")
    ssl_key_location: str | None = Field(default=None, description="client key (mTLS)")
    ssl_key_password: SecretStr | None = Field(
        default=None, description="password of the client key (secret)"
    )
    ssl_endpoint_identification: bool = Field(default=True, description="verify the broker host name")
    client_id: str = Field(default="tts-stream", description="client.id the brokers log and quota by")
    extra: dict[str, str] = Field(default_factory=dict, description="raw librdkafka properties")

    @model_validator(mode="after")
    def _check_sasl(self) -> KafkaConnection:
        uses_sasl = self.security_protocol in (
            SecurityProtocol.SASL_PLAINTEXT,
            SecurityProtocol.SASL_SSL,
        )
        if uses_sasl and (
            self.sasl_mechanism is None or not self.sasl_username or self.sasl_password is None
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol.value} needs sasl_mechanism, "
                "sasl_username and sasl_password"
            )
        return self

    def librdkafka_config(self) -> dict[str, Any]:
        """The librdkafka properties every client of ours starts from."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol.value,
            "client.id": self.client_id,
        }
        if self.sasl_mechanism is not None:
            config["sasl.mechanism"] = self.sasl_mechanism.value
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        if self.ssl_ca_location:
            config["ssl.ca.location"] = self.ssl_ca_location
        if self.ssl_certificate_location:
            config["ssl.certificate.location"] = self.ssl_certificate_location
        if self.ssl_key_location:
            config["ssl.key.location"] = self.ssl_key_location
        if self.ssl_key_password is not None:
            config["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        if self.security_protocol in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL):
            config["ssl.endpoint.identification.algorithm"] = (
                "https" if self.ssl_endpoint_identification else "none"
            )
        config.update(self.extra)
        return config


class RefusalWatch:
    """A librdkafka `error_cb` that remembers the first error meaning the brokers refuse this
    client (wrong credentials, an untrusted certificate), which waiting does not fix, and
    hands every error on to `also`. Both the worker and the producer library listen with it."""

    def __init__(self, also: Callable[[Any], None] | None = None) -> None:
        self.reason: str | None = None
        self._also = also

    def __call__(self, error: Any) -> None:
        from confluent_kafka import KafkaError  # only the Kafka clients need it

        if self.reason is None and error.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL):
            self.reason = str(error.str())
        if self._also is not None:
            self._also(error)


def await_brokers(client: Any, watch: RefusalWatch, timeout_s: float) -> Any | None:
    """Serve `client`'s events and ask for metadata until a broker answers (its metadata is
    returned), the brokers refuse the client (`watch.reason` is set; None), or `timeout_s`
    passes (None). A refusal arrives only as an error event: without polling, a refused
    client just times out and nobody learns why."""
    deadline = time.monotonic() + timeout_s
    while True:
        client.poll(0.1)
        if watch.reason is not None:
            return None
        try:
            return client.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
        except Exception:  # KafkaException: no broker answered within the slice
            if time.monotonic() >= deadline:
                client.poll(0.1)  # a refusal that came in during the last request
                return None
