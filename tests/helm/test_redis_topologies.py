"""Redis with Sentinel or as a Redis Cluster, as the chart passes it to the workers and the gateway
(docs/deploy.md), and the durability check's setting."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.adapters.redis_connect import RedisMode, redis_topology
from consumer.settings import WorkerSettings
from tests.helm.chart import RenderError, render, render_scenario
from tests.helm.test_worker_env import resolve

BASE = {
    "kafka.bootstrapServers": "kafka:9092",
    "redis.existingSecret": "tts-redis",
    "model.persistence.existingClaim": "tts-models",
}
GATEWAY = {
    "gateway.enabled": True,
    "gateway.apiKeys.existingSecret": "tts-gateway-keys",
}


def _gateway_env(rendered: Any) -> dict[str, Any]:
    (container,) = rendered.component("Deployment", "gateway")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_sentinels_reach_the_workers_as_settings_that_make_a_sentinel_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rendered = render_scenario("redis-sentinel")
    env = rendered.worker_env()
    assert env["TTS_REDIS_SENTINELS"] == (
        "redis-sentinel-0.redis-sentinel:26379,redis-sentinel-1.redis-sentinel:26379,"
        "redis-sentinel-2.redis-sentinel:26379"
    )
    assert env["TTS_REDIS_SENTINEL_MASTER"] == "tts"
    assert env["TTS_REDIS_SENTINEL_PASSWORD"] == {"secret": "tts-redis-sentinel", "key": "sentinel-password"}
    assert "TTS_REDIS_CLUSTER_NODES" not in env
    for name, value in resolve(rendered.worker["env"]).items():
        monkeypatch.setenv(name, value)
    topology = redis_topology(WorkerSettings())
    assert topology.mode is RedisMode.SENTINEL and topology.sentinel_master == "tts"
    assert len(topology.sentinels) == 3 and topology.sentinel_password is not None


def test_cluster_nodes_reach_the_workers_and_the_gateway() -> None:
    nodes = ["redis-cluster-0.redis:6379", "redis-cluster-1.redis:6379"]
    rendered = render(values={**BASE, **GATEWAY, "redis.clusterNodes": nodes})
    assert rendered.worker_env()["TTS_REDIS_CLUSTER_NODES"] == ",".join(nodes)
    gateway = _gateway_env(rendered)
    assert gateway["TTS_REDIS_CLUSTER_NODES"] == ",".join(nodes)
    assert "TTS_REDIS_SENTINELS" not in gateway


def test_sentinels_and_cluster_nodes_together_are_refused() -> None:
    with pytest.raises(RenderError, match=r"redis\.sentinels .* or redis\.clusterNodes .*, not both"):
        render(values={**BASE, "redis.sentinels": ["s:26379"], "redis.clusterNodes": ["c:6379"]})


def test_a_sentinel_address_without_a_port_is_refused_by_the_schema() -> None:
    with pytest.raises(RenderError, match="/redis/sentinels/0"):
        render(values={**BASE, "redis.sentinels": ["redis-sentinel"]})


def test_the_durability_check_is_enforced_unless_told_otherwise() -> None:
    assert render_scenario("minimal").worker_env()["TTS_DURABILITY_CHECK"] == "enforce"
    assert (
        render(values={**BASE, "worker.durabilityCheck": "warn"}).worker_env()["TTS_DURABILITY_CHECK"]
        == "warn"
    )
    with pytest.raises(RenderError, match="/worker/durabilityCheck"):
        render(values={**BASE, "worker.durabilityCheck": "strict"})
