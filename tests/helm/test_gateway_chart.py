"""The gateway's objects: rendered only when enabled, wired to the same services and Secrets as
the workers, hardened like them, and refused at render time when a required value is missing."""

from __future__ import annotations

import pytest

from tests.helm.chart import RenderError, render, render_scenario, scenario_file


def test_the_gateway_is_off_by_default() -> None:
    rendered = render_scenario("minimal")
    components = {o["metadata"]["labels"].get("app.kubernetes.io/component") for o in rendered.objects}
    assert "gateway" not in components
    assert "Ingress" not in rendered.kinds()


def test_the_gateway_scenario_renders_every_gateway_object() -> None:
    rendered = render_scenario("gateway")
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"):
        rendered.component(kind, "gateway")
    ingress = rendered.one("Ingress")
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert ingress["spec"]["tls"][0]["hosts"] == ["tts.example.com"]
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert path["path"] == "/v1"  # probes and /metrics are not published


def test_the_gateway_pod_shares_the_workers_services_and_reads_hashed_keys() -> None:
    rendered = render_scenario("gateway")
    deployment = rendered.component("Deployment", "gateway")
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].endswith("-gateway")
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    worker_env = rendered.worker_env()
    for shared in (
        "TTS_KAFKA_BOOTSTRAP_SERVERS",
        "TTS_TOPICS_REQUESTS",
        "TTS_TOPICS_RESULTS",
        "TTS_GROUP_ID",
    ):
        assert env[shared] == worker_env[shared]
    assert env["TTS_REDIS_URL"] == {"secretKeyRef": {"name": "tts-redis", "key": "redis-url"}}
    assert env["TTS_GATEWAY_OPENAI_VOICES"] == "alloy=preset:en-us,echo=preset:en-gb"
    assert env["TTS_GATEWAY_CORS_ORIGINS"] == "https://app.example.com"
    keys = next(v for v in pod["volumes"] if v["name"] == "api-keys")
    assert keys["secret"]["secretName"] == "tts-gateway-keys"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "api-keys")
    assert "subPath" not in mount  # so the file follows Secret updates
    assert env["TTS_GATEWAY_API_KEYS_FILE"].startswith(mount["mountPath"] + "/")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["terminationGracePeriodSeconds"] > int(env["TTS_GATEWAY_MAX_TIMEOUT_S"])
    hpa = rendered.component("HorizontalPodAutoscaler", "gateway")
    assert {m["type"] for m in hpa["spec"]["metrics"]} == {"Resource", "Pods"}
    selector = rendered.component("Service", "gateway")["spec"]["selector"]
    assert selector["app.kubernetes.io/component"] == "gateway"


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"gateway.apiKeys.existingSecret": ""}, "gateway.apiKeys.existingSecret is required"),
        ({"gateway.maxTimeoutSeconds": 200}, "must exceed gateway.maxTimeoutSeconds"),
        ({"gateway.ingress.host": ""}, "gateway.ingress.host is required"),
    ],
)
def test_missing_gateway_values_fail_the_render(values: dict[str, object], says: str) -> None:
    with pytest.raises(RenderError, match=says):
        render([scenario_file("gateway")], values)
