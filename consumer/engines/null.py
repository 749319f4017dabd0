"""The `null` engine: a benchmark instrument, never a default.

It returns silence of a plausible length (about 15 characters per second of speech, scaled by
speed; or a fixed length, for "small audio" measurements) at 16 kHz, after an optional fixed
per-batch latency (plus an optional per-item one) that imitates an accelerator, and an optional
load time that imitates a model load. With that
latency it lets benchmarks measure what the pipeline around the engine costs, and how busy it
keeps the engine.

`crash_marker` is a test hook for crash-loop detection: a task whose text contains it kills the
process with SIGABRT (as a segfaulting native library would). It is off unless set.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from consumer.engine import (
    AudioBuffer,
    BatchLimits,
    EngineCapabilities,
    InvocationCounter,
    SynthesisTask,
    TaskOutcome,
)

if TYPE_CHECKING:
    from consumer.settings import WorkerSettings

SAMPLE_RATE_HZ = 16000
CHARS_PER_SECOND = 15.0


class NullEngine:
    def __init__(
        self,
        *,
        latency_ms: float = 0.0,
        latency_per_item_ms: float = 0.0,
        max_items: int = 32,
        audio_seconds: float | None = None,
        crash_marker: str | None = None,
        load_seconds: float = 0.0,
    ) -> None:
        self._audio_seconds = audio_seconds
        self._load_seconds = load_seconds
        self._latency_s = latency_ms / 1000.0
        self._latency_per_item_s = latency_per_item_ms / 1000.0
        self._max_items = max_items
        self._crash_marker = crash_marker
        self.invocations = InvocationCounter()

    @property
    def name(self) -> str:
        return "null"

    @property
    def model_version(self) -> str:
        return "silence-1"

    @property
    def sample_rate_hz(self) -> int:
        return SAMPLE_RATE_HZ

    @property
    def capabilities(self) -> EngineCapabilities:
        return EngineCapabilities(
            presets=frozenset({"silence", "en-us", "cmn"}), languages=frozenset(), cloning=True, instruct=True
        )

    @property
    def limits(self) -> BatchLimits:
        return BatchLimits(max_items=self._max_items, max_cost=self._max_items * 500)

    def load(self) -> None:
        # a real model load blocks start-up for minutes; this lets the probes be tried on it
        if self._load_seconds > 0:
            time.sleep(self._load_seconds)

    def warm_up(self) -> None:
        return None

    def synthesize(self, tasks: Sequence[SynthesisTask]) -> list[TaskOutcome]:
        if self._crash_marker is not None and any(self._crash_marker in t.text for t in tasks):
            os.abort()
        self.invocations.record(tasks)
        delay = self._latency_s + self._latency_per_item_s * len(tasks)
        if delay > 0:
            time.sleep(delay)
        outcomes: list[TaskOutcome] = []
        for task in tasks:
            seconds = self._audio_seconds or max(
                0.1, len(task.text) / CHARS_PER_SECOND / max(task.speed, 0.1)
            )
            outcomes.append(
                AudioBuffer(np.zeros(int(seconds * SAMPLE_RATE_HZ), dtype=np.float32), SAMPLE_RATE_HZ)
            )
        return outcomes

    def close(self) -> None:
        return None


def create_engine(settings: WorkerSettings) -> NullEngine:
    return NullEngine(
        latency_ms=settings.null_latency_ms,
        latency_per_item_ms=settings.null_latency_per_item_ms,
        audio_seconds=settings.null_audio_seconds,
        crash_marker=os.environ.get("TTS_TEST_CRASH_MARKER") or None,
        load_seconds=settings.null_load_seconds,
    )
