"""The local Kubernetes cluster (`make k8s-up`) as the tests drive it: kubectl, helm, containerd.

Everything goes through the real command-line tools a person would use, with the admin
kubeconfig the cluster scripts wrote. `cluster.env` (written by infra/k8s/up.sh) says where the
node is and at which addresses pods reach the local stack.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.stack import ROOT

CLUSTER_ENV = ROOT / ".infra" / "k8s" / "cluster.env"
HOW_TO_START_CLUSTER = "start the cluster with `make k8s-up` (root; see docs/deploy.md)"
CHART = ROOT / "helm" / "tts-stream"
HELM = ROOT / "scripts" / "helm.sh"


class ClusterUnavailable(RuntimeError):
    """The cluster the tests need is not running."""


@dataclass(frozen=True)
class Cluster:
    kubeconfig: str
    kubectl_path: str
    node_ip: str
    kafka_pod_bootstrap: str
    redis_pod_url: str
    s3_pod_endpoint: str
    containerd_sock: str

    @classmethod
    def from_env_file(cls, path: Path = CLUSTER_ENV) -> Cluster:
        if not path.is_file():
            raise ClusterUnavailable(f"{path} is missing: {HOW_TO_START_CLUSTER}")
        values = dict(
            line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and line[0] != "#"
        )
        return cls(
            kubeconfig=values["KUBECONFIG"],
            kubectl_path=values["TTS_K8S_KUBECTL"],
            node_ip=values["TTS_K8S_NODE_IP"],
            kafka_pod_bootstrap=values["TTS_K8S_KAFKA_POD_BOOTSTRAP"],
            redis_pod_url=values["TTS_K8S_REDIS_URL"],
            s3_pod_endpoint=values["TTS_K8S_S3_ENDPOINT_URL"],
            containerd_sock=values["TTS_K8S_CONTAINERD_SOCK"],
        )

    # ------------------------------------------------------------------------ kubectl ----------
    def kubectl(
        self, *args: str, input_text: str | None = None, timeout_s: float = 120, check: bool = True
    ) -> str:
        proc = subprocess.run(
            [self.kubectl_path, "--kubeconfig", self.kubeconfig, *args],
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}"
            )
        return proc.stdout

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def apply(self, manifest: dict[str, Any] | list[dict[str, Any]], namespace: str | None = None) -> None:
        docs = manifest if isinstance(manifest, list) else [manifest]
        ns = ["-n", namespace] if namespace else []
        self.kubectl("apply", *ns, "-f", "-", input_text=yaml.safe_dump_all(docs))

    def raw(self, path: str) -> str:
        return self.kubectl("get", "--raw", path)

    def ready(self) -> bool:
        try:
            return self.raw("/readyz").strip() == "ok"
        except (AssertionError, subprocess.TimeoutExpired, OSError):
            return False

    # --------------------------------------------------------------------------- helm ----------
    def helm(self, *args: str, timeout_s: float = 600) -> str:
        proc = subprocess.run(
            [str(HELM), "--kubeconfig", self.kubeconfig, *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} failed: {proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
            )
        return proc.stdout

    # ----------------------------------------------------------------------- containerd --------
    def ctr(self, *args: str, timeout_s: float = 120) -> str:
        proc = subprocess.run(
            ["ctr", "--address", self.containerd_sock, "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout


@dataclass
class Release:
    """One `helm install` of the chart in a namespace of its own."""

    cluster: Cluster
    name: str
    namespace: str
    values: dict[str, Any]
    values_file: Path
    history: list[str] = field(default_factory=list)

    @property
    def fullname(self) -> str:
        return f"{self.name}-tts-stream"

    def install(self, *, wait: bool = True, timeout: str = "6m") -> str:
        """`wait=False` where a post-install hook must run before the workers can be ready (the
        model Job): Helm 3 runs post-install hooks only after `--wait`; the hooks are still
        waited for, within `timeout`."""
        self.values_file.write_text(yaml.safe_dump(self.values))
        args = ["install", self.name, str(CHART), "-n", self.namespace, "-f", str(self.values_file)]
        args += ["--wait", "--timeout", timeout] if wait else ["--timeout", timeout]
        out = self.cluster.helm(*args)
        self.history.append("install")
        return out

    def upgrade(self, values: dict[str, Any], *, wait: bool = True, timeout: str = "8m") -> str:
        self.values = values
        self.values_file.write_text(yaml.safe_dump(self.values))
        args = ["upgrade", self.name, str(CHART), "-n", self.namespace, "-f", str(self.values_file)]
        if wait:
            args += ["--wait", "--timeout", timeout]
        out = self.cluster.helm(*args)
        self.history.append("upgrade")
        return out

    def uninstall(self) -> None:
        self.cluster.helm("uninstall", self.name, "-n", self.namespace, "--wait", "--timeout", "3m")

    # ------------------------------------------------------------------------ reading ----------
    def pods(self) -> list[dict[str, Any]]:
        selector = f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component=worker"
        items: list[dict[str, Any]] = self.cluster.get("pods", "-n", self.namespace, "-l", selector)["items"]
        return items

    def ready_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.pods() if _pod_ready(p) and not p["metadata"].get("deletionTimestamp")]

    def statefulset(self) -> dict[str, Any]:
        """The workers: a StatefulSet, so a replaced pod keeps its name (its Kafka identity)."""
        result: dict[str, Any] = self.cluster.get("statefulset", self.fullname, "-n", self.namespace)
        return result


def _pod_ready(pod: dict[str, Any]) -> bool:
    for condition in pod.get("status", {}).get("conditions", []):
        if condition["type"] == "Ready":
            return bool(condition["status"] == "True")
    return False


def pod_ready(pod: dict[str, Any]) -> bool:
    return _pod_ready(pod)


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, interval_s: float = 2.0) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")
