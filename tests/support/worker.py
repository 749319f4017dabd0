"""Worker processes started the way an operator starts them: `tts-stream worker`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.support.stack import ROOT, StackAddresses


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WorkerProcess:
    def __init__(
        self,
        stack: StackAddresses,
        env: dict[str, str],
        log_dir: Path,
        *,
        instance_id: str,
        args: tuple[str, ...] = (),
        netns: str | None = None,
        http_host: str = "127.0.0.1",
    ) -> None:
        self.instance_id = instance_id
        self.port = free_port()
        self.http_host = http_host
        self.log_path = log_dir / f"worker-{instance_id}.log"
        self._env = {
            **os.environ,
            **stack.worker_env(),
            "TTS_INSTANCE_ID": instance_id,
            "TTS_HTTP_PORT": str(self.port),
            "TTS_HTTP_HOST": http_host,
            "PYTHONUNBUFFERED": "1",
            # Results in the registry-less framing the tests' readers decode, even when the shell
            # exports the shared stack's registry URL; a test that wants the registry says so.
            "TTS_SCHEMA_REGISTRY_URL": "",
            **env,
        }
        self._args = args
        # A network namespace of the test's own (tests/chaos/netns.py) the process runs in.
        self._prefix = ["ip", "netns", "exec", netns] if netns else []
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [
                *self._prefix,
                sys.executable,
                "-m",
                "tts_stream",
                "--log-format",
                "json",
                "worker",
                *self._args,
            ],
            cwd=ROOT,
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://{self.http_host}:{self.port}{path}", timeout=5) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"worker {self.instance_id} exited early:\n{self.log_tail()}")
            try:
                status, _ = self.get("/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker {self.instance_id} not ready after {timeout_s}s:\n{self.log_tail()}")

    def metrics(self) -> dict[str, float]:
        """Samples of /metrics as {'name{labels}': value}."""
        _, body = self.get("/metrics")
        samples: dict[str, float] = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def signal(self, signum: int) -> None:
        assert self._proc is not None
        self._proc.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout_s: float) -> int:
        assert self._proc is not None
        return int(self._proc.wait(timeout_s))

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if not self.alive():
            return self._proc.returncode if self._proc else None
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                lines.append({"raw": raw})
        return lines

    def owned_partitions(self, topic: str) -> set[int]:
        """Partitions of `topic` this worker holds now, from its "partitions assigned" and
        "partitions revoked" log lines (assignments are incremental)."""
        owned: set[str] = set()
        for line in self.log_lines():
            names = {str(p) for p in line.get("partitions", []) or []}  # type: ignore[union-attr]
            if line.get("msg") == "partitions assigned":
                owned |= names
            elif str(line.get("msg", "")).startswith("partitions revoked"):
                owned -= names
        prefix = f"{topic}["
        return {int(name[len(prefix) : -1]) for name in owned if name.startswith(prefix)}

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float) -> None:
    """Poll observable state (a worker's metrics or logs) until it holds."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.1)
