"""Services in their secure modes, started by the tests: a Kafka broker that only speaks
SASL_SSL with SCRAM-SHA-512, and a Redis that only speaks TLS and wants a password.

Everything is made from scratch in a temporary folder: a CA and a server certificate
(openssl), the broker's PKCS12 keystore and truststore (openssl, keytool), SCRAM credentials
written into the log dir when it is formatted (`--add-scram`). The broker runs from the jars of
the shared stack's install (.infra/kafka/lib) on its own ports, so the shared plaintext broker
is never touched.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.chaos.private_stack import pick_ports
from tests.support.stack import ROOT

KAFKA_LIB = ROOT / ".infra" / "kafka" / "lib"
CLUSTER_ID = "c2VjdXJlLXR0cy1zdHJlYW0"  # any 16 bytes, base64url


def _run(*args: str, cwd: Path) -> None:
    completed = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{completed.stdout}\n{completed.stderr}")


@dataclass(frozen=True)
class Certificates:
    folder: Path
    ca_pem: Path
    server_pem: Path
    server_key: Path
    keystore: Path  # PKCS12: server key + chain
    truststore: Path  # PKCS12: the CA
    store_password: str
    other_ca_pem: Path  # a CA nobody trusts: for "untrusted certificate" tests

    @classmethod
    def create(cls, folder: Path) -> Certificates:
        folder.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(12)
        for name in ("ca", "other-ca"):
            _run(
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN=tts-stream test {name}",
                cwd=folder,
            )  # fmt: skip
        (folder / "server.ext").write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
            "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n"
        )
        _run(
            "openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
            "-out", "server.csr", "-subj", "/CN=127.0.0.1",
            cwd=folder,
        )  # fmt: skip
        _run(
            "openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.pem",
            cwd=folder,
        )  # fmt: skip
        _run(
            "openssl", "pkcs12", "-export", "-in", "server.pem", "-inkey", "server.key",
            "-certfile", "ca.pem", "-name", "server", "-out", "server.p12", "-passout", f"pass:{password}",
            cwd=folder,
        )  # fmt: skip
        _run(
            "keytool", "-importcert", "-noprompt", "-alias", "ca", "-file", "ca.pem",
            "-keystore", "truststore.p12", "-storetype", "PKCS12", "-storepass", password,
            cwd=folder,
        )  # fmt: skip
        for key in folder.glob("*.key"):
            key.chmod(0o600)
        return cls(
            folder=folder,
            ca_pem=folder / "ca.pem",
            server_pem=folder / "server.pem",
            server_key=folder / "server.key",
            keystore=folder / "server.p12",
            truststore=folder / "truststore.p12",
            store_password=password,
            other_ca_pem=folder / "other-ca.pem",
        )


@dataclass(frozen=True)
class ScramUser:
    name: str
    password: str


class _Process:
    def __init__(self, name: str, log: Path) -> None:
        self.name = name
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def stop(self, grace_s: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class SecureKafka(_Process):
    """A single KRaft node whose only client listener is SASL_SSL (SCRAM-SHA-512)."""

    def __init__(self, folder: Path, certs: Certificates) -> None:
        super().__init__("secure-kafka", folder / "kafka.log")
        self.folder = folder
        self.certs = certs
        self.port, self.controller_port = pick_ports(2)
        self.admin = ScramUser("admin", secrets.token_urlsafe(16))
        self.worker = ScramUser("tts-worker", secrets.token_urlsafe(16))
        self.producer = ScramUser("tts-producer", secrets.token_urlsafe(16))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _properties(self) -> str:
        c = self.certs
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{self.admin.name}" password="{self.admin.password}";'
        )
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                f"listeners=SASL_SSL://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=SASL_SSL://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=SASL_SSL",
                # The controller listener is loopback-only and used by this node alone.
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
                "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
                f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}",
                "ssl.keystore.type=PKCS12",
                f"ssl.keystore.location={c.keystore}",
                f"ssl.keystore.password={c.store_password}",
                f"ssl.key.password={c.store_password}",
                "ssl.truststore.type=PKCS12",
                f"ssl.truststore.location={c.truststore}",
                f"ssl.truststore.password={c.store_password}",
                "ssl.client.auth=none",
                f"log.dirs={self.folder / 'data'}",
                "num.partitions=1",
                "auto.create.topics.enable=false",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "group.classic.min.session.timeout.ms=1000",
                "num.network.threads=2",
                "num.io.threads=2",
                "",
            ]
        )

    def _java(self) -> list[str]:
        return [
            "java",
            "-Xms128m",
            "-Xmx512m",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={ROOT / 'infra' / 'kafka' / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.folder}",
            "-cp",
            f"{KAFKA_LIB}/*",
        ]

    def start(self, timeout_s: float = 120.0) -> None:
        if not KAFKA_LIB.is_dir():
            raise RuntimeError(f"no Kafka install at {KAFKA_LIB}: run `make up` first")
        self.folder.mkdir(parents=True, exist_ok=True)
        properties = self.folder / "server.properties"
        properties.write_text(self._properties())
        properties.chmod(0o600)
        users = [self.admin, self.worker, self.producer]
        scram = [
            arg
            for u in users
            for arg in ("--add-scram", f"SCRAM-SHA-512=[name={u.name},password={u.password}]")
        ]
        _run(
            *self._java(), "kafka.tools.StorageTool", "format",
            "-t", CLUSTER_ID, "-c", str(properties), *scram,
            cwd=self.folder,
        )  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self._java(), "kafka.Kafka", str(properties)],
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the SASL_SSL broker exited during start-up:\n{self.tail()}")
            if self._answers():
                return
            time.sleep(1.0)
        raise RuntimeError(f"the SASL_SSL broker did not answer within {timeout_s:.0f}s:\n{self.tail()}")

    def _answers(self) -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            metadata = AdminClient(self.client_config(self.admin)).list_topics(timeout=3)
        except Exception:  # not up yet
            return False
        return bool(metadata.brokers)

    def client_config(self, user: ScramUser, **overrides: Any) -> dict[str, Any]:
        """librdkafka properties of a client that authenticates as `user`."""
        import logging

        return {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": user.name,
            "sasl.password": user.password,
            "ssl.ca.location": str(self.certs.ca_pem),
            "logger": logging.getLogger("librdkafka.secure"),
            **overrides,
        }

    def env(self, user: ScramUser, *, password: str | None = None, ca: Path | None = None) -> dict[str, str]:
        """TTS_KAFKA_* variables for a worker or CLI process authenticating as `user`."""
        return {
            "TTS_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "TTS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "TTS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "TTS_KAFKA_SASL_USERNAME": user.name,
            "TTS_KAFKA_SASL_PASSWORD": password if password is not None else user.password,
            "TTS_KAFKA_SSL_CA_LOCATION": str(ca or self.certs.ca_pem),
        }


class SecureRedis(_Process):
    """redis-server with TLS only (no plaintext port) and a password."""

    def __init__(self, folder: Path, certs: Certificates) -> None:
        super().__init__("secure-redis", folder / "redis.log")
        self.folder = folder
        self.certs = certs
        (self.port,) = pick_ports(1)
        self.password = secrets.token_urlsafe(16)

    def start(self, timeout_s: float = 30.0) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed: run `make up` first")
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "redis.conf"
        # A config file, not the command line: the password must not show in the process list.
        config.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    "port 0",
                    f"tls-port {self.port}",
                    f"tls-cert-file {self.certs.server_pem}",
                    f"tls-key-file {self.certs.server_key}",
                    f"tls-ca-cert-file {self.certs.ca_pem}",
                    "tls-auth-clients no",
                    f"requirepass {self.password}",
                    "save ''",
                    "appendonly no",
                    f"dir {self.folder}",
                    "",
                ]
            )
        )
        config.chmod(0o600)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                ["redis-server", str(config)], cwd=self.folder, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the TLS Redis exited during start-up:\n{self.tail()}")
            if self._answers():
                return
            time.sleep(0.3)
        raise RuntimeError(f"the TLS Redis did not answer within {timeout_s:.0f}s:\n{self.tail()}")

    def _answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url(), password=self.password, socket_timeout=2).ping())
        except redis.RedisError:
            return False

    def url(self, ca: Path | None = None) -> str:
        """rediss:// URL that verifies the server against our CA (the password goes separately)."""
        return (
            f"rediss://127.0.0.1:{self.port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca or self.certs.ca_pem}"
        )


def clean(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
