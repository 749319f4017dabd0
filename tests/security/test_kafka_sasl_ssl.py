"""Kafka with SASL/SCRAM-SHA-512 over TLS: the worker and the producer library both connect and a
request round-trips; wrong passwords, untrusted certificates and plaintext clients are refused,
and the refusal says why."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from producer import ProducerSettings, ResultSubscriber, TtsProducer
from producer.errors import KafkaRefused
from producer.settings import LIBRDKAFKA_LOGGER
from schemas.model import ResultStatus
from schemas.topics import TopicNames
from schemas.transport import KafkaConnection
from tests.security.secure_stack import Certificates, ScramUser, SecureKafka, SecureRedis
from tests.support.kafka_io import Lanes, create_lanes
from tests.support.stack import ROOT, StackAddresses
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.timeout(300)


def _producer_settings(
    broker: SecureKafka, lanes: Lanes, user: ScramUser, *, password: str | None = None, ca: Path | None = None
) -> ProducerSettings:
    return ProducerSettings.from_values(
        kafka=KafkaConnection(
            bootstrap_servers=broker.bootstrap,
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username=user.name,
            sasl_password=password if password is not None else user.password,
            ssl_ca_location=str(ca or broker.certs.ca_pem),
        ),
        topics=TopicNames(requests=lanes.requests, bulk=lanes.bulk, results=lanes.results, dlq=lanes.dlq),
    )


def _worker_env(broker: SecureKafka, redis: SecureRedis, lanes: Lanes, **kafka: Any) -> dict[str, str]:
    return {
        **lanes.env(),
        **broker.env(broker.worker, **kafka),
        "TTS_REDIS_URL": redis.url(),
        "TTS_REDIS_PASSWORD": redis.password,
        "TTS_ENGINE": "null",
    }


@pytest.fixture
def secure_lanes(secure_kafka: SecureKafka) -> Lanes:
    return create_lanes(secure_kafka.client_config(secure_kafka.admin), partitions=2)


def test_worker_and_producer_library_round_trip_over_sasl_ssl(
    secure_kafka: SecureKafka,
    secure_redis: SecureRedis,
    secure_lanes: Lanes,
    stack: StackAddresses,
    s3_client: Any,
    tmp_path: Path,
) -> None:
    worker = WorkerProcess(
        stack, _worker_env(secure_kafka, secure_redis, secure_lanes), tmp_path, instance_id="sasl-ssl"
    )
    try:
        worker.start().wait_ready(90)
        settings = _producer_settings(secure_kafka, secure_lanes, secure_kafka.producer)
        with ResultSubscriber(settings, start="beginning") as results, TtsProducer(settings) as tts:
            tts.check_connection()
            request_id = tts.submit(
                f"Over an encrypted, authenticated link {uuid.uuid4().hex}.", "preset:en-us"
            )
            tts.flush(30)
            result = results.wait_for([request_id], timeout_s=60)[request_id]
        assert result.status is ResultStatus.SUCCEEDED, result.error
        assert result.audio is not None
        bucket, _, key = result.audio.uri.removeprefix("s3://").partition("/")
        assert s3_client.head_object(Bucket=bucket, Key=key)["ContentLength"] == result.audio.size_bytes
        # The result was cached in the TLS Redis, behind its password.
        import redis

        cache = redis.Redis.from_url(secure_redis.url(), password=secure_redis.password)
        assert cache.exists(f"tts:{{{result.cache_key}}}:result") == 1
        assert worker.get("/readyz")[0] == 200
    finally:
        worker.stop(20)


@pytest.mark.parametrize("fault", ["wrong-password", "untrusted-ca"])
def test_a_refused_worker_stops_at_once_and_says_why(
    fault: str,
    secure_kafka: SecureKafka,
    secure_redis: SecureRedis,
    secure_lanes: Lanes,
    certs: Certificates,
    stack: StackAddresses,
    tmp_path: Path,
) -> None:
    wrong = "not-" + secure_kafka.worker.password
    kafka = {"password": wrong} if fault == "wrong-password" else {"ca": certs.other_ca_pem}
    worker = WorkerProcess(
        stack, _worker_env(secure_kafka, secure_redis, secure_lanes, **kafka), tmp_path, instance_id=fault
    )
    started = time.monotonic()
    worker.start()
    try:
        code = worker.wait(60)
    finally:
        worker.stop(10)
    assert code == 2, f"exit 2 is 'bad configuration':\n{worker.log_tail()}"
    assert time.monotonic() - started < 30, "no minute-long wait for a timeout"
    fatal = [line for line in worker.log_lines() if line.get("level") == "critical"]
    assert len(fatal) == 1
    reason = str(fatal[0]["msg"])
    assert "kafka refused this client" in reason
    if fault == "wrong-password":
        assert "SASL authentication error" in reason and "invalid credentials" in reason
    else:
        assert "certificate verify failed" in reason
    log = worker.log_path.read_text()
    assert wrong not in log and secure_kafka.worker.password not in log


@pytest.mark.parametrize("fault", ["wrong-password", "untrusted-ca"])
def test_the_producer_library_is_refused_and_says_why(
    fault: str,
    secure_kafka: SecureKafka,
    secure_lanes: Lanes,
    certs: Certificates,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """check_connection raises KafkaRefused with librdkafka's reason as soon as the broker
    refuses (not "no broker answered" after its timeout), and the reason reaches the log too."""
    user = secure_kafka.producer
    wrong = "not-" + user.password
    settings = (
        _producer_settings(secure_kafka, secure_lanes, user, password=wrong)
        if fault == "wrong-password"
        else _producer_settings(secure_kafka, secure_lanes, user, ca=certs.other_ca_pem)
    )
    with caplog.at_level(logging.ERROR, logger=LIBRDKAFKA_LOGGER):
        tts = TtsProducer(settings)
        with pytest.raises(KafkaRefused) as refused:
            tts.check_connection(timeout_s=30)
        tts.flush(2)  # serves librdkafka's queued log lines
    expected = "SASL authentication error" if fault == "wrong-password" else "certificate verify failed"
    assert expected in str(refused.value), "the error names the reason"
    assert any(expected in r.getMessage() for r in caplog.records), "the reason reaches the application's log"
    shown = str(refused.value) + "".join(r.getMessage() for r in caplog.records)
    assert wrong not in shown and user.password not in shown


def test_the_cli_refuses_bad_credentials_without_echoing_them(
    secure_kafka: SecureKafka, secure_lanes: Lanes
) -> None:
    wrong = "not-" + secure_kafka.producer.password
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TTS_")},
        **secure_kafka.env(secure_kafka.producer, password=wrong),
        "TTS_TOPICS_REQUESTS": secure_lanes.requests,
    }
    completed = subprocess.run(
        [sys.executable, "-m", "tts_stream", "submit", "hello", "--voice", "preset:en-us"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 3, completed.stderr
    assert "refused this client" in completed.stderr and "SASL authentication" in completed.stderr
    assert wrong not in completed.stdout + completed.stderr


@pytest.mark.parametrize(
    "config",
    [
        {"security.protocol": "PLAINTEXT"},
        {"security.protocol": "SSL"},  # TLS but no SASL
        {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"},  # a mechanism not enabled
        {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256"},
    ],
    ids=["plaintext", "tls-without-sasl", "sasl-plain", "scram-sha-256"],
)
def test_clients_without_scram_over_tls_get_nothing(
    config: dict[str, str], secure_kafka: SecureKafka, certs: Certificates
) -> None:
    client = {
        "bootstrap.servers": secure_kafka.bootstrap,
        "ssl.ca.location": str(certs.ca_pem),
        "sasl.username": secure_kafka.producer.name,
        "sasl.password": secure_kafka.producer.password,
        "logger": logging.getLogger("librdkafka.secure"),
        **config,
    }
    if config["security.protocol"] in ("PLAINTEXT", "SSL"):
        client = {k: v for k, v in client.items() if not k.startswith("sasl.")}
    with pytest.raises(KafkaException):
        AdminClient(client).list_topics(timeout=5)
