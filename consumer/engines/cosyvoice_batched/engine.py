"""The `cosyvoice` engine with batched inference (`TTS_COSYVOICE_BATCHING`, on by default).

It loads, validates, plans and registers voices exactly as the official-API engine
(consumer/engines/cosyvoice.py) does -- the same model calls for the same task -- but instead of
making those calls one after another it asks the frontend for the inputs each call would build
(cosyvoice_batched/inputs.py) and hands them to a scheduler that decodes many sequences at once
and vocodes them in batches (scheduler.py). Tasks may be submitted while others are decoding:
they join at the next step (`submit`, the ContinuousEngine protocol the worker's engine stage
uses); `synthesize` is submit-and-wait.

Every sequence samples from a generator seeded from its task's cache key, so a request gets the
same audio however it is batched and whichever replica runs it (docs/engines.md).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from consumer.engine import (
    AudioBuffer,
    BatchLimits,
    EngineBatchFailed,
    EngineError,
    EngineOutOfMemory,
    FailureKind,
    SynthesisTask,
    TaskFailure,
    TaskOutcome,
)
from consumer.engines.cosyvoice import DEFAULT_SPEAKER_CACHE, Call, CosyVoiceEngine
from consumer.engines.cosyvoice_batched.decoder import SpeechDecoder
from consumer.engines.cosyvoice_batched.inputs import model_inputs
from consumer.engines.cosyvoice_batched.sampling import SamplingRow, request_rng
from consumer.engines.cosyvoice_batched.scheduler import BatchScheduler, SchedulerLimits, Segment
from consumer.engines.cosyvoice_batched.vocoder import Token2Wav
from consumer.engines.cosyvoice_faults import AcceleratorFailed, empty_cuda_cache, failure_class
from consumer.engines.cosyvoice_model import CosyVoiceOptions

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# The worker's batch cost is characters of text; one sequence is one text segment of at most
# ~80 words or CJK characters (cosyvoice_text.SEGMENT_UNITS), a few hundred characters.
_COST_PER_SEQUENCE = 400
# Share of the GPU memory free after loading that the KV cache may take, when
# TTS_COSYVOICE_BATCH_MAX_TOKENS is unset; the rest is left to the flow's and vocoder's batches.
_KV_MEMORY_SHARE = 0.3
_CPU_TOKEN_BUDGET = 65_536
# What the official path answers when the model produces no audio (a ValueError there).
_NOTHING_TO_SPEAK = TaskFailure(FailureKind.INVALID, "CosyVoice produced no audio for this request")


@dataclass(frozen=True, slots=True)
class BatchingOptions:
    max_sequences: int = 32
    max_tokens: int | None = None  # None: from free GPU memory (CUDA) or _CPU_TOKEN_BUDGET
    vocoder_max_items: int = 16
    # CosyVoice's own length bounds (speech tokens per text token). Benchmarks pin both to one
    # value to force a realistic length on random weights, which never stop by themselves.
    max_token_text_ratio: float = 20.0
    min_token_text_ratio: float = 2.0


class BatchedCosyVoiceEngine(CosyVoiceEngine):
    def __init__(
        self,
        model_dir: Path | None,
        *,
        options: CosyVoiceOptions | None = None,
        model_version: str | None = None,
        speaker_cache_size: int = DEFAULT_SPEAKER_CACHE,
        batching: BatchingOptions | None = None,
    ) -> None:
        super().__init__(
            model_dir, options=options, model_version=model_version, speaker_cache_size=speaker_cache_size
        )
        self._batching = batching or BatchingOptions()
        self._scheduler: BatchScheduler | None = None
        self._decoder: SpeechDecoder | None = None

    # ------------------------------------------------------------------------- lifecycle --

    def load(self) -> None:
        super().load()
        model = self.model.model  # CosyVoice2Model / CosyVoice3Model
        device = model.device
        self._decoder = SpeechDecoder(
            model.llm,
            device=device,
            fp16=bool(model.fp16),
            silent_tokens=model.silent_tokens,
        )
        limits = SchedulerLimits(
            max_sequences=self._batching.max_sequences,
            max_tokens=self._batching.max_tokens or _token_budget(model, device),
            vocoder_max_items=self._batching.vocoder_max_items,
        )
        self._scheduler = BatchScheduler(
            self._decoder, Token2Wav(model, device=device), limits, device=device, on_broken=self._mark_broken
        )
        log.info(
            "cosyvoice batching on",
            extra={
                "max_sequences": limits.max_sequences,
                "max_tokens": limits.max_tokens,
                "vocoder_max_items": limits.vocoder_max_items,
            },
        )

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.close()
            self._scheduler = None
        super().close()

    def _mark_broken(self, reason: str) -> None:
        self._broken = reason

    # ------------------------------------------------------------------- capacity --

    @property
    def limits(self) -> BatchLimits:
        n = self._batching.max_sequences
        return BatchLimits(max_items=n, max_cost=n * _COST_PER_SEQUENCE)

    def room(self) -> BatchLimits:
        """Sequences the scheduler can start now (a task takes one per text segment)."""
        pending = self._scheduler.pending() if self._scheduler is not None else 0
        free = max(0, self._batching.max_sequences - pending)
        return BatchLimits(max_items=free, max_cost=free * _COST_PER_SEQUENCE)

    @property
    def scheduler(self) -> BatchScheduler | None:
        return self._scheduler

    @property
    def decoder(self) -> SpeechDecoder | None:
        return self._decoder

    # ------------------------------------------------------------------ synthesis --

    def synthesize(self, tasks: Sequence[SynthesisTask]) -> list[TaskOutcome]:
        futures = self.submit(tasks)
        outcomes: list[TaskOutcome | None] = []
        fatal: BaseException | None = None
        for future in futures:
            try:
                outcomes.append(future.result())
            except (EngineOutOfMemory, EngineBatchFailed, AcceleratorFailed) as exc:
                outcomes.append(None)
                if fatal is None or isinstance(exc, AcceleratorFailed):
                    fatal = exc
        if fatal is not None:
            if isinstance(fatal, EngineOutOfMemory):
                self._keep_finished(tasks, outcomes)
            raise fatal
        return [outcome for outcome in outcomes if outcome is not None]

    def submit(self, tasks: Sequence[SynthesisTask]) -> list[Future[TaskOutcome]]:
        self._check_usable()
        scheduler = self._scheduler
        if scheduler is None:
            raise EngineError("the cosyvoice engine is not loaded")
        results: list[Future[TaskOutcome]] = [Future() for _ in tasks]
        segments: list[Segment] = []
        with tempfile.TemporaryDirectory(prefix="tts-cosyvoice-") as scratch:
            outcomes, runnable = self._prepare(tasks, Path(scratch))
            for index, outcome in enumerate(outcomes):
                if outcome is not None:
                    results[index].set_result(outcome)
            for index, calls in runnable:
                try:
                    parts = self._segments(tasks[index], calls)
                except Exception as exc:  # the frontend refused or failed on this task
                    results[index].set_result(self._frontend_failure(exc))
                    continue
                if not parts:  # as the official path: a text that normalises to nothing
                    results[index].set_result(_NOTHING_TO_SPEAK)
                    continue
                _Assembly(results[index], [part.future for part in parts], self.sample_rate_hz)
                segments.extend(parts)
        scheduler.submit(segments)
        return results

    def _segments(self, task: SynthesisTask, calls: list[Call]) -> list[Segment]:
        assert self._decoder is not None
        options = self._batching
        segments: list[Segment] = []
        for call in calls:
            for model_input in model_inputs(self.model, call.method, call.kwargs):
                seed = segment_seed(task.key, len(segments))
                sequence = self._decoder.sequence(
                    model_input,
                    SamplingRow(history=[], rng=request_rng(seed)),
                    max_token_text_ratio=options.max_token_text_ratio,
                    min_token_text_ratio=options.min_token_text_ratio,
                )
                segments.append(
                    Segment(
                        sequence=sequence,
                        prompt_token=model_input["flow_prompt_speech_token"],
                        prompt_feat=model_input["prompt_speech_feat"],
                        embedding=model_input["flow_embedding"],
                        speed=float(call.kwargs["speed"]),
                        seed=seed,
                        future=Future(),
                    )
                )
        return segments

    def _frontend_failure(self, exc: Exception) -> TaskOutcome:
        kind = failure_class(exc)
        if kind == "device":
            self._broken = str(exc)
            raise AcceleratorFailed(f"the GPU failed while preparing a request: {exc}") from exc
        if kind == "oom":
            empty_cuda_cache()
            raise EngineOutOfMemory("out of GPU memory while preparing a request") from exc
        log.warning("cosyvoice task failed", extra={"error": type(exc).__name__, "kind": kind})
        log.debug("cosyvoice task failure detail", exc_info=exc)
        return TaskFailure(
            FailureKind.INVALID if kind == "input" else FailureKind.TRANSIENT,
            f"CosyVoice failed on this request ({type(exc).__name__})",
        )


class _Assembly:
    """A task's audio: its segments' samples in order, once all are done; the first failure
    (a broken GPU first) otherwise."""

    def __init__(self, result: Future[TaskOutcome], parts: list[Future[np.ndarray]], rate: int) -> None:
        self._result = result
        self._parts = parts
        self._rate = rate
        self._left = len(parts)
        self._lock = threading.Lock()
        for part in parts:
            part.add_done_callback(self._one_done)

    def _one_done(self, _: Future[np.ndarray]) -> None:
        with self._lock:
            self._left -= 1
            if self._left:
                return
        errors = [part.exception() for part in self._parts if part.exception() is not None]
        if errors:
            broken = [e for e in errors if isinstance(e, AcceleratorFailed)]
            self._result.set_exception((broken or errors)[0])
            return
        samples = np.concatenate([part.result() for part in self._parts])
        if not len(samples):
            self._result.set_result(_NOTHING_TO_SPEAK)
            return
        self._result.set_result(AudioBuffer(np.clip(samples, -1.0, 1.0).astype(np.float32), self._rate))


def segment_seed(key: str, segment: int) -> int:
    """A sequence's sampling seed: from the task's cache key, so the same request samples the
    same tokens on every replica and in every batch."""
    return int.from_bytes(hashlib.sha256(f"{key}\n{segment}".encode()).digest()[:8], "little")


def _token_budget(model: Any, device: torch.device) -> int:
    """KV-cache positions the decoding batch may reserve: a share of the GPU memory left after
    loading, divided by one position's keys and values over every layer."""
    if device.type != "cuda":
        return _CPU_TOKEN_BUDGET
    import torch

    config = model.llm.llm.model.config
    head_dim = config.hidden_size // config.num_attention_heads
    bytes_per_value = 2 if model.fp16 else 4
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * bytes_per_value
    free, _ = torch.cuda.mem_get_info(device)
    return max(4096, int(free * _KV_MEMORY_SHARE) // int(per_token))
