"""A private instance of the local stack for tests that stop and restart services.

The shared stack (`make up`) serves every other suite at the same time, so faults are never
injected there. This instance runs the same scripts (scripts/stack.sh) with its own data folder
and ports (TTS_STACK_DATA_DIR, TTS_STACK_*_PORT) and shares only the downloaded installs. Its
shape is chosen per suite: one broker or a three-node cluster (`brokers`), one Redis server or a
Sentinel or Cluster deployment (`redis_mode`), and, for the network partition scenario, the
whole stack inside a network namespace the test created (`netns`, `host`).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.redis_topologies import free_port_block
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
    kafka_ports: list[int]
    controller_ports: list[int]
    redis_port: int
    s3_port: int
    redis_mode: str = "single"
    host: str = "127.0.0.1"
    netns: str | None = None  # run the stack's processes inside this network namespace
    events: list[tuple[float, str]] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        data_dir: Path,
        *,
        brokers: int = 1,
        redis_mode: str = "single",
        host: str = "127.0.0.1",
        netns: str | None = None,
    ) -> PrivateStack:
        ports = pick_ports(2 * brokers + 1)
        if redis_mode == "single":
            redis_port = pick_ports(1)[0]
        else:  # consecutive nodes, and the cluster bus at +1000
            redis_port = free_port_block(6, also_offset=1000 if redis_mode == "cluster" else None)
        return cls(
            data_dir,
            kafka_ports=ports[:brokers],
            controller_ports=ports[brokers : 2 * brokers],
            redis_port=redis_port,
            s3_port=ports[-1],
            redis_mode=redis_mode,
            host=host,
            netns=netns,
        )

    @property
    def brokers(self) -> int:
        return len(self.kafka_ports)

    @property
    def kafka_nodes(self) -> list[str]:
        return ["kafka"] if self.brokers == 1 else [f"kafka-{i}" for i in range(1, self.brokers + 1)]

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TTS_STACK_DATA_DIR": str(self.data_dir),
            "TTS_STACK_BROKERS": str(self.brokers),
            "TTS_STACK_KAFKA_PORTS": ",".join(map(str, self.kafka_ports)),
            "TTS_STACK_KAFKA_CONTROLLER_PORTS": ",".join(map(str, self.controller_ports)),
            "TTS_STACK_KAFKA_PORT": str(self.kafka_ports[0]),
            "TTS_STACK_KAFKA_CONTROLLER_PORT": str(self.controller_ports[0]),
            "TTS_STACK_REDIS_PORT": str(self.redis_port),
            "TTS_STACK_REDIS_MODE": self.redis_mode,
            "TTS_STACK_REDIS_CLUSTER_REPLICAS": "1",
            "TTS_STACK_S3_PORT": str(self.s3_port),
            "TTS_STACK_HOST": self.host,
        }

    def _stack(self, *args: str, timeout_s: float = 240) -> None:
        started = time.monotonic()
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        completed = subprocess.run(
            [*prefix, str(STACK_SH), *args],
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
        self._stack("stop", service)

    def start(self, service: str) -> None:
        self._stack("start", service)

    def pid(self, node: str) -> int | None:
        pid_file = self.data_dir / "run" / f"{node}.pid"
        try:
            return int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self, service: str) -> bool:
        nodes = {"kafka": self.kafka_nodes, "redis": self.redis_nodes}.get(service, [service])
        for node in nodes:
            pid = self.pid(node)
            if pid is None:
                return False
            try:
                os.kill(pid, 0)
            except OSError:
                return False
        return True

    def kill(self, node: str) -> None:
        """SIGKILL one node (kafka-2, redis-master, redis-node-3...): no controlled shutdown, no
        goodbye to its peers. `start(node)` brings it back."""
        pid = self.pid(node)
        assert pid is not None, f"{node} is not running"
        os.kill(pid, signal.SIGKILL)
        (self.data_dir / "run" / f"{node}.pid").unlink(missing_ok=True)

    @property
    def redis_nodes(self) -> list[str]:
        if self.redis_mode == "sentinel":
            return ["redis-master", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"]
        if self.redis_mode == "cluster":
            return [f"redis-node-{i}" for i in range(1, 7)]
        return ["redis"]

    def active_controller(self) -> int:
        """The KRaft quorum's leader, as a live voter last recorded it (quorum-state file)."""
        for node in self.kafka_nodes:
            if not self.running(node):
                continue
            state = self.data_dir / node / "data" / "__cluster_metadata-0" / "quorum-state"
            try:
                leader = int(json.loads(state.read_text())["leaderId"])
            except (OSError, ValueError, KeyError):
                continue
            if leader > 0:
                return leader
        raise AssertionError("no live voter knows the active controller")

    def node_name(self, broker_id: int) -> str:
        return "kafka" if self.brokers == 1 else f"kafka-{broker_id}"

    def remove(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def stack_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for line in (self.data_dir / "stack.env").read_text().splitlines():
            key, _, value = line.partition("=")
            env[key] = value
        return env

    def redis_env(self) -> dict[str, str]:
        """The TTS_REDIS_* variables a worker needs for this stack's Redis deployment."""
        return {k: v for k, v in self.stack_env().items() if k.startswith("TTS_REDIS_")}

    @property
    def addresses(self) -> StackAddresses:
        """What `up` wrote to this instance's stack.env (the buckets are the stack's defaults)."""
        env = self.stack_env()
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
        path = self.data_dir / logs.get(service, f"{service}/kafka.log")
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
