"""The one mapping from WorkerSettings to the loop's and the pipeline's configs."""

from __future__ import annotations

import dataclasses

from consumer.core.loop import LoopConfig
from consumer.core.retry import RetryPolicies
from consumer.core.stage import PipelineConfig
from consumer.engine import BatchLimits
from consumer.settings import CacheFailurePolicy, WorkerSettings
from consumer.worker_config import batch_limits, worker_configs
from schemas.topics import Lane, TopicNames

# Every value differs from its default, so a field read from the wrong setting (or a default)
# shows up as a mismatch.
SETTINGS = WorkerSettings(
    instance_id="worker-7",
    s3_audio_bucket="audio-x",
    s3_audio_prefix="pre/",
    loudness_lufs=-20.5,
    lease_ttl_ms=12_345,
    cache_ttl_s=4321,
    cache_failure_policy=CacheFailurePolicy.WAIT,
    batch_max_wait_ms=7,
    engine_max_retries=5,
    engine_retry_backoff_ms=250,
    poison_max_attempts=4,
    topics=TopicNames(requests="req-x", bulk="bulk-x", results="res-x", dlq="dlq-x"),
    poll_batch_size=33,
    max_in_flight=444,
    drain_timeout_s=9.5,
    commit_interval_ms=40,
)

# What each config field is made of. Adding a field to a config without adding it here fails
# test_every_config_field_is_accounted_for: it must come from the settings (or say why not).
PIPELINE_FROM_SETTINGS = {
    "instance_id": "worker-7",
    "audio_bucket": "audio-x",
    "audio_prefix": "pre/",
    "default_loudness_lufs": -20.5,
    "lease_ttl_ms": 12_345,
    "cache_ttl_s": 4321,
    "cache_failure_policy": CacheFailurePolicy.WAIT,
    "batch_max_wait_s": 0.007,
    "engine_max_retries": 5,
    "poison_max_attempts": 4,
}
PIPELINE_OTHERWISE = {
    "model_version",  # the loaded engine's, unless TTS_MODEL_VERSION (resolved by the app)
    "batch_limits",  # the engine's limits under the settings' overrides (tested below)
    "retry",  # RetryPolicies.from_settings (tests/unit/test_retry_policy.py)
    "finish_threads",  # tuning constants of the core, not settings
    "wait_poll_s",
}
LOOP_FROM_SETTINGS = {
    "lanes": {"req-x": Lane.INTERACTIVE, "bulk-x": Lane.BULK},
    "poll_batch_size": 33,
    "max_in_flight": 444,
    "drain_timeout_s": 9.5,
    "commit_interval_s": 0.04,
}
LOOP_OTHERWISE = {"interactive_backlog_jobs", "retry", "max_messages", "idle_exit_s"}


def test_every_config_field_is_accounted_for() -> None:
    pipeline_fields = {f.name for f in dataclasses.fields(PipelineConfig)}
    loop_fields = {f.name for f in dataclasses.fields(LoopConfig)}
    assert pipeline_fields == set(PIPELINE_FROM_SETTINGS) | PIPELINE_OTHERWISE
    assert loop_fields == set(LOOP_FROM_SETTINGS) | LOOP_OTHERWISE


def test_the_configs_take_their_values_from_the_settings() -> None:
    configs = worker_configs(
        SETTINGS, engine_limits=BatchLimits(16, 2000), model_version="m-1", max_messages=10, idle_exit_s=2.5
    )
    for name, expected in PIPELINE_FROM_SETTINGS.items():
        assert getattr(configs.pipeline, name) == expected, name
    for name, expected in LOOP_FROM_SETTINGS.items():
        assert getattr(configs.loop, name) == expected, name
    assert configs.pipeline.model_version == "m-1"
    assert configs.pipeline.batch_limits == BatchLimits(16, 2000)
    assert configs.loop.interactive_backlog_jobs == 16, "one batch of queued interactive work"
    assert (configs.loop.max_messages, configs.loop.idle_exit_s) == (10, 2.5)
    assert configs.pipeline.retry is configs.loop.retry, "one set of retry policies per worker"
    assert configs.pipeline.retry == RetryPolicies.from_settings(SETTINGS)
    assert configs.pipeline.retry.engine.base_s == 0.25


def test_the_defaults_run_forever() -> None:
    configs = worker_configs(WorkerSettings(), engine_limits=BatchLimits(8, 100), model_version="m")
    assert configs.loop.max_messages is None
    assert configs.loop.idle_exit_s is None


def test_batch_limits_are_the_engines_unless_the_settings_set_them() -> None:
    engine = BatchLimits(max_items=16, max_cost=2000)
    assert batch_limits(WorkerSettings(), engine) == engine
    assert batch_limits(WorkerSettings(max_batch_items=4), engine) == BatchLimits(4, 2000)
    assert batch_limits(WorkerSettings(max_batch_cost=500), engine) == BatchLimits(16, 500)
