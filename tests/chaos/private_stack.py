"""A private instance of the local stack for tests that stop and restart services.

The shared stack (`make up`) serves every other suite at the same time, so faults are never
injected there. This instance runs the same scripts (scripts/stack.sh) with its own data folder
and ports (TTS_STACK_DATA_DIR, TTS_STACK_*_PORT) and shares only the downloaded installs.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.stack import ROOT, StackAddresses

STACK_SH = ROOT / "scripts" / "stack.sh"
SERVICES = ("redis", "kafka", "s3")
# Below the kernel's ephemeral range (32768-60999 here): a client's outgoing connection can never
# sit on one of these ports while a stopped service waits to bind it again.
PORT_RANGE = (20000, 30000)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_ports(count: int) -> list[int]:
    rng = random.Random(os.getpid() ^ time.time_ns())
    chosen: list[int] = []
    while len(chosen) < count:
        port = rng.randrange(*PORT_RANGE)
        if port not in chosen and _port_free(port):
            chosen.append(port)
    return chosen


@dataclass
class PrivateStack:
    data_dir: Path
    kafka_port: int
    controller_port: int
    redis_port: int
    s3_port: int
    events: list[tuple[float, str]] = field(default_factory=list)

    @classmethod
    def create(cls, data_dir: Path) -> PrivateStack:
        kafka, controller, redis, s3 = pick_ports(4)
        return cls(data_dir, kafka, controller, redis, s3)

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TTS_STACK_DATA_DIR": str(self.data_dir),
            "TTS_STACK_KAFKA_PORT": str(self.kafka_port),
            "TTS_STACK_KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "TTS_STACK_REDIS_PORT": str(self.redis_port),
            "TTS_STACK_S3_PORT": str(self.s3_port),
        }

    def _stack(self, *args: str, timeout_s: float = 180) -> None:
        started = time.monotonic()
        completed = subprocess.run(
            [str(STACK_SH), *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        self.events.append((time.monotonic() - started, " ".join(args)))
        if completed.returncode != 0:
            raise RuntimeError(
                f"scripts/stack.sh {' '.join(args)} failed ({completed.returncode}):\n"
                f"{completed.stdout}\n{completed.stderr}"
            )

    def up(self) -> None:
        self._stack("up")

    def down(self) -> None:
        self._stack("down")

    def stop(self, service: str) -> None:
        assert service in SERVICES, service
        self._stack("stop", service)

    def start(self, service: str) -> None:
        assert service in SERVICES, service
        self._stack("start", service)

    def running(self, service: str) -> bool:
        pid_file = self.data_dir / "run" / f"{service}.pid"
        if not pid_file.exists():
            return False
        try:
            os.kill(int(pid_file.read_text().strip()), 0)
        except (OSError, ValueError):
            return False
        return True

    def remove(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)

    @property
    def addresses(self) -> StackAddresses:
        """What `up` wrote to this instance's stack.env (the buckets are the stack's defaults)."""
        env: dict[str, str] = {}
        for line in (self.data_dir / "stack.env").read_text().splitlines():
            key, _, value = line.partition("=")
            env[key] = value
        return StackAddresses(
            kafka_bootstrap=env["TTS_KAFKA_BOOTSTRAP_SERVERS"],
            redis_url=env["TTS_REDIS_URL"],
            s3_endpoint=env["TTS_S3_ENDPOINT_URL"],
            s3_access_key=env["TTS_S3_ACCESS_KEY_ID"],
            s3_secret_key=env["TTS_S3_SECRET_ACCESS_KEY"],
            s3_region=env["TTS_S3_REGION"],
            audio_bucket="tts-audio",
            voices_bucket="tts-voices",
            registry_url=env["TTS_SCHEMA_REGISTRY_URL"],
        )

    def log_tail(self, service: str, lines: int = 30) -> str:
        logs = {"redis": "redis/redis.log", "kafka": "kafka/kafka.log", "s3": "s3/versitygw.log"}
        path = self.data_dir / logs[service]
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
