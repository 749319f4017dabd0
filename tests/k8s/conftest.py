"""Fixtures for the tests on the local Kubernetes cluster (`make k8s-up`, then `make k8s-e2e`).

Each test installs the chart into a namespace of its own, with topics and a consumer group of its
own, so releases never see each other's traffic. Requests are produced from outside the cluster
(the host, through the stack's 127.0.0.1 listener) and results are read there with a
read_committed consumer, the way a subscriber would. A missing cluster fails the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster, ClusterUnavailable, Release
from tests.support.stack import StackAddresses

IMAGE_REPOSITORY = "tts-k8s.local/tts-stream"
IMAGE_TAG = "0.1.0-cpu"


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    try:
        found = Cluster.from_env_file()
    except ClusterUnavailable as exc:
        pytest.fail(str(exc))
    if not found.ready():
        pytest.fail("the cluster's API server does not answer /readyz: run `make k8s-up`")
    return found


def base_values(cluster: Cluster, stack: StackAddresses, suffix: str) -> dict[str, Any]:
    """Chart values for this cluster: the cpu image, the espeak engine, the local stack as the pods
    see it, four partitions per lane, and KEDA tuned to react within seconds instead of minutes."""
    return {
        "image": {"repository": IMAGE_REPOSITORY, "tag": IMAGE_TAG, "pullPolicy": "Never"},
        "kafka": {"bootstrapServers": cluster.kafka_pod_bootstrap, "groupId": f"k8s-workers-{suffix}"},
        "topics": {
            "requests": f"k8s-{suffix}.requests",
            "bulk": f"k8s-{suffix}.requests.bulk",
            "results": f"k8s-{suffix}.results",
            "dlq": f"k8s-{suffix}.dlq",
            "backfillCheckpoints": f"k8s-{suffix}.backfill",
            "dlqReplays": f"k8s-{suffix}.dlq.replays",
            "partitions": 4,
            "job": {"replicationFactor": 1, "minInsyncReplicas": 1},
        },
        "worker": {"engine": "espeak", "device": "cpu", "drainTimeoutSeconds": 20, "logLevel": "INFO"},
        "redis": {"url": cluster.redis_pod_url},
        "s3": {
            "endpointUrl": cluster.s3_pod_endpoint,
            "existingSecret": "tts-s3",
            "audioBucket": stack.audio_bucket,
            "voicesBucket": stack.voices_bucket,
        },
        "model": {"persistence": {"enabled": False}},
        # Only the cpu image is built for this cluster; it has the whole CLI, so it stands in for
        # the gateway image that the topics Job runs.
        "gateway": {"image": {"repository": IMAGE_REPOSITORY, "tag": IMAGE_TAG}},
        "gpu": {"count": 0},
        # two shared cores: small requests so four workers fit on the node
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}},
        "tolerations": [],
        "terminationGracePeriodSeconds": 40,
        "autoscaling": {
            "mode": "keda",
            "minReplicas": 1,
            "maxReplicas": 4,
            "keda": {
                "pollingInterval": 5,
                "fallback": {"enabled": True},
                "lanes": {"interactive": {"lagThreshold": 20}, "bulk": {"lagThreshold": 50}},
            },
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0, "pods": 4, "periodSeconds": 15},
                "scaleDown": {"stabilizationWindowSeconds": 30, "pods": 1, "periodSeconds": 15},
            },
        },
    }


@pytest.fixture
def make_release(
    cluster: Cluster, stack: StackAddresses, tmp_path: Path, kafka_config: dict[str, Any], s3_client: Any
) -> Iterator[Callable[..., Release]]:
    """Build (not install) a release in a fresh namespace holding the S3 credentials Secret; the
    namespace is deleted afterwards with everything in it."""
    namespaces: list[str] = []

    def make(name: str = "tts", values: Callable[[dict[str, Any]], None] | None = None) -> Release:
        suffix = uuid.uuid4().hex[:8]
        namespace = f"e2e-{suffix}"
        cluster.kubectl("create", "namespace", namespace)
        namespaces.append(namespace)
        # the chart claims the restricted Pod Security Standard: let the API server enforce it
        cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
        cluster.kubectl(
            "-n",
            namespace,
            "create",
            "secret",
            "generic",
            "tts-s3",
            f"--from-literal=access-key-id={stack.s3_access_key}",
            f"--from-literal=secret-access-key={stack.s3_secret_key}",
        )
        chart_values = base_values(cluster, stack, suffix)
        if values is not None:
            values(chart_values)
        return Release(cluster, name, namespace, chart_values, tmp_path / f"values-{suffix}.yaml")

    yield make
    for namespace in namespaces:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
