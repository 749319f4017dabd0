"""The cluster itself: the pinned release, a Ready node, KEDA's external metrics API, the images."""

from __future__ import annotations

import json

from tests.k8s.conftest import IMAGE_REPOSITORY, IMAGE_TAG
from tests.support.cluster import Cluster

PINNED_KUBERNETES = "v1.34.4"


def test_every_component_runs_the_pinned_release(cluster: Cluster) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json"))
    assert version["clientVersion"]["gitVersion"] == PINNED_KUBERNETES
    assert version["serverVersion"]["gitVersion"] == PINNED_KUBERNETES
    node = cluster.get("nodes")["items"]
    assert len(node) == 1
    info = node[0]["status"]["nodeInfo"]
    assert info["kubeletVersion"] == PINNED_KUBERNETES
    assert info["containerRuntimeVersion"].startswith("containerd://")


def test_the_node_is_ready_with_the_bridge_network(cluster: Cluster) -> None:
    node = cluster.get("nodes")["items"][0]
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True", conditions
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == cluster.node_ip
    assert node["spec"]["podCIDR"], "the node has no pod CIDR for the bridge plugin"


def test_the_external_metrics_api_is_served_by_keda(cluster: Cluster) -> None:
    service = cluster.get("apiservice", "v1beta1.external.metrics.k8s.io")
    available = {c["type"]: c["status"] for c in service["status"]["conditions"]}
    assert available["Available"] == "True", service["status"]
    resources = json.loads(cluster.raw("/apis/external.metrics.k8s.io/v1beta1"))
    assert resources["groupVersion"] == "external.metrics.k8s.io/v1beta1"
    crds = {item["metadata"]["name"] for item in cluster.get("crd")["items"]}
    assert {"scaledobjects.keda.sh", "triggerauthentications.keda.sh", "scaledjobs.keda.sh"} <= crds


def test_the_worker_image_is_in_the_runtime(cluster: Cluster) -> None:
    names = cluster.ctr("images", "ls", "-q").split()
    assert f"{IMAGE_REPOSITORY}:{IMAGE_TAG}" in names
