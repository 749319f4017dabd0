"""The worker and the CLI accept the environment the chart renders (the contract between them).

Each scenario's rendered env is fed to the real settings classes, with Secret references and the
downward API replaced by stand-in values, exactly as the kubelet would resolve them.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from consumer.settings import WorkerSettings
from producer.settings import ProducerSettings
from tests.helm.chart import SCENARIOS, render, render_scenario
from tests.helm.test_rules import BASE as _BASE

POD_NAME = "tts-tts-stream-3"  # a StatefulSet ordinal: stable across replacements
SECRET_STAND_INS = {"TTS_REDIS_URL": "redis://:secret@redis.cache.svc:6379/0"}


def resolve(env: list[dict[str, Any]]) -> dict[str, str]:
    resolved: dict[str, str] = {}
    for item in env:
        name = item["name"]
        if "value" in item:
            resolved[name] = str(item["value"])
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name"
            resolved[name] = POD_NAME
        else:
            assert "secretKeyRef" in source
            resolved[name] = SECRET_STAND_INS.get(name, f"stand-in-for-{source['secretKeyRef']['key']}")
    return resolved


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("TTS_") or name == "POD_NAME":
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_worker_settings_accept_the_rendered_env(scenario: str, clean_env: pytest.MonkeyPatch) -> None:
    rendered = render_scenario(scenario)
    env = resolve(rendered.worker["env"])
    for name, value in env.items():
        clean_env.setenv(name, value)
    settings = WorkerSettings()
    assert settings.group_id == env["TTS_GROUP_ID"]
    assert settings.instance_id == POD_NAME  # static membership follows the pod name
    assert settings.transactional_id == f"{env['TTS_GROUP_ID']}.{POD_NAME}"  # so does fencing
    assert settings.http_host == "0.0.0.0"
    assert settings.http_port == rendered.worker["ports"][0]["containerPort"]
    assert settings.drain_timeout_s == float(env["TTS_DRAIN_TIMEOUT_S"])
    assert settings.engine == env["TTS_ENGINE"]
    assert settings.topics.requests == env["TTS_TOPICS_REQUESTS"]
    assert settings.topics.bulk == env["TTS_TOPICS_BULK"]
    assert settings.kafka.bootstrap_servers == env["TTS_KAFKA_BOOTSTRAP_SERVERS"]
    assert settings.kafka.security_protocol.value == env["TTS_KAFKA_SECURITY_PROTOCOL"]
    if "TTS_MODEL_DIR" in env:
        assert str(settings.model_dir) == env["TTS_MODEL_DIR"]
    expected_prompts = [e for e in env.get("TTS_PROMPT_AUDIO_ALLOWLIST", "").split(",") if e]
    assert settings.prompt_audio_allowlist == expected_prompts
    expected_replies = [e for e in env.get("TTS_REPLY_TOPIC_ALLOWLIST", "").split(",") if e]
    assert settings.reply_topic_allowlist == expected_replies


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_topics_job_settings_accept_the_rendered_env(scenario: str, clean_env: pytest.MonkeyPatch) -> None:
    job = render_scenario(scenario).component("Job", "topics")["spec"]["template"]["spec"]
    for container in [*job.get("initContainers", []), *job["containers"]]:
        env = resolve(container["env"])
        for name, value in env.items():
            clean_env.setenv(name, value)
        settings = ProducerSettings()
        assert settings.kafka.bootstrap_servers == env["TTS_KAFKA_BOOTSTRAP_SERVERS"]
        assert settings.topics.requests == env["TTS_TOPICS_REQUESTS"]
        assert settings.topics.backfill_checkpoints == env["TTS_TOPICS_BACKFILL_CHECKPOINTS"]


# ---------------------------------------------------------------- batching and commits -----------

BATCHING_VALUES = {
    "worker.commitIntervalMs": ("TTS_COMMIT_INTERVAL_MS", 250),
    "worker.maxBatchItems": ("TTS_MAX_BATCH_ITEMS", 48),
    "worker.maxBatchCost": ("TTS_MAX_BATCH_COST", 20000),
    "worker.batchMaxWaitMs": ("TTS_BATCH_MAX_WAIT_MS", 0),
    "worker.maxInFlight": ("TTS_MAX_IN_FLIGHT", 4000),
}


def test_batching_and_commit_values_reach_the_worker_env(clean_env: pytest.MonkeyPatch) -> None:
    values = {key: value for key, (_, value) in BATCHING_VALUES.items()}
    rendered = render(values={**_BASE, **values})
    env = rendered.worker_env()
    # 0 is a setting (no wait for company), not "unset".
    assert {name: env.get(name) for name, _ in BATCHING_VALUES.values()} == {
        name: str(value) for name, value in BATCHING_VALUES.values()
    }
    for name, value in resolve(rendered.worker["env"]).items():
        clean_env.setenv(name, value)
    settings = WorkerSettings()
    for name, value in BATCHING_VALUES.values():
        assert getattr(settings, name.removeprefix("TTS_").lower()) == value


def test_unset_batching_values_leave_the_worker_defaults() -> None:
    env = render(values=_BASE).worker_env()
    assert not {name for name, _ in BATCHING_VALUES.values()} & env.keys()


def test_batching_env_names_are_worker_settings() -> None:
    fields = WorkerSettings.model_fields
    for name, _ in BATCHING_VALUES.values():
        assert name.removeprefix("TTS_").lower() in fields, name
