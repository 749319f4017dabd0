"""The batched path's two stages and what moves between them.

* **LLM thread**: between decoding steps it admits waiting sequences while the batch has room
  (a count of sequences and a budget of KV-cache positions, see `SchedulerLimits`), prefills
  them together, then runs one step for every active sequence. Sequences that finish go to
  the vocoder at once; the others keep decoding.
* **vocoder thread**: takes whatever has finished (up to a count and a padded-frame budget) and
  runs flow matching and HiFT on it as one batch, while the LLM goes on decoding.

On CUDA the LLM runs on a stream of its own (as the official code does), so the two stages
overlap on the GPU. A failure inside a step cannot be pinned on one sequence: every sequence in
that step fails with EngineOutOfMemory (and the token budget shrinks, so the retry fits) or
EngineBatchFailed (the worker retries each alone), or -- a broken CUDA context -- every
sequence fails with AcceleratorFailed and the scheduler refuses new work.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from consumer.engine import EngineBatchFailed, EngineError, EngineOutOfMemory
from consumer.engines.cosyvoice_batched.decoder import DecodeSequence, SpeechDecoder
from consumer.engines.cosyvoice_batched.vocoder import Token2Wav, VocodeItem
from consumer.engines.cosyvoice_faults import AcceleratorFailed, empty_cuda_cache, failure_class

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SchedulerLimits:
    """What "full" means. The worker sizes the batches it hands over from the same numbers
    (BatchedCosyVoiceEngine.room)."""

    max_sequences: int = 32  # sequences decoding at once
    max_tokens: int = 65_536  # KV-cache positions reserved: prefix + longest allowed output each
    vocoder_max_items: int = 16  # sequences per flow + HiFT batch
    vocoder_max_frames: int = 24_000  # padded mel frames (items x the longest) per flow batch


@dataclass
class SchedulerStats:
    """Counters since start (read without the lock: a snapshot may be a step behind)."""

    steps: int = 0  # decoding steps run
    admitted: int = 0  # sequences that entered decoding
    peak_active: int = 0  # the most sequences decoding in one step
    vocoder_batches: int = 0
    vocoded: int = 0  # sequences through flow + HiFT
    peak_vocoder_batch: int = 0


@dataclass(eq=False)
class Segment:
    """One text piece of one task: decoded, then vocoded; its future gets float32 samples."""

    sequence: DecodeSequence
    prompt_token: torch.Tensor
    prompt_feat: torch.Tensor
    embedding: torch.Tensor
    speed: float
    seed: int
    future: Future[np.ndarray]

    def vocode_item(self) -> VocodeItem:
        return VocodeItem(
            self.sequence.tokens, self.prompt_token, self.prompt_feat, self.embedding, self.speed, self.seed
        )


class BatchScheduler:
    def __init__(
        self,
        decoder: SpeechDecoder,
        vocoder: Token2Wav,
        limits: SchedulerLimits,
        *,
        device: torch.device,
        on_broken: Callable[[str], None],
    ) -> None:
        self._decoder = decoder
        self._vocoder = vocoder
        self._limits = limits
        self._token_budget = limits.max_tokens
        self._vocoder_items = limits.vocoder_max_items
        self._device = device
        self._on_broken = on_broken
        self._lock = threading.Condition()
        self._waiting: deque[Segment] = deque()
        self._active: dict[int, Segment] = {}  # id(sequence) -> its segment
        self._finished: deque[Segment] = deque()
        self._reserved = 0
        self._broken: str | None = None
        self._closed = False
        self.stats = SchedulerStats()
        self._threads = [
            threading.Thread(target=self._decode_loop, name="cosyvoice-llm", daemon=True),
            threading.Thread(target=self._vocode_loop, name="cosyvoice-vocoder", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------------ the engine's side --

    def submit(self, segments: Sequence[Segment]) -> None:
        with self._lock:
            if self._broken is not None:
                failure = AcceleratorFailed(
                    f"the GPU failed earlier and the process must restart: {self._broken}"
                )
                for segment in segments:
                    segment.future.set_exception(failure)
                return
            self._waiting.extend(segments)
            self._lock.notify_all()

    def pending(self) -> int:
        """Sequences waiting or decoding (the vocoder's queue is not counted: it drains fast)."""
        with self._lock:
            return len(self._waiting) + len(self._active)

    @property
    def limits(self) -> SchedulerLimits:
        return self._limits

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)
        closed = EngineError("the cosyvoice engine closed")
        with self._lock:
            for segment in [*self._waiting, *self._active.values(), *self._finished]:
                if not segment.future.done():
                    segment.future.set_exception(closed)
            self._waiting.clear()
            self._active.clear()
            self._finished.clear()

    # --------------------------------------------------------------------- the LLM stage --

    def _decode_loop(self) -> None:
        with self._llm_stream():
            while True:
                with self._lock:
                    while not self._closed and not self._waiting and not self._active:
                        self._lock.wait()
                    if self._closed:
                        return
                    admitted = self._admissible()
                try:
                    if admitted:
                        self._sync_with_submitters()
                        self._decoder.admit([s.sequence for s in admitted])
                    self._count_step(len(admitted))
                    finished = self._decoder.step()
                except Exception as exc:  # one step holds every active sequence
                    self._step_failed(exc)
                    continue
                self._hand_to_vocoder(finished)

    def _count_step(self, admitted: int) -> None:
        stats = self.stats
        stats.steps += 1
        stats.admitted += admitted
        stats.peak_active = max(stats.peak_active, len(self._active))

    def _admissible(self) -> list[Segment]:
        """Waiting segments that fit now, oldest first (the lock is held)."""
        admitted: list[Segment] = []
        while self._waiting and len(self._active) < self._limits.max_sequences:
            need = self._waiting[0].sequence.reserved_tokens
            if self._active and self._reserved + need > self._token_budget:
                break  # an empty batch takes even a sequence over the budget: alone, it may fit
            segment = self._waiting.popleft()
            self._active[id(segment.sequence)] = segment
            self._reserved += need
            admitted.append(segment)
        return admitted

    def _hand_to_vocoder(self, finished: list[DecodeSequence]) -> None:
        if not finished:
            return
        with self._lock:
            for sequence in finished:
                segment = self._active.pop(id(sequence))
                self._reserved -= sequence.reserved_tokens
                self._finished.append(segment)
            self._lock.notify_all()

    def _step_failed(self, exc: Exception) -> None:
        self._decoder.reset()
        with self._lock:
            failed = list(self._active.values())
            reserved = self._reserved
            self._active.clear()
            self._reserved = 0
        kind = failure_class(exc)
        if kind == "oom":
            empty_cuda_cache()
            self._token_budget = max(1, reserved * 3 // 4)
            log.warning(
                "out of GPU memory decoding %d sequences; token budget now %d",
                len(failed),
                self._token_budget,
            )
            error: Exception = EngineOutOfMemory(f"out of GPU memory decoding a batch of {len(failed)}")
        elif kind == "device":
            self._break(str(exc), also=failed)
            return
        else:
            log.exception("a decoding step failed on %d sequences", len(failed))
            error = EngineBatchFailed(f"a decoding step failed ({type(exc).__name__})")
        error.__cause__ = exc
        for segment in failed:
            segment.future.set_exception(error)

    # ---------------------------------------------------------------- the vocoder stage --

    def _vocode_loop(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._finished:
                    self._lock.wait()
                if self._closed:
                    return
                batch = self._vocoder_batch()
            try:
                samples = self._vocoder.run([s.vocode_item() for s in batch])
            except Exception as exc:
                self._vocoder_failed(exc, batch)
                continue
            stats = self.stats
            stats.vocoder_batches += 1
            stats.vocoded += len(batch)
            stats.peak_vocoder_batch = max(stats.peak_vocoder_batch, len(batch))
            for segment, audio in zip(batch, samples, strict=True):
                segment.future.set_result(audio)

    def _vocoder_batch(self) -> list[Segment]:
        """Finished segments for one flow batch: at most `vocoder_max_items`, and no more padded
        frames than the budget (the first always goes). The lock is held."""
        batch: list[Segment] = []
        longest = 0
        while self._finished and len(batch) < self._vocoder_items:
            frames = self._finished[0].vocode_item().frames
            widest = max(longest, frames)
            if batch and widest * (len(batch) + 1) > self._limits.vocoder_max_frames:
                break
            batch.append(self._finished.popleft())
            longest = widest
        return batch

    def _vocoder_failed(self, exc: Exception, batch: list[Segment]) -> None:
        kind = failure_class(exc)
        if kind == "device":
            self._break(str(exc), also=batch)
            return
        if kind == "oom":
            empty_cuda_cache()
            self._vocoder_items = max(1, len(batch) // 2)
            log.warning(
                "out of GPU memory vocoding %d sequences; at most %d now", len(batch), self._vocoder_items
            )
            error: Exception = EngineOutOfMemory(f"out of GPU memory vocoding a batch of {len(batch)}")
        else:
            log.exception("vocoding failed on %d sequences", len(batch))
            error = EngineBatchFailed(f"vocoding failed ({type(exc).__name__})")
        error.__cause__ = exc
        for segment in batch:
            segment.future.set_exception(error)

    # -------------------------------------------------------------------------- common --

    def _break(self, reason: str, *, also: Sequence[Segment]) -> None:
        """A broken CUDA context: fail everything (`also`: segments a stage holds), take
        nothing more, tell the engine."""
        self._decoder.reset()
        failure = AcceleratorFailed(f"the GPU failed during synthesis: {reason}")
        with self._lock:
            self._broken = reason
            doomed = [*also, *self._waiting, *self._active.values(), *self._finished]
            self._waiting.clear()
            self._active.clear()
            self._finished.clear()
            self._reserved = 0
        for segment in doomed:
            if not segment.future.done():
                segment.future.set_exception(failure)
        self._on_broken(reason)

    @contextlib.contextmanager
    def _llm_stream(self) -> Iterator[None]:
        """The LLM's own CUDA stream, so the vocoder's kernels overlap with decoding."""
        import torch

        if self._device.type != "cuda":
            yield
            return
        self._stream: Any = torch.cuda.Stream(self._device)  # type: ignore[no-untyped-call]
        with torch.cuda.stream(self._stream):
            yield

    def _sync_with_submitters(self) -> None:
        """Prefixes were embedded on the submitters' (default) stream: wait for them."""
        if self._device.type == "cuda":
            import torch

            self._stream.wait_stream(torch.cuda.default_stream(self._device))
