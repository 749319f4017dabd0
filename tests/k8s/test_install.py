"""`helm install` of the chart with KEDA and the espeak engine: every object the API server
accepts, the topics Job, the probes, requests answered exactly once, the metrics endpoint."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from tests.k8s.observe import keda_metric_name
from tests.k8s.traffic import assert_exactly_once, submit, unique_requests
from tests.support.cluster import Cluster, Release, pod_ready
from tests.support.kafka_io import ResultReader


@pytest.mark.timeout(600)
def test_install_answers_requests_and_every_object_is_live(
    cluster: Cluster, make_release: Callable[..., Release], kafka_config: dict[str, Any], s3_client: Any
) -> None:
    def restricted_egress(values: dict[str, Any]) -> None:
        # what a locked-down install would apply: egress only to the stack's three ports
        ports = [
            int(a.rsplit(":", 1)[1].split("/")[0])
            for a in (cluster.kafka_pod_bootstrap, cluster.redis_pod_url, cluster.s3_pod_endpoint)
        ]
        values["networkPolicy"] = {
            "restrictEgress": True,
            "egressTo": [
                {
                    "to": [{"ipBlock": {"cidr": f"{cluster.node_ip}/32"}}],
                    "ports": [{"port": p, "protocol": "TCP"} for p in ports],
                }
            ],
        }

    release = make_release(values=restricted_egress)
    started = time.monotonic()
    release.install()
    install_s = time.monotonic() - started
    ns, name = release.namespace, release.fullname
    topics = release.values["topics"]

    # the pre-install hook Job made both lanes with the chart's partition count
    metadata = AdminClient(kafka_config).list_topics(timeout=10)
    for lane in ("requests", "bulk", "results", "dlq"):
        assert topics[lane] in metadata.topics, f"the topics Job did not create {topics[lane]}"
    assert len(metadata.topics[topics["requests"]].partitions) == topics["partitions"]

    # one worker, Ready through its startup probe, never restarted
    [pod] = release.pods()
    assert pod_ready(pod)
    worker = next(c for c in pod["spec"]["containers"] if c["name"] == "worker")
    assert worker["startupProbe"]["httpGet"]["path"] == "/startupz"
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0

    # requests from outside the cluster, answered once each (read_committed), audio in S3
    reader = ResultReader(kafka_config, topics["results"])
    try:
        requests = unique_requests(12, "install")
        ids = submit(kafka_config, topics["requests"], requests)
        results = assert_exactly_once(reader, ids, timeout_s=180)
    finally:
        reader.close()
    audio = results[ids[0]][0].audio
    assert audio is not None
    bucket, key = audio.uri.removeprefix("s3://").split("/", 1)
    assert s3_client.head_object(Bucket=bucket, Key=key)["ContentLength"] == audio.size_bytes

    # the metrics endpoint, scraped through the Service (the API server's service proxy)
    metrics = cluster.raw(f"/api/v1/namespaces/{ns}/services/{name}:http/proxy/metrics")
    assert "tts_requests_total" in metrics
    assert "tts_build_info" in metrics

    # KEDA took the StatefulSet: a Ready ScaledObject, the HPA it made with both lanes' metrics
    scaled = cluster.get("scaledobject", name, "-n", ns)
    conditions = {c["type"]: c["status"] for c in scaled["status"]["conditions"]}
    assert conditions["Ready"] == "True", scaled["status"]
    hpa = cluster.get("hpa", f"keda-hpa-{name}", "-n", ns)
    metric_names = {m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    bulk_metric = keda_metric_name(1, topics["bulk"])
    assert metric_names == {keda_metric_name(0, topics["requests"]), bulk_metric}
    statefulset = release.statefulset()
    assert "replicas" not in statefulset["spec"] or statefulset["spec"]["replicas"] == 1
    # stable names: the pod is ordinal 0, its Kafka identity the pod name
    assert [p["metadata"]["name"] for p in release.pods()] == [f"{name}-0"]
    cluster.get("service", statefulset["spec"]["serviceName"], "-n", ns)
    value = json.loads(
        cluster.raw(
            f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{bulk_metric}"
            f"?labelSelector=scaledobject.keda.sh%2Fname%3D{name}"
        )
    )
    assert value["items"][0]["metricName"] == bulk_metric

    # the rest of what the chart renders exists as the API server stored it
    pdb = cluster.get("pdb", name, "-n", ns)
    assert pdb["spec"]["maxUnavailable"] == 1
    # stored and valid, but not enforced: the bridge CNI plugin has no NetworkPolicy support
    policy = cluster.get("networkpolicy", name, "-n", ns)
    assert policy["spec"]["podSelector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    cluster.get("serviceaccount", name, "-n", ns)
    print(f"\n[k8s] helm install --wait took {install_s:.0f} s")
