"""`helm lint`, `helm template` of every scenario, and schema validation of every rendered object."""

from __future__ import annotations

import copy

import pytest

from tests.helm.chart import CHART, KUBE_VERSION, SCENARIOS, helm, render_scenario, scenario_file
from tests.helm.validation import KEDA_CRD_DIR, KEDA_CRD_SHA256, sha256, validate

EXPECTED_SCENARIOS = {
    "minimal",
    "production-keda",
    "hpa",
    "fixed-replicas",
    "sasl-tls",
    "monitoring",
    "gateway",
    "redis-sentinel",
}


def test_every_scenario_has_a_values_file() -> None:
    assert set(SCENARIOS) == EXPECTED_SCENARIOS


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_strict(scenario: str) -> None:
    result = helm(
        "lint", "--strict", "--kube-version", KUBE_VERSION, str(CHART), "-f", str(scenario_file(scenario))
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_rendered_object_is_valid(scenario: str) -> None:
    rendered = render_scenario(scenario)
    assert "StatefulSet" in rendered.kinds()
    problems = {
        f"{obj['kind']}/{obj['metadata']['name']}": errors
        for obj in rendered.objects
        if (errors := validate(obj))
    }
    assert problems == {}


def test_scenarios_cover_every_kind_the_chart_can_render() -> None:
    kinds = set().union(*(render_scenario(s).kinds() for s in SCENARIOS))
    assert kinds == {
        "StatefulSet",
        "Deployment",
        "ScaledObject",
        "TriggerAuthentication",
        "HorizontalPodAutoscaler",
        "Job",
        "PersistentVolumeClaim",
        "ServiceAccount",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
        "Ingress",
    }


def test_vendored_keda_crds_are_unmodified() -> None:
    for name, digest in KEDA_CRD_SHA256.items():
        assert sha256(KEDA_CRD_DIR / name) == digest, f"{name} differs from KEDA v2.20.2"


# ------------------------------------------------- the validators can fail -------------------------


def test_validators_reject_unknown_fields_and_wrong_types() -> None:
    rendered = render_scenario("production-keda")

    scaled_object = copy.deepcopy(rendered.one("ScaledObject"))
    scaled_object["spec"]["pollingIntervall"] = 15
    scaled_object["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 20
    problems = validate(scaled_object)
    assert any("pollingIntervall" in p for p in problems)
    assert any("lagThreshold" in p and "string" in p for p in problems)

    auth = copy.deepcopy(rendered.one("TriggerAuthentication"))
    del auth["spec"]["secretTargetRef"][0]["key"]
    assert any("'key' is a required property" in p for p in validate(auth))

    deployment = copy.deepcopy(rendered.statefulset)
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert validate(deployment) != []

    monitoring = render_scenario("monitoring")
    rule = copy.deepcopy(monitoring.one("PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "15 minutes"
    assert validate(rule) != []
    monitor = copy.deepcopy(monitoring.one("ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    assert validate(monitor) != []

    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert validate(unknown) == ["no Kubernetes schema for example.com/v1 Widget: not validated"]
