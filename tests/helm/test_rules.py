"""The chart's rules, asserted on what it renders for every scenario, and the renders it must refuse."""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from typing import Any

import pytest

from consumer.adapters.kafka import consumer_config
from consumer.health import HealthServer, HealthState
from consumer.metrics import Metrics
from tests.helm.chart import SCENARIOS, Rendered, RenderError, load_values, render, render_scenario

KEDA_OR_HPA = [s for s in SCENARIOS if s != "fixed-replicas"]
BASE = {
    "kafka.bootstrapServers": "kafka:9092",
    "redis.url": "redis://redis:6379/0",
    "model.persistence.existingClaim": "tts-models",
}


def containers_of(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def pod_specs(rendered: Rendered) -> list[dict[str, Any]]:
    return [
        obj["spec"]["template"]["spec"]
        for obj in rendered.objects
        if obj["kind"] in {"StatefulSet", "Deployment", "Job"}
    ]


def topic_partitions(rendered: Rendered, scenario_partitions: int | None = None) -> int:
    job = rendered.component("Job", "topics")
    args = job["spec"]["template"]["spec"].get(
        "initContainers", job["spec"]["template"]["spec"]["containers"]
    )[0]["args"]
    return int(args[args.index("--partitions") + 1]) if scenario_partitions is None else scenario_partitions


# ---------------------------------------------------------------- replicas -----------------------


@pytest.mark.parametrize("scenario", KEDA_OR_HPA)
def test_no_replicas_field_when_an_autoscaler_owns_the_count(scenario: str) -> None:
    rendered = render_scenario(scenario)
    assert "replicas" not in rendered.statefulset["spec"]
    assert len(rendered.all("ScaledObject")) + len(rendered.of("HorizontalPodAutoscaler", "worker")) == 1


def test_fixed_replicas_without_autoscaling() -> None:
    rendered = render_scenario("fixed-replicas")
    assert rendered.statefulset["spec"]["replicas"] == 3
    assert not rendered.all("ScaledObject")
    assert not rendered.all("HorizontalPodAutoscaler")


@pytest.mark.parametrize("scenario", KEDA_OR_HPA)
def test_max_replicas_never_exceed_partitions(scenario: str) -> None:
    rendered = render_scenario(scenario)
    partitions = topic_partitions(rendered)
    for so in rendered.all("ScaledObject"):
        assert so["spec"]["maxReplicaCount"] <= partitions
    for hpa in rendered.of("HorizontalPodAutoscaler", "worker"):  # the gateway reads no partitions
        assert hpa["spec"]["maxReplicas"] <= partitions


def test_render_fails_when_max_replicas_exceed_partitions() -> None:
    with pytest.raises(RenderError, match=r"autoscaling.maxReplicas \(13\) exceeds topics.partitions \(12\)"):
        render(values={**BASE, "autoscaling.maxReplicas": 13})
    with pytest.raises(RenderError, match=r"autoscaling.maxReplicas \(9\) exceeds topics.partitions \(8\)"):
        render(
            values={**BASE, "autoscaling.mode": "hpa", "topics.partitions": 8, "autoscaling.maxReplicas": 9}
        )
    with pytest.raises(RenderError, match=r"replicaCount \(5\) exceeds topics.partitions \(4\)"):
        render(values={**BASE, "autoscaling.mode": "none", "topics.partitions": 4, "replicaCount": 5})
    # At the partition count exactly it renders.
    so = render(values={**BASE, "topics.partitions": 6, "autoscaling.maxReplicas": 6}).one("ScaledObject")
    assert so["spec"]["maxReplicaCount"] == 6


# ---------------------------------------------------------------- probes and lifecycle -----------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_probes_point_at_the_worker_endpoints(scenario: str) -> None:
    rendered = render_scenario(scenario)
    worker = rendered.worker
    env = rendered.worker_env()
    (port,) = [p for p in worker["ports"] if p["name"] == "http"]
    assert port["containerPort"] == int(env["TTS_HTTP_PORT"])
    assert env["TTS_HTTP_HOST"] == "0.0.0.0"
    paths = {}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = worker[probe]["httpGet"]
        assert get["port"] == "http"
        assert "initialDelaySeconds" not in worker[probe], "the startup probe owns the model load"
        paths[probe] = get["path"]
    assert paths == {"startupProbe": "/startupz", "readinessProbe": "/readyz", "livenessProbe": "/livez"}
    assert worker["args"] == ["worker"]


def test_probe_and_scrape_paths_exist_on_the_worker_http_server() -> None:
    """The rendered paths, asked of the worker's real health server: none may be a 404."""
    rendered = render_scenario("monitoring")
    paths = [
        rendered.worker[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")
    ]
    paths.append(rendered.one("ServiceMonitor")["spec"]["endpoints"][0]["path"])
    paths.append(rendered.statefulset["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"])
    metrics = Metrics()
    server = HealthServer(HealthState(metrics, liveness_stall_s=60), metrics, "127.0.0.1", 0)
    server.start()
    try:
        for path in [*paths, "/no-such-endpoint"]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as response:
                    status = response.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            if path == "/no-such-endpoint":
                assert status == 404  # the check below can fail
            else:
                assert status in {200, 503}, f"{path} answered {status}"
    finally:
        server.stop()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_grace_period_covers_the_drain(scenario: str) -> None:
    rendered = render_scenario(scenario)
    pod = rendered.statefulset["spec"]["template"]["spec"]
    drain = float(rendered.worker_env()["TTS_DRAIN_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] >= math.ceil(drain) + 10


def test_render_fails_when_the_grace_period_is_shorter_than_the_drain() -> None:
    with pytest.raises(RenderError, match=r"terminationGracePeriodSeconds \(30\) must be at least .* = 40"):
        render(values={**BASE, "terminationGracePeriodSeconds": 30})
    with pytest.raises(RenderError, match=r"terminationGracePeriodSeconds \(60\) must be at least .* = 70"):
        render(values={**BASE, "worker.drainTimeoutSeconds": 60})


# ---------------------------------------------------------------- security ----------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_runs_restricted(scenario: str) -> None:
    rendered = render_scenario(scenario)
    specs = pod_specs(rendered)
    # The workers and the topics Job, the model Job and the gateway where they are rendered.
    assert len(specs) == 2 + len(rendered.of("Deployment", "gateway")) + len(rendered.of("Job", "models"))
    for spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        assert not spec.get("hostNetwork")
        assert not spec.get("hostPID")
        for container in containers_of(spec):
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["readOnlyRootFilesystem"] is True
            assert ctx["capabilities"] == {"drop": ["ALL"]}
            assert not ctx.get("privileged")
            assert ctx["runAsNonRoot"] is True
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert not rendered.all("Secret"), "credentials only ever come from existing Secrets"


# ---------------------------------------------------------------- one consumer group -------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_one_consumer_group_and_one_set_of_topics_everywhere(scenario: str) -> None:
    rendered = render_scenario(scenario)
    env = rendered.worker_env()
    group = env["TTS_GROUP_ID"]
    job_pod = rendered.component("Job", "topics")["spec"]["template"]["spec"]
    init_group = [c for c in containers_of(job_pod) if c["args"][:2] == ["topics", "init-group"]]
    for container in init_group:
        args = container["args"]
        assert args[args.index("--group") + 1] == group
        topics = [args[i + 1] for i, a in enumerate(args) if a == "--topic"]
        assert topics == [env["TTS_TOPICS_REQUESTS"], env["TTS_TOPICS_BULK"]]
    for so in rendered.all("ScaledObject"):
        triggers = so["spec"]["triggers"]
        assert {t["metadata"]["consumerGroup"] for t in triggers} == {group}
        assert {t["metadata"]["bootstrapServers"] for t in triggers} == {env["TTS_KAFKA_BOOTSTRAP_SERVERS"]}
        assert [t["metadata"]["topic"] for t in triggers] == [
            env["TTS_TOPICS_REQUESTS"],
            env["TTS_TOPICS_BULK"],
        ]


def test_the_group_follows_the_single_value() -> None:
    rendered = render(values={**BASE, "kafka.groupId": "speech-eu"})
    assert rendered.worker_env()["TTS_GROUP_ID"] == "speech-eu"
    triggers = rendered.one("ScaledObject")["spec"]["triggers"]
    assert {t["metadata"]["consumerGroup"] for t in triggers} == {"speech-eu"}


# ---------------------------------------------------------------- KEDA ---------------------------


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s not in {"hpa", "fixed-replicas"}])
def test_keda_triggers_match_the_worker_and_the_broker(scenario: str) -> None:
    so = render_scenario(scenario).one("ScaledObject")
    worker_reset = consumer_config(
        {},
        group_id="g",
        instance_id="i",
        group_protocol="consumer",
        remote_assignor="range",
        session_timeout_ms=1,
        max_poll_interval_ms=1,
    )["auto.offset.reset"]
    for trigger in so["spec"]["triggers"]:
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert meta["offsetResetPolicy"] == worker_reset
        assert meta["allowIdleConsumers"] == "false"
        assert meta["scaleToZeroOnInvalidOffset"] == "false"
        major, minor = (int(x) for x in meta["version"].split(".")[:2])
        assert (major, minor) >= (2, 1), "Kafka 4 brokers reject protocol versions below 2.1"
        assert int(meta["lagThreshold"]) > 0
    spec = so["spec"]
    assert spec["fallback"]["behavior"] == "currentReplicasIfHigher"
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] >= 60
    assert behavior["scaleUp"]["policies"][0]["type"] == "Pods"
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300


def test_scale_to_zero_waits_longer_than_a_model_load() -> None:
    rendered = render_scenario("production-keda")
    spec = rendered.one("ScaledObject")["spec"]
    startup = rendered.worker["startupProbe"]
    model_load_budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert spec["minReplicaCount"] == 0
    assert spec["cooldownPeriod"] >= model_load_budget
    assert spec["initialCooldownPeriod"] >= model_load_budget
    assert {t["metadata"]["activationLagThreshold"] for t in spec["triggers"]} == {"0"}


def test_sasl_tls_reaches_the_worker_the_job_and_keda_from_the_same_secrets() -> None:
    rendered = render_scenario("sasl-tls")
    env = rendered.worker_env()
    assert env["TTS_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["TTS_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-256"
    assert env["TTS_KAFKA_SASL_USERNAME"] == {"secret": "tts-kafka-sasl", "key": "user"}
    assert env["TTS_KAFKA_SASL_PASSWORD"] == {"secret": "tts-kafka-sasl", "key": "pass"}
    ca_path = env["TTS_KAFKA_SSL_CA_LOCATION"]
    for spec in pod_specs(rendered):
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["kafka-ca"]["secret"]["secretName"] == "tts-kafka-ca"
        for container in containers_of(spec):
            if container["name"] == "models-pull":
                continue
            mounts = {m["name"]: m for m in container["volumeMounts"]}
            assert ca_path == f"{mounts['kafka-ca']['mountPath']}/ca.pem"
            assert mounts["kafka-ca"]["readOnly"] is True
    so = rendered.one("ScaledObject")
    for trigger in so["spec"]["triggers"]:
        assert trigger["metadata"]["sasl"] == "scram_sha256"
        assert trigger["metadata"]["tls"] == "enable"
        assert (
            trigger["authenticationRef"]["name"] == rendered.one("TriggerAuthentication")["metadata"]["name"]
        )
    refs = {
        r["parameter"]: (r["name"], r["key"])
        for r in rendered.one("TriggerAuthentication")["spec"]["secretTargetRef"]
    }
    assert refs == {
        "username": ("tts-kafka-sasl", "user"),
        "password": ("tts-kafka-sasl", "pass"),
        "ca": ("tts-kafka-ca", "ca.pem"),
    }
    assert env["TTS_REDIS_URL"] == {"secret": "tts-redis", "key": "url"}
    assert env["TTS_S3_SECRET_ACCESS_KEY"] == {"secret": "tts-s3", "key": "secret-access-key"}


def test_plain_kafka_needs_no_trigger_authentication() -> None:
    rendered = render_scenario("minimal")
    assert not rendered.all("TriggerAuthentication")
    for trigger in rendered.one("ScaledObject")["spec"]["triggers"]:
        assert "authenticationRef" not in trigger
        assert "sasl" not in trigger["metadata"]


# ---------------------------------------------------------------- GPU, model, placement ----------


def test_default_pod_gets_a_gpu_and_a_read_only_model() -> None:
    rendered = render_scenario("minimal")
    resources = rendered.worker["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"]["nvidia.com/gpu"] == 1
    mounts = {m["name"]: m for m in rendered.worker["volumeMounts"]}
    assert mounts["models"]["readOnly"] is True
    volumes = {v["name"]: v for v in rendered.statefulset["spec"]["template"]["spec"]["volumes"]}
    claim = volumes["models"]["persistentVolumeClaim"]
    assert claim["readOnly"] is True
    pvc = rendered.one("PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == claim["claimName"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert rendered.worker_env()["TTS_MODEL_DIR"] == "/models"
    tolerations = rendered.statefulset["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations


def test_a_shared_claim_is_filled_once_by_a_job_and_the_workers_only_wait() -> None:
    rendered = render_scenario("production-keda")
    spec = rendered.statefulset["spec"]["template"]["spec"]
    source = "s3://tts-models-prod/cosyvoice2/CosyVoice2-0.5B"
    (wait,) = spec["initContainers"]
    assert wait["args"] == ["models", "wait", "--dir", "/models", "--source", source, "--timeout-s", "3600"]
    assert {m["name"]: m.get("readOnly") for m in wait["volumeMounts"]}["models"] is True
    assert not any(e["name"].startswith("TTS_S3_") for e in wait["env"]), "waiting reads no bucket"
    assert {m["name"]: m.get("readOnly") for m in rendered.worker["volumeMounts"]}["models"] is True
    claim = {v["name"]: v for v in spec["volumes"]}["models"]["persistentVolumeClaim"]
    assert claim == {"claimName": "tts-models-cosyvoice2", "readOnly": True}
    assert rendered.worker_env()["TTS_MODEL_DIR"] == "/models/CosyVoice2-0.5B"
    assert not rendered.all("PersistentVolumeClaim"), "an existing claim is used, none created"

    job = rendered.component("Job", "models")
    annotations = job["metadata"]["annotations"]
    # Jobs are immutable, so it is a hook; post-install because a created claim exists only then.
    assert annotations["helm.sh/hook"] == "post-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"
    assert int(annotations["helm.sh/hook-weight"]) > int(
        rendered.component("Job", "topics")["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    pod = job["spec"]["template"]["spec"]
    (pull,) = pod["containers"]
    assert pull["args"] == ["models", "pull", "--source", source, "--dest", "/models"]
    assert pull["image"] == rendered.worker["image"]
    assert {m["name"]: m.get("readOnly", False) for m in pull["volumeMounts"]}["models"] is False
    assert {v["name"]: v for v in pod["volumes"]}["models"]["persistentVolumeClaim"] == {
        "claimName": "tts-models-cosyvoice2"
    }
    assert pod["serviceAccountName"] == spec["serviceAccountName"], "S3 through the same pod identity"
    assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "models"


def test_without_persistence_each_pod_pulls_into_its_own_empty_dir() -> None:
    rendered = render(
        values={
            **BASE,
            "model.persistence.enabled": False,
            "model.pull.enabled": True,
            "model.pull.source": "s3://models/cv2",
        }
    )
    spec = rendered.statefulset["spec"]["template"]["spec"]
    (pull,) = spec["initContainers"]
    assert pull["args"] == ["models", "pull", "--source", "s3://models/cv2", "--dest", "/models"]
    assert {m["name"]: m.get("readOnly", False) for m in pull["volumeMounts"]}["models"] is False
    assert "emptyDir" in {v["name"]: v for v in spec["volumes"]}["models"]
    assert not rendered.of("Job", "models"), "nothing shared to fill once"


def test_cpu_workers_request_no_gpu_and_mount_no_model() -> None:
    rendered = render_scenario("fixed-replicas")
    assert "nvidia.com/gpu" not in str(rendered.worker["resources"])
    assert rendered.worker["image"].endswith(":0.1.0-cpu")
    assert "TTS_MODEL_DIR" not in rendered.worker_env()
    assert {m["name"] for m in rendered.worker["volumeMounts"]} == {"tmp", "kafka-ca"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_selectors_are_minimal_and_consistent(scenario: str) -> None:
    rendered = render_scenario(scenario)
    selector = rendered.statefulset["spec"]["selector"]["matchLabels"]
    assert selector == {
        "app.kubernetes.io/name": "tts-stream",
        "app.kubernetes.io/instance": "tts",
        "app.kubernetes.io/component": "worker",
    }
    template_labels = rendered.statefulset["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= template_labels.items()
    for pdb in rendered.of("PodDisruptionBudget", "worker"):
        assert pdb["spec"]["selector"]["matchLabels"] == selector
    for service in rendered.of("Service", "worker"):
        assert service["spec"]["selector"] == selector
    for policy in rendered.of("NetworkPolicy", "worker"):
        assert policy["spec"]["podSelector"]["matchLabels"] == selector
    job_labels = rendered.component("Job", "topics")["spec"]["template"]["metadata"]["labels"]
    assert job_labels["app.kubernetes.io/component"] == "topics", "the Job is no worker for PDB/NetworkPolicy"
    for constraint in rendered.statefulset["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
        assert constraint["labelSelector"]["matchLabels"] == selector


def test_topics_job_runs_before_install_and_upgrade() -> None:
    job = render_scenario("minimal").component("Job", "topics")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    spec = job["spec"]["template"]["spec"]
    assert "serviceAccountName" not in spec, "the chart's ServiceAccount does not exist yet at pre-install"
    # init-group skips what is already in the topics: only when asked for.
    assert "initContainers" not in spec
    assert [c["args"][:2] for c in spec["containers"]] == [["topics", "ensure"]]
    ensure = spec["containers"][0]["args"]
    assert ensure[ensure.index("--partitions") + 1] == str(load_values()["topics"]["partitions"])

    explicit = render(values={**BASE, "topics.job.initGroupOffsets": True}).component("Job", "topics")
    spec = explicit["spec"]["template"]["spec"]
    assert [c["args"][:2] for c in spec["initContainers"]] == [["topics", "ensure"]]
    assert [c["args"][:2] for c in spec["containers"]] == [["topics", "init-group"]]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_topics_job_runs_the_gateway_image_not_the_gpu_one(scenario: str) -> None:
    """`tts-stream topics` is producer side (no torch): a hook need not pull the CUDA image."""
    rendered = render_scenario(scenario)
    pod = rendered.component("Job", "topics")["spec"]["template"]["spec"]
    images = {c["image"] for c in containers_of(pod)}
    assert len(images) == 1
    (image,) = images
    assert image != rendered.worker["image"]
    for gateway in rendered.of("Deployment", "gateway"):
        assert image == gateway["spec"]["template"]["spec"]["containers"][0]["image"]
    if not rendered.of("Deployment", "gateway"):
        assert image == "tts-stream:0.1.0-gateway"


# ---------------------------------------------------------------- refusals -----------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"redis.url": "redis://r:6379/0"}, "kafka.bootstrapServers is required"),
        (
            {**BASE, "kafka.securityProtocol": "SASL_SSL"},
            "needs kafka.sasl.mechanism and kafka.sasl.existingSecret",
        ),
        (
            {**BASE, "kafka.sasl.existingSecret": "s"},
            "kafka.sasl is set but kafka.securityProtocol is PLAINTEXT",
        ),
        ({**BASE, "kafka.tls.caSecret": "ca"}, "kafka.tls.caSecret is set but"),
        ({"kafka.bootstrapServers": "k:9092"}, "redis: set redis.existingSecret"),
        ({**BASE, "autoscaling.mode": "hpa", "autoscaling.minReplicas": 0}, "needs autoscaling.mode keda"),
        (
            {
                **BASE,
                "autoscaling.keda.lanes.interactive.enabled": False,
                "autoscaling.keda.lanes.bulk.enabled": False,
            },
            "at least one of autoscaling.keda.lanes",
        ),
        ({**BASE, "model.persistence.enabled": False}, "worker.engine cosyvoice needs model files"),
        # A created claim nothing fills: cosyvoice would crash-loop on it, and for engines that
        # read no model it is a ReadWriteMany volume for nothing.
        *(
            (
                {**BASE, "model.persistence.existingClaim": "", "worker.engine": engine},
                "model.persistence.enabled would create an empty claim that nothing fills .* set "
                "model.pull.enabled true and model.pull.source .* or model.persistence.existingClaim",
            )
            for engine in ("cosyvoice", "espeak", "null")
        ),
        (
            {**BASE, "model.pull.enabled": True, "model.pull.source": "https://x/y"},
            "must be an s3://bucket/prefix",
        ),
        ({**BASE, "autoscaling.minReplicas": 5, "autoscaling.maxReplicas": 4}, "minReplicas \\(5\\) exceeds"),
        ({**BASE, "autoscaling.keda.fallback.replicas": 20}, "fallback.replicas \\(20\\) exceeds"),
        (
            {
                **BASE,
                "autoscaling.minReplicas": 0,
                "kafka.offsetResetPolicy": "latest",
                "topics.job.initGroupOffsets": False,
            },
            "scale-to-zero with kafka.offsetResetPolicy latest needs topics.job.initGroupOffsets",
        ),
        (
            {
                **BASE,
                "autoscaling.minReplicas": 0,
                "kafka.offsetResetPolicy": "latest",
                "topics.job.initGroupOffsets": True,
                "topics.job.enabled": False,
            },
            "topics.job.initGroupOffsets runs in the topics Job: set topics.job.enabled true",
        ),
        ({**BASE, "metrics.serviceMonitor.enabled": True, "service.enabled": False}, "needs service.enabled"),
    ],
)
def test_impossible_combinations_fail_with_an_actionable_message(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(RenderError, match=message):
        render(values=values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({**BASE, "autoscaling.maxReplica": 3}, "additional properties 'maxReplica' not allowed"),
        ({**BASE, "topics.partitions": "12"}, "at '/topics/partitions': got string, want integer"),
        (
            {**BASE, "autoscaling.keda.lanes.interactive.lagTreshold": 5},
            "additional properties 'lagTreshold' not allowed",
        ),
        ({**BASE, "autoscaling.mode": "KEDA"}, "at '/autoscaling/mode': value must be one of"),
        ({**BASE, "kafka.securityProtocol": "TLS"}, "at '/kafka/securityProtocol': value must be one of"),
        ({**BASE, "worker.guarantee": "exactly-once"}, "at '/worker/guarantee': value must be one of"),
    ],
)
def test_schema_rejects_typos_and_wrong_types(values: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        render(values=values)
