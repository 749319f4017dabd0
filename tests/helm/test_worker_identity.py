"""The workers' Kafka identity is their pod name, so the pods must keep their names (issue 19).

A Deployment replaces a pod that died uncleanly under a new name: the new pod never fences the
old `transactional.id`, whose open transaction then holds back the results' last stable offset
for the transaction timeout. A StatefulSet's replacement takes the same name.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.helm.chart import SCENARIOS, RenderError, render, render_scenario
from tests.helm.test_rules import BASE


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_workers_are_a_statefulset_named_after_the_release(scenario: str) -> None:
    rendered = render_scenario(scenario)
    assert not rendered.of("Deployment", "worker"), "a Deployment renames replacements"
    sts = rendered.statefulset
    assert sts["metadata"]["name"] == "tts-tts-stream"
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    # The governing Service: rendered, headless, selecting exactly the workers.
    (headless,) = [s for s in rendered.all("Service") if s["metadata"]["name"] == sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    assert sts["spec"]["serviceName"] == "tts-tts-stream-headless", "stable across upgrades"
    assert "volumeClaimTemplates" not in sts["spec"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_kafka_identity_is_the_pod_name(scenario: str) -> None:
    env = render_scenario(scenario).worker_env()
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}


@pytest.mark.parametrize(("mode", "kind"), [("keda", "ScaledObject"), ("hpa", "HorizontalPodAutoscaler")])
def test_autoscalers_target_the_statefulset(mode: str, kind: str) -> None:
    rendered = render(values={**BASE, "autoscaling.mode": mode})
    target = rendered.one(kind)["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "StatefulSet",
        "tts-tts-stream",
    )
    assert "replicas" not in rendered.statefulset["spec"]


def test_the_metrics_service_is_the_only_one_the_service_monitor_selects() -> None:
    """The headless Service carries another component label: otherwise the ServiceMonitor would
    select both Services and scrape every worker twice."""
    rendered = render_scenario("monitoring")
    selector = rendered.one("ServiceMonitor")["spec"]["selector"]["matchLabels"]
    selected = [
        s["metadata"]["name"]
        for s in rendered.all("Service")
        if selector.items() <= s["metadata"]["labels"].items()
    ]
    assert selected == ["tts-tts-stream"]
    assert rendered.component("Service", "worker")["spec"].get("clusterIP") != "None"


def test_rollouts_replace_one_pod_at_a_time_without_surge() -> None:
    rendered = render_scenario("minimal")
    strategy = rendered.statefulset["spec"]["updateStrategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    staged = render(values={**BASE, "updateStrategy.rollingUpdate.partition": 2}).statefulset
    assert staged["spec"]["updateStrategy"]["rollingUpdate"]["partition"] == 2


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"updateStrategy.rollingUpdate.maxSurge": 1}, "additional properties 'maxSurge' not allowed"),
        ({"updateStrategy.type": "Recreate"}, "at '/updateStrategy/type': value must be one of"),
    ],
)
def test_deployment_strategies_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        render(values={**BASE, **values})


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_topology_spread_counts_pods_of_the_same_revision(scenario: str) -> None:
    """StatefulSet pods carry controller-revision-hash, not a Deployment's pod-template-hash."""
    spec = render_scenario(scenario).statefulset["spec"]["template"]["spec"]
    for constraint in spec.get("topologySpreadConstraints", []):
        assert constraint["matchLabelKeys"] == ["controller-revision-hash"]
