"""Redis behind a password and TLS only: the worker's store connects with both; without the
password, over plaintext, or trusting another CA, nothing gets through -- and no error names the
password."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from consumer.adapters.redis_store import RedisStore
from consumer.errors import CacheUnavailable
from consumer.ports import Acquired
from tests.security.secure_stack import Certificates, SecureRedis


def test_the_worker_store_works_over_tls_with_the_password(secure_redis: SecureRedis) -> None:
    store = RedisStore.from_url(secure_redis.url(), password=secure_redis.password, group_id="secure")
    assert store.ping()
    claims = store.claim(["f" * 64], owner="me", lease_ttl_ms=5000)
    assert isinstance(claims["f" * 64], Acquired)
    store.release(["f" * 64], owner="me")


@pytest.mark.parametrize("password", [None, "guess"], ids=["no-password", "wrong-password"])
def test_without_the_password_the_store_is_unavailable_and_says_nothing_secret(
    password: str | None, secure_redis: SecureRedis
) -> None:
    store = RedisStore.from_url(secure_redis.url(), password=password, group_id="secure")
    assert not store.ping()
    with pytest.raises(CacheUnavailable) as refused:
        store.claim(["e" * 64], owner="me", lease_ttl_ms=5000)
    message = str(refused.value)
    assert "auth" in message.lower() or "password" in message, message
    assert secure_redis.password not in message


def test_plaintext_to_the_tls_port_gets_nothing(secure_redis: SecureRedis) -> None:
    client = redis.Redis(
        host="127.0.0.1", port=secure_redis.port, password=secure_redis.password, socket_timeout=3
    )
    with pytest.raises(redis.RedisError):
        client.ping()


def test_a_server_certificate_from_another_ca_is_refused(
    secure_redis: SecureRedis, certs: Certificates
) -> None:
    store = RedisStore.from_url(
        secure_redis.url(ca=certs.other_ca_pem), password=secure_redis.password, group_id="secure"
    )
    with pytest.raises(CacheUnavailable) as refused:
        store.claim(["d" * 64], owner="me", lease_ttl_ms=5000)
    assert "certificate verify failed" in str(refused.value)


def test_the_password_is_not_on_the_command_line(secure_redis: SecureRedis) -> None:
    assert secure_redis.proc is not None
    cmdline = Path(f"/proc/{secure_redis.proc.pid}/cmdline").read_bytes().decode(errors="replace")
    assert secure_redis.password not in cmdline
