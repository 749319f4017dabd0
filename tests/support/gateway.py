"""Gateway processes started the way an operator starts them (`tts-stream gateway`), and API
keys written the way the chart mounts them (a file of hashes)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.kafka_io import Lanes
from tests.support.stack import ROOT, StackAddresses
from tests.support.worker import free_port
from tts_stream.gateway.keys import key_line, new_key


@dataclass(frozen=True)
class Keys:
    """Clear keys by name (what clients hold) and the file of their hashes (what the gateway reads)."""

    path: Path
    clear: dict[str, str]

    def __getitem__(self, name: str) -> str:
        return self.clear[name]


def write_keys(directory: Path, specs: dict[str, str]) -> Keys:
    """`specs`: name -> the options of its line (e.g. "rate=1 burst=2 scopes=tts")."""
    clear = {name: new_key() for name in specs}
    lines = [f"{key_line(name, clear[name])} {options}".strip() for name, options in specs.items()]
    path = directory / "api-keys"
    path.write_text("# name sha256 options\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return Keys(path, clear)


class GatewayProcess:
    def __init__(
        self, stack: StackAddresses, lanes: Lanes, keys: Keys, log_dir: Path, name: str, env: dict[str, str]
    ) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"gateway-{name}.log"
        self._env = {
            **os.environ,
            **stack.worker_env(),
            **lanes.env(),
            # Registry-less framing, whatever the developer's shell exports.
            "TTS_SCHEMA_REGISTRY_URL": "",
            "TTS_GATEWAY_PORT": str(self.port),
            "TTS_GATEWAY_API_KEYS_FILE": str(keys.path),
            "TTS_GATEWAY_INSTANCE_ID": name,
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tts_stream", "--log-format", "json", "gateway"],
                cwd=ROOT,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> GatewayProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise AssertionError(f"gateway {self.name} exited early:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"gateway {self.name} not ready after {timeout_s}s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 30.0) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(no log)"
