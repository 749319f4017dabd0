"""The suites reach Kafka as the product does: the TTS_KAFKA_* security variables reach every
client the fixtures make (README, "Pointing at an existing cluster")."""

from __future__ import annotations

import pytest

from tests.support.stack import StackAddresses


def test_the_fixtures_kafka_clients_carry_the_security_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTS_KAFKA_BOOTSTRAP_SERVERS", "broker-1:9093")
    monkeypatch.setenv("TTS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TTS_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("TTS_KAFKA_SASL_USERNAME", "tts")
    monkeypatch.setenv("TTS_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("TTS_KAFKA_SSL_CA_LOCATION", "/etc/kafka/ca.pem")
    stack = StackAddresses.from_env()
    config = stack.kafka.librdkafka_config()
    assert config["bootstrap.servers"] == "broker-1:9093"
    assert config["security.protocol"] == "SASL_SSL"
    assert (config["sasl.mechanism"], config["sasl.username"], config["sasl.password"]) == (
        "SCRAM-SHA-512",
        "tts",
        "s3cret",
    )
    assert config["ssl.ca.location"] == "/etc/kafka/ca.pem"
    values = stack.kafka_values()
    assert values["security_protocol"] == "SASL_SSL" and values["bootstrap_servers"] == "broker-1:9093"


def test_without_them_the_local_stack_is_plaintext(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TTS_KAFKA_BOOTSTRAP_SERVERS", "TTS_KAFKA_SECURITY_PROTOCOL", "TTS_KAFKA_SASL_MECHANISM"):
        monkeypatch.delenv(name, raising=False)
    config = StackAddresses.from_env().kafka.librdkafka_config()
    assert config["bootstrap.servers"] == "127.0.0.1:9092"
    assert config["security.protocol"] == "PLAINTEXT"
