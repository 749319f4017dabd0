"""Render the chart with the pinned Helm (scripts/helm.sh builds it on first use) and load the output."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "tts-stream"
SCENARIO_DIR = CHART / "ci"
HELM_SH = ROOT / "scripts" / "helm.sh"
# The oldest Kubernetes minor KEDA 2.20 supports; the rendered objects are validated against it.
KUBE_VERSION = "1.33.0"
RELEASE = "tts"
NAMESPACE = "speech"

SCENARIOS = sorted(path.name.removesuffix("-values.yaml") for path in SCENARIO_DIR.glob("*-values.yaml"))


def scenario_file(name: str) -> Path:
    return SCENARIO_DIR / f"{name}-values.yaml"


@functools.cache
def helm_binary() -> str:
    """The helm binary's path, built by scripts/helm.sh when missing (minutes, once per machine)."""
    result = subprocess.run(
        [str(HELM_SH), "--print-path"], capture_output=True, text=True, timeout=1800, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/helm.sh could not provide helm:\n{result.stderr}")
    return result.stdout.strip().splitlines()[-1]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    env_home = ROOT / ".infra" / "helm"
    env = {
        "HELM_CACHE_HOME": str(env_home / "cache"),
        "HELM_CONFIG_HOME": str(env_home / "config"),
        "HELM_DATA_HOME": str(env_home / "data"),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )


class RenderError(Exception):
    """`helm template` refused the values; the message is Helm's."""


def _set_args(values: dict[str, Any] | None) -> list[str]:
    args: list[str] = []
    for key, value in (values or {}).items():
        if isinstance(value, list):  # Helm's list syntax: key={a,b}
            args += ["--set", f"{key}={{{','.join(map(str, value))}}}"]
        else:
            args += ["--set-string" if isinstance(value, str) else "--set", f"{key}={value}"]
    return args


def render_raw(files: Iterable[Path] = (), values: dict[str, Any] | None = None) -> str:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
    for path in files:
        args += ["-f", str(path)]
    args += _set_args(values)
    result = helm(*args)
    if result.returncode != 0:
        raise RenderError(result.stderr.strip())
    return result.stdout


@dataclass(frozen=True)
class Rendered:
    """The objects of one render, with lookups by kind."""

    objects: tuple[dict[str, Any], ...]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, found {len(found)}"
        return found[0]

    def kinds(self) -> set[str]:
        return {obj["kind"] for obj in self.objects}

    def of(self, kind: str, component: str) -> list[dict[str, Any]]:
        """The objects of `kind` that belong to `component` (worker, gateway)."""
        return [
            obj
            for obj in self.all(kind)
            if obj["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ]

    def component(self, kind: str, component: str) -> dict[str, Any]:
        """The one object of `kind` that belongs to `component`."""
        found = self.of(kind, component)
        assert len(found) == 1, f"expected one {component} {kind}, found {len(found)}"
        return found[0]

    @property
    def statefulset(self) -> dict[str, Any]:
        """The workers' StatefulSet (stable pod names: docs/deploy.md "Worker identities")."""
        return self.component("StatefulSet", "worker")

    @property
    def worker(self) -> dict[str, Any]:
        containers = self.statefulset["spec"]["template"]["spec"]["containers"]
        return next(c for c in containers if c["name"] == "worker")

    def worker_env(self) -> dict[str, Any]:
        """Plain env values by name; secret references as {"secret": name, "key": key}."""
        env: dict[str, Any] = {}
        for item in self.worker["env"]:
            if "value" in item:
                env[item["name"]] = item["value"]
            elif "secretKeyRef" in item.get("valueFrom", {}):
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = {"secret": ref["name"], "key": ref["key"]}
            else:
                env[item["name"]] = item["valueFrom"]
        return env


def render(files: Iterable[Path] = (), values: dict[str, Any] | None = None) -> Rendered:
    docs = yaml.safe_load_all(render_raw(files, values))
    return Rendered(tuple(doc for doc in docs if doc))


@functools.cache
def render_scenario(name: str) -> Rendered:
    return render([scenario_file(name)])


def load_values() -> dict[str, Any]:
    data = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data
