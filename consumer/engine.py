"""The engine interface: what the pipeline asks of a speech engine, and nothing more.

An engine synthesises a *batch* of tasks and answers per task (audio or a failure), so one bad
request never fails its neighbours. Engines import their heavy libraries (torch, the model
package, the C library) lazily inside `load`, never at module import time.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class AudioBuffer:
    """Mono float32 samples in [-1, 1] at `sample_rate_hz`."""

    samples: Samples
    sample_rate_hz: int

    @property
    def duration_seconds(self) -> float:
        return float(len(self.samples)) / float(self.sample_rate_hz)


@dataclass(frozen=True, slots=True)
class EngineCapabilities:
    """What an engine can do; validation refuses anything outside it (UNSUPPORTED)."""

    presets: frozenset[str] = frozenset()
    # Lower-case BCP-47 tags or primary subtags ("en", "zh", "en-us"); empty: any language is
    # accepted and the engine decides what to do with it.
    languages: frozenset[str] = frozenset()
    cloning: bool = False
    instruct: bool = False
    cross_lingual: bool = False
    max_text_chars: int = 5000

    def supports_language(self, tag: str) -> bool:
        tag = tag.lower()
        return tag in self.languages or tag.split("-", 1)[0] in self.languages


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """How large a batch the engine takes: by count and by estimated cost (characters)."""

    max_items: int = 16
    max_cost: int = 4000


@dataclass(frozen=True, slots=True)
class PromptAudio:
    """A resolved cloning prompt: canonical audio of a registered voice (or allow-listed URI)."""

    content_id: str
    transcript: str
    audio: AudioBuffer


@dataclass(frozen=True, slots=True)
class SynthesisTask:
    """One unit of engine work; `key` (the cache key) is unique within a batch."""

    key: str
    text: str
    language: str | None = None
    preset: str | None = None
    prompt: PromptAudio | None = None
    style_instruction: str | None = None
    speed: float = 1.0

    @property
    def cost(self) -> int:
        return max(1, len(self.text))


class FailureKind(enum.StrEnum):
    INVALID = "INVALID"  # this input can never work on this engine: answer FAILED, no retry
    TRANSIENT = "TRANSIENT"  # may work if tried again (bounded retries with backoff)


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """A per-task failure the engine reports instead of audio."""

    kind: FailureKind
    message: str
    code: str = "ENGINE_ERROR"  # an ErrorCode value for the result


TaskOutcome = AudioBuffer | TaskFailure


class EngineError(Exception):
    """The whole batch failed; the pipeline retries its tasks with backoff."""


class EngineOutOfMemory(EngineError):
    """The accelerator ran out of memory: retry the tasks in smaller batches."""


class EngineBatchFailed(EngineError):
    """The batch failed in a way no one task can be blamed for (an error inside a step that
    computes every task at once): retry each task alone, so only a culprit fails again."""


class EngineLoadError(Exception):
    """The engine cannot start (missing model directory, library, data): fatal at start-up."""


@runtime_checkable
class Engine(Protocol):
    """A speech engine. One instance per process; `synthesize` is called from one thread."""

    @property
    def name(self) -> str: ...

    @property
    def model_version(self) -> str: ...

    @property
    def sample_rate_hz(self) -> int: ...

    @property
    def capabilities(self) -> EngineCapabilities: ...

    @property
    def limits(self) -> BatchLimits: ...

    def load(self) -> None:
        """Load the model; may take minutes. Raises EngineLoadError when it cannot."""

    def warm_up(self) -> None:
        """Run a tiny synthesis so the first real batch does not pay for lazy initialisation."""

    def synthesize(self, tasks: Sequence[SynthesisTask]) -> list[TaskOutcome]:
        """One outcome per task, in order. Raises EngineError for a whole-batch failure."""

    def close(self) -> None:
        """Release processes, memory and devices."""


@runtime_checkable
class ContinuousEngine(Engine, Protocol):
    """An engine that schedules work between its own model steps (iteration-level batching):
    tasks submitted while others run join them at the next step, and each task's outcome is
    ready when that task is done, not when its batch is.

    The pipeline's engine stage feeds such an engine whenever it has room instead of handing it
    one batch at a time (consumer/core/synthesis.py)."""

    def submit(self, tasks: Sequence[SynthesisTask]) -> list[Future[TaskOutcome]]:
        """Start `tasks`; one future per task. A future fails with EngineOutOfMemory,
        EngineBatchFailed or EngineError (the task is retried), or a FatalError."""

    def room(self) -> BatchLimits:
        """What the engine can take now without queueing it (max_items 0: it is full)."""


@dataclass
class InvocationCounter:
    """Counts engine work; tests and benchmarks assert on it (dedup: one synthesis per key)."""

    batches: int = 0
    tasks: int = 0
    keys: list[str] = field(default_factory=list)

    def record(self, tasks: Sequence[SynthesisTask]) -> None:
        self.batches += 1
        self.tasks += len(tasks)
        self.keys.extend(t.key for t in tasks)
