"""Fixtures of the security suite: a SASL_SSL Kafka broker and a TLS Redis with a password,
started for this session on their own ports (tests/security/secure_stack.py) and removed after.
The shared plaintext stack keeps serving the other suites meanwhile."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.secure_stack import Certificates, SecureKafka, SecureRedis, clean


@pytest.fixture(scope="session")
def secure_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="tts-secure-"))
    yield folder
    clean(folder)


@pytest.fixture(scope="session")
def certs(secure_dir: Path) -> Certificates:
    try:
        return Certificates.create(secure_dir / "certs")
    except (OSError, RuntimeError) as exc:
        pytest.fail(f"could not make test certificates with openssl and keytool: {exc}")


@pytest.fixture(scope="session")
def secure_kafka(secure_dir: Path, certs: Certificates) -> Iterator[SecureKafka]:
    broker = SecureKafka(secure_dir / "kafka", certs)
    try:
        broker.start()
    except (OSError, RuntimeError) as exc:
        broker.stop()
        pytest.fail(f"could not start the SASL_SSL broker: {exc}")
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def secure_redis(secure_dir: Path, certs: Certificates) -> Iterator[SecureRedis]:
    server = SecureRedis(secure_dir / "redis", certs)
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        server.stop()
        pytest.fail(f"could not start the TLS Redis: {exc}")
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def quiet_refused_clients() -> Iterator[None]:
    """Clients that are refused on purpose make librdkafka log every retry."""
    logger = logging.getLogger("librdkafka.secure")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)
