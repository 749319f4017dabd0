"""Worker settings: environment parsing, validation, and the generated reference staying true."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from consumer.settings import Guarantee, WorkerSettings
from tests.support.stack import ROOT


def test_environment_variables_reach_nested_and_list_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTS_KAFKA_BOOTSTRAP_SERVERS", "broker:9093")
    monkeypatch.setenv("TTS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TTS_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("TTS_KAFKA_SASL_USERNAME", "tts")
    monkeypatch.setenv("TTS_KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("TTS_TOPICS_RESULTS", "team.results")
    monkeypatch.setenv("TTS_PROMPT_AUDIO_ALLOWLIST", "voices/prompts/, uploads/tts/")
    monkeypatch.setenv("TTS_GUARANTEE", "at_least_once")
    settings = WorkerSettings()
    assert settings.kafka.librdkafka_config()["sasl.password"] == "hunter2"
    assert "hunter2" not in repr(settings), "secrets never appear in a repr"
    assert settings.topics.results == "team.results"
    assert settings.prompt_audio_allowlist == ["voices/prompts/", "uploads/tts/"]
    assert settings.guarantee is Guarantee.AT_LEAST_ONCE


@pytest.mark.parametrize(
    "overrides",
    [
        {"prompt_audio_allowlist": ["s3://bucket/prefix/"]},
        {"s3_access_key_id": "only-half"},
        {"loudness_lufs": -3.0},
        {"kafka": {"security_protocol": "SASL_SSL"}},
    ],
)
def test_impossible_settings_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        WorkerSettings(**overrides)


def test_transactional_id_is_stable_per_instance() -> None:
    assert WorkerSettings(group_id="g", instance_id="pod-3").transactional_id == "g.pod-3"


def test_configuration_reference_is_up_to_date() -> None:
    check = subprocess.run(
        [sys.executable, "scripts/settings_doc.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
