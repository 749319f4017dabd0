"""Redis beyond one server, started by the project's own script for the tests that need it.

`scripts/stack.sh start redis` with TTS_STACK_REDIS_MODE=sentinel (a master, a replica, three
sentinels) or =cluster (three masters, a replica each), in a data folder of its own and on a
block of ports found free at run time, so it never meets the shared stack or another engineer's.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from consumer.adapters.redis_connect import RedisTopology, parse_addresses
from tests.support.stack import ROOT

STACK_SH = ROOT / "scripts" / "stack.sh"
# Below the kernel's ephemeral range, like the chaos stacks: a stopped node's port is never taken
# by a client's outgoing connection while it is down. The cluster's bus ports are +1000.
PORT_RANGE = (20000, 29000)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(count: int, *, also_offset: int | None = None) -> int:
    """A base port such that base .. base+count-1 (and the same + also_offset) are free."""
    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(2000):
        base = rng.randrange(PORT_RANGE[0], PORT_RANGE[1] - count)
        ports = list(range(base, base + count))
        if also_offset:
            ports += [p + also_offset for p in ports]
        if all(_free(p) for p in ports):
            return base
    raise RuntimeError(f"no block of {count} free ports found")


@dataclass
class RedisDeployment:
    """One private Sentinel or Cluster deployment and the topology that reaches it."""

    mode: str
    data_dir: Path
    base_port: int
    replicas: int = 1

    @classmethod
    def start(cls, mode: str) -> RedisDeployment:
        count = 5 if mode == "sentinel" else 6
        base = free_port_block(count, also_offset=1000 if mode == "cluster" else None)
        deployment = cls(mode, Path(tempfile.mkdtemp(prefix=f"tts-redis-{mode}-")), base)
        deployment._stack("start", "redis")
        return deployment

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TTS_STACK_DATA_DIR": str(self.data_dir),
            "TTS_STACK_REDIS_MODE": self.mode,
            "TTS_STACK_REDIS_PORT": str(self.base_port),
            "TTS_STACK_REDIS_CLUSTER_REPLICAS": str(self.replicas),
        }

    def _stack(self, *args: str) -> str:
        completed = subprocess.run(
            [str(STACK_SH), *args], env=self._env(), capture_output=True, text=True, timeout=120, check=False
        )
        if completed.returncode != 0:
            command = " ".join(args)
            raise RuntimeError(
                f"scripts/stack.sh {command} ({self.mode}) failed:\n{completed.stdout}\n{completed.stderr}"
            )
        return completed.stdout

    @property
    def env(self) -> dict[str, str]:
        """The TTS_REDIS_* variables stack.sh wrote for this deployment, as a worker reads them."""
        out = {}
        for line in (self.data_dir / "stack.env").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.startswith("TTS_REDIS_"):
                out[key] = value
        return out

    def topology(self, **options: object) -> RedisTopology:
        env = self.env
        password = env["TTS_REDIS_PASSWORD"]
        if self.mode == "sentinel":
            return RedisTopology(
                url=env["TTS_REDIS_URL"],
                password=password,
                sentinels=parse_addresses(env["TTS_REDIS_SENTINELS"].split(","), "sentinels"),
                sentinel_master=env["TTS_REDIS_SENTINEL_MASTER"],
                sentinel_password=env["TTS_REDIS_SENTINEL_PASSWORD"],
                options=dict(options),
            )
        return RedisTopology(
            url=env["TTS_REDIS_URL"],
            password=password,
            cluster_nodes=parse_addresses(env["TTS_REDIS_CLUSTER_NODES"].split(","), "cluster nodes"),
            options=dict(options),
        )

    def pid(self, node: str) -> int:
        return int((self.data_dir / "run" / f"{node}.pid").read_text().strip())

    def kill(self, node: str) -> None:
        """SIGKILL one node: no goodbye to its replicas or sentinels."""
        os.kill(self.pid(node), signal.SIGKILL)
        (self.data_dir / "run" / f"{node}.pid").unlink(missing_ok=True)

    def start_node(self, node: str) -> None:
        self._stack("start", node)

    def node_of_port(self, port: int) -> str:
        offset = port - self.base_port
        if self.mode == "sentinel":
            return {0: "redis-master", 1: "redis-replica"}[offset]
        return f"redis-node-{offset + 1}"

    def stop(self) -> None:
        try:
            self._stack("stop", "redis")
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)
