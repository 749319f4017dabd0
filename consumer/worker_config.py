"""From WorkerSettings to the core's configurations: the one mapping the composition root uses.

The core's configs are plain frozen dataclasses so its tests build them without environment
variables; this module is the only place that fills them from the worker's settings (plus the
two things only known at start-up: the loaded engine's batch limits and model version).
"""

from __future__ import annotations

from dataclasses import dataclass

from consumer.core.loop import LoopConfig
from consumer.core.retry import RetryPolicies
from consumer.core.stage import PipelineConfig
from consumer.engine import BatchLimits
from consumer.settings import WorkerSettings
from schemas.topics import Lane


@dataclass(frozen=True, slots=True)
class WorkerConfigs:
    pipeline: PipelineConfig
    loop: LoopConfig


def batch_limits(settings: WorkerSettings, engine_limits: BatchLimits) -> BatchLimits:
    """The engine's own limits, unless TTS_MAX_BATCH_ITEMS / TTS_MAX_BATCH_COST lower or raise them."""
    return BatchLimits(
        max_items=settings.max_batch_items or engine_limits.max_items,
        max_cost=settings.max_batch_cost or engine_limits.max_cost,
    )


def worker_configs(
    settings: WorkerSettings,
    *,
    engine_limits: BatchLimits,
    model_version: str,
    max_messages: int | None = None,
    idle_exit_s: float | None = None,
) -> WorkerConfigs:
    """The pipeline's and the loop's configs; `max_messages` / `idle_exit_s`: run mode."""
    s = settings
    limits = batch_limits(s, engine_limits)
    retry = RetryPolicies.from_settings(s)
    pipeline = PipelineConfig(
        instance_id=s.instance_id,
        model_version=model_version,
        audio_bucket=s.s3_audio_bucket,
        audio_prefix=s.s3_audio_prefix,
        default_loudness_lufs=s.loudness_lufs,
        lease_ttl_ms=s.lease_ttl_ms,
        cache_ttl_s=s.cache_ttl_s,
        cache_failure_policy=s.cache_failure_policy,
        batch_limits=limits,
        batch_max_wait_s=s.batch_max_wait_ms / 1000.0,
        engine_max_retries=s.engine_max_retries,
        retry=retry,
        poison_max_attempts=s.poison_max_attempts,
    )
    loop = LoopConfig(
        lanes={s.topics.requests: Lane.INTERACTIVE, s.topics.bulk: Lane.BULK},
        poll_batch_size=s.poll_batch_size,
        max_in_flight=s.max_in_flight,
        drain_timeout_s=s.drain_timeout_s,
        commit_interval_s=s.commit_interval_ms / 1000.0,
        # One batch's worth of queued interactive work counts as a backlog (bulk pauses).
        interactive_backlog_jobs=limits.max_items,
        retry=retry,
        max_messages=max_messages,
        idle_exit_s=idle_exit_s,
    )
    return WorkerConfigs(pipeline, loop)
