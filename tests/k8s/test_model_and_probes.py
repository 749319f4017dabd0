"""The shared model volume filled once by the chart's hook Job from object storage while the
workers wait for it, and the startup probe waiting out a slow model load instead of killing it."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.cluster import Cluster, Release, pod_ready, wait_for
from tests.support.stack import ROOT

VOLUMES = ROOT / ".infra" / "k8s" / "volumes"
LOAD_SECONDS = 40


@pytest.mark.timeout(600)
def test_a_job_pulls_the_model_into_the_claim_once_and_the_workers_wait_for_it(
    cluster: Cluster, make_release: Callable[..., Release], s3_client: Any
) -> None:
    bucket = f"tts-models-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=bucket)
    files = {"cosyvoice3.yaml": b"sample_rate: 24000\n", "llm.pt": os.urandom(3 * 1024 * 1024)}
    for name, body in files.items():
        s3_client.put_object(Bucket=bucket, Key=f"model-v1/{name}", Body=body)

    def with_model(values: dict[str, Any]) -> None:
        values["model"] = {
            "persistence": {"enabled": True, "size": "1Gi", "accessModes": ["ReadWriteMany"]},
            "pull": {"enabled": True, "source": f"s3://{bucket}/model-v1", "timeoutSeconds": 300},
        }
        values["autoscaling"]["minReplicas"] = 2  # two replicas share the claim, neither writes it

    release = make_release(values=with_model)
    # no provisioner on this node: a hostPath volume made for exactly this claim, owned by the
    # image's user (hostPath volumes get no fsGroup treatment)
    directory = VOLUMES / release.namespace
    directory.mkdir(parents=True, exist_ok=True)
    os.chown(directory, 10001, 10001)
    claim = f"{release.fullname}-models"
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"model-{release.namespace}"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(directory), "type": "Directory"},
                "claimRef": {"namespace": release.namespace, "name": claim},
            },
        }
    )
    try:
        # No --wait: Helm runs the post-install model Job only after it, and the workers wait for
        # the Job. Helm still waits for the Job itself.
        release.install(wait=False)
        job = cluster.get("job", f"{release.fullname}-models", "-n", release.namespace)
        assert job["status"].get("succeeded") == 1
        pvc = cluster.get("pvc", claim, "-n", release.namespace)
        assert pvc["status"]["phase"] == "Bound"
        wait_for("two ready workers", lambda: len(release.ready_pods()) == 2, 240)
        pods = release.pods()
        for worker in pods:
            init = worker["status"]["initContainerStatuses"][0]
            assert init["name"] == "models-wait"
            assert init["state"]["terminated"]["exitCode"] == 0
        pod = pods[0]
        for name, body in files.items():
            pulled = directory / name
            assert pulled.is_file(), f"{name} was not pulled into the claim"
            assert hashlib.sha256(pulled.read_bytes()).digest() == hashlib.sha256(body).digest()
        # the worker sees the files read-only at the mount path
        listing = cluster.kubectl(
            "-n", release.namespace, "exec", pod["metadata"]["name"], "-c", "worker", "--", "ls", "/models"
        )
        assert set(listing.split()) >= set(files)
        denied = cluster.kubectl(
            "-n",
            release.namespace,
            "exec",
            pod["metadata"]["name"],
            "-c",
            "worker",
            "--",
            "touch",
            "/models/x",
            check=False,
        )
        assert not (directory / "x").exists(), f"the worker could write to its model volume: {denied}"
    finally:
        cluster.kubectl("delete", "pv", f"model-{release.namespace}", "--wait=false", check=False)


@pytest.mark.timeout(600)
def test_the_startup_probe_waits_for_a_slow_model_load(
    cluster: Cluster, make_release: Callable[..., Release]
) -> None:
    """A load that outlasts the liveness budget many times over: the startup probe holds the other
    probes back, so the pod becomes ready once loaded, with no restart."""

    def slow_engine(values: dict[str, Any]) -> None:
        values["worker"]["engine"] = "null"
        values["worker"]["extraEnv"] = [{"name": "TTS_NULL_LOAD_SECONDS", "value": str(LOAD_SECONDS)}]
        values["probes"] = {
            "startup": {"periodSeconds": 2, "failureThreshold": 60, "timeoutSeconds": 2},
            "readiness": {"periodSeconds": 2, "failureThreshold": 1, "timeoutSeconds": 2},
            "liveness": {"periodSeconds": 2, "failureThreshold": 1, "timeoutSeconds": 2},
        }

    release = make_release(values=slow_engine)
    started = time.monotonic()
    release.install()
    ready_s = time.monotonic() - started
    [pod] = release.pods()
    assert pod_ready(pod)
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    events = cluster.get(
        "events",
        "-n",
        release.namespace,
        "--field-selector",
        f"involvedObject.name={pod['metadata']['name']}",
    )["items"]
    reasons = [(e["reason"], e.get("message", "")) for e in events]
    assert any(r == "Unhealthy" and "Startup probe failed" in m for r, m in reasons), reasons
    assert not any(r == "Killing" for r, _ in reasons), reasons
    assert ready_s >= LOAD_SECONDS
    print(f"\n[k8s] a {LOAD_SECONDS} s model load: Ready after {ready_s:.0f} s (install --wait), no restart")
