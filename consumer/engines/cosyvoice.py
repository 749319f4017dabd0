"""The `cosyvoice` engine: CosyVoice 2 / Fun-CosyVoice 3 through its Python API, one GPU.

What it does with the official API (docs/engines.md has the operator's view):

* Loads with `AutoModel(model_dir=...)` from a *local* directory -- the path is checked first,
  because AutoModel downloads from ModelScope when it does not exist -- passing fp16, TensorRT,
  vLLM and (CosyVoice 2 only: 3 has no JIT modules) JIT through. The family comes from which
  yaml the directory holds. Importing CosyVoice sets the root logger to DEBUG; we put it back.
* Registers each cloned voice once with the model's speaker cache (`add_zero_shot_spk`, from a
  temporary WAV file: the frontend reads the prompt three times, so it cannot be a stream) and
  synthesises with `zero_shot_spk_id`, skipping the prompt's tokenizer and speaker-embedding
  work on every later request. The cache is an LRU of `speaker_cache_size` voices.
* Modes: zero-shot; cross-lingual when the text's writing system differs from the prompt's;
  instruct (`inference_instruct2`) when the request has a style instruction -- always from the
  prompt file, never the cached speaker, whose stored prompt text would override the
  instruction. CosyVoice 3's system prompt and `<|endofprompt|>` are added where it needs them.
* `stream=False` only (the streaming path shares mutable state across requests); texts are
  split into segments of bounded length by us, because the frontend stops splitting as soon as
  a text contains `<|...|>`.
* The official API synthesises one request at a time (its flow model asserts batch size 1), so a
  batch runs sequentially -- or, with vLLM, on `trt_concurrent` threads whose LLM decoding vLLM
  batches. CUDA out-of-memory raises EngineOutOfMemory (results already finished in that batch
  are kept for the retry); a broken CUDA context raises a FatalError so the pod restarts.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from consumer.engine import (
    AudioBuffer,
    BatchLimits,
    EngineCapabilities,
    EngineError,
    EngineLoadError,
    EngineOutOfMemory,
    FailureKind,
    PromptAudio,
    SynthesisTask,
    TaskFailure,
    TaskOutcome,
)
from consumer.engines import cosyvoice_text as text_rules
from consumer.engines import cosyvoice_textnorm as textnorm
from consumer.engines.cosyvoice_faults import AcceleratorFailed, empty_cuda_cache, failure_class
from consumer.engines.cosyvoice_model import (
    LANGUAGES,
    CosyVoiceOptions,
    check_model_dir,
    detect_family,
    import_automodel,
    model_fingerprint,
    root_logging_kept,
)

if TYPE_CHECKING:
    from consumer.settings import WorkerSettings

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 24_000  # CosyVoice 2 and 3 (the loaded model's own value wins)
MIN_PROMPT_RATE_HZ = 16_000
MAX_PROMPT_SECONDS = 30.0  # the speech tokenizer asserts on longer prompts
DEFAULT_SPEAKER_CACHE = 256
_KEPT_RESULTS = 64  # results finished before an out-of-memory, kept for the retry
_MODEL_CLASSES = {"CosyVoice2": "cosyvoice2", "CosyVoice3": "cosyvoice3"}


class _Rejected(Exception):
    """A task that fails before it reaches the model."""

    def __init__(self, failure: TaskFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _reject(message: str, code: str, kind: FailureKind = FailureKind.INVALID) -> _Rejected:
    return _Rejected(TaskFailure(kind, message, code))


@dataclass(frozen=True, slots=True)
class Call:
    """One call of the official API: `model.<method>(**kwargs)`."""

    method: str
    kwargs: dict[str, Any]


# ------------------------------------------------------------------------------ the engine --


class CosyVoiceEngine:
    """See the module docstring. `model_factory` replaces AutoModel (tests of CUDA-only faults
    use a double); `segment_units` is the length budget of one model call (text_rules)."""

    def __init__(
        self,
        model_dir: Path | None,
        *,
        options: CosyVoiceOptions | None = None,
        model_version: str | None = None,
        speaker_cache_size: int = DEFAULT_SPEAKER_CACHE,
        segment_units: int = text_rules.SEGMENT_UNITS,
        model_factory: Callable[..., Any] | None = None,
    ) -> None:
        self._model_dir = model_dir
        self._options = options or CosyVoiceOptions()
        self._version_override = model_version
        self._speaker_cache_size = speaker_cache_size
        self._segment_units = segment_units
        self._factory = model_factory
        self._model: Any = None
        self._family = self._detect_quietly()
        self._fingerprint: str | None = None
        self._sample_rate = SAMPLE_RATE_HZ
        self._presets: frozenset[str] = frozenset()
        self._speakers: OrderedDict[str, None] = OrderedDict()
        self._kept: OrderedDict[str, AudioBuffer] = OrderedDict()
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._broken: str | None = None
        self._text_frontend: str | None = None

    def _detect_quietly(self) -> str | None:
        if self._model_dir is None:
            return None
        try:
            return detect_family(self._model_dir)
        except EngineLoadError:
            return None  # load() reports it

    # ------------------------------------------------------------------------ properties --

    @property
    def name(self) -> str:
        return "cosyvoice"

    @property
    def model_version(self) -> str:
        if self._version_override:
            return self._version_override
        if self._fingerprint is None and self._model_dir is not None and self._family is not None:
            self._fingerprint = model_fingerprint(self._model_dir, self._family)
        base = self._fingerprint or "cosyvoice-unloaded"
        return f"{base}-fp16" if self._options.fp16 else base

    @property
    def sample_rate_hz(self) -> int:
        return self._sample_rate

    @property
    def capabilities(self) -> EngineCapabilities:
        return EngineCapabilities(
            presets=self._presets,
            languages=LANGUAGES.get(self._family or "cosyvoice3", frozenset()),
            cloning=True,
            instruct=True,
            cross_lingual=True,
            max_text_chars=5000,
        )

    @property
    def limits(self) -> BatchLimits:
        # One request at a time on the GPU (or `concurrency` with vLLM): a larger batch would
        # only make its first request wait for the others.
        concurrency = self._options.concurrency
        return BatchLimits(max_items=concurrency, max_cost=1500 * concurrency)

    @property
    def family(self) -> str | None:
        return self._family

    @property
    def text_frontend(self) -> str | None:
        """The text normaliser in use once loaded: wetext, ttsfrd or basic."""
        return self._text_frontend

    @property
    def model(self) -> Any:
        """The loaded CosyVoice object (for tests and diagnostics), None before `load()`."""
        return self._model

    # ------------------------------------------------------------------------- lifecycle --

    def load(self) -> None:
        if self._model_dir is None:
            raise EngineLoadError(
                "the cosyvoice engine needs a model: set TTS_MODEL_DIR to a mounted CosyVoice 2 or 3 "
                "model directory (docs/engines.md)"
            )
        model_dir = self._model_dir
        if not model_dir.is_dir():
            raise EngineLoadError(
                f"TTS_MODEL_DIR {model_dir} is not a directory; the engine never downloads models at run "
                "time -- mount it, or copy it with `tts-stream models pull`"
            )
        family = detect_family(model_dir)
        check_model_dir(model_dir, family, self._options)
        self._family = family
        self._warn_about_devices()
        factory = self._factory or import_automodel(load_vllm=self._options.load_vllm)
        kwargs: dict[str, Any] = {
            "model_dir": str(model_dir),
            "load_trt": self._options.load_trt,
            "load_vllm": self._options.load_vllm,
            "fp16": self._options.fp16,
            "trt_concurrent": self._options.trt_concurrent,
        }
        if family == "cosyvoice2":
            kwargs["load_jit"] = self._options.load_jit
        elif self._options.load_jit:
            log.warning("load_jit ignored: CosyVoice 3 has no TorchScript modules")
        text_frontend = textnorm.resolve(self._options.text_frontend, self._options.ttsfrd_resource_dir)
        started = time.monotonic()
        try:
            with root_logging_kept(), textnorm.library_choice_blocked():
                model = factory(**kwargs)
        except EngineLoadError:
            raise
        except Exception as exc:
            if failure_class(exc) == "oom":
                raise EngineLoadError(f"out of GPU memory while loading the model from {model_dir}") from exc
            raise EngineLoadError(
                f"loading the CosyVoice model from {model_dir} failed: {type(exc).__name__}: {exc}"
            ) from exc
        loaded_family = _MODEL_CLASSES.get(type(model).__name__, family)
        if type(model).__name__ == "CosyVoice" or loaded_family != family:
            raise EngineLoadError(f"AutoModel loaded a {type(model).__name__} from a {family} directory")
        frontend = getattr(model, "frontend", None)
        if frontend is not None:
            try:
                textnorm.install(frontend, text_frontend, self._options.ttsfrd_resource_dir)
            except EngineLoadError:
                raise
            except Exception as exc:  # an unreadable FST or resource: the worker must exit 2
                raise EngineLoadError(
                    f"the {text_frontend} text normaliser failed to start: {type(exc).__name__}: {exc}"
                ) from exc
        log.info("cosyvoice text frontend", extra={"text_frontend": text_frontend})
        self._text_frontend = text_frontend
        self._model = model
        self._sample_rate = int(model.sample_rate)
        self._presets = frozenset(str(s) for s in model.list_available_spks())
        if self._options.concurrency > 1:
            self._pool = ThreadPoolExecutor(self._options.concurrency, thread_name_prefix="cosyvoice")
        log.info(
            "cosyvoice model loaded",
            extra={
                "family": family,
                "model_version": self.model_version,
                "sample_rate_hz": self._sample_rate,
                "load_s": round(time.monotonic() - started, 1),
                "concurrency": self._options.concurrency,
                "presets": len(self._presets),
            },
        )

    def _warn_about_devices(self) -> None:
        import torch

        if not torch.cuda.is_available():
            log.warning("no CUDA device: CosyVoice will run on the CPU, far slower than real time")
        elif torch.cuda.device_count() > 1:
            log.warning(
                "CosyVoice uses only the current CUDA device and ignores the others; run one worker "
                "per GPU with CUDA_VISIBLE_DEVICES set to that GPU"
            )

    def warm_up(self) -> None:
        """One short zero-shot synthesis with a synthetic voice, so kernels, allocator pools and
        ONNX sessions are initialised before the first real request."""
        rate = SAMPLE_RATE_HZ
        t = np.arange(3 * rate, dtype=np.float64) / rate
        voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
        envelope = 0.5 * (1 - np.cos(2 * np.pi * 2.5 * t))
        audio = AudioBuffer((0.1 * voiced * envelope).astype(np.float32), rate)
        prompt = PromptAudio(content_id="0" * 64, transcript="Hello, this is a warm up.", audio=audio)
        task = SynthesisTask(key="warm-up", text="Hello.", prompt=prompt)
        try:
            outcome = self.synthesize([task])[0]
        except EngineError as exc:
            raise EngineLoadError(f"the CosyVoice warm-up failed: {exc}") from exc
        finally:
            self._forget_speaker(self._speaker_id(prompt))
        if isinstance(outcome, TaskFailure):
            raise EngineLoadError(f"the CosyVoice warm-up failed: {outcome.message}")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._model = None
        with contextlib.suppress(ImportError):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # ------------------------------------------------------------------------ synthesis --

    def synthesize(self, tasks: Sequence[SynthesisTask]) -> list[TaskOutcome]:
        self._check_usable()
        with tempfile.TemporaryDirectory(prefix="tts-cosyvoice-") as scratch:
            outcomes, runnable = self._prepare(tasks, Path(scratch))
            self._run_all(tasks, runnable, outcomes)
        assert all(outcome is not None for outcome in outcomes)
        return [outcome for outcome in outcomes if outcome is not None]

    def _check_usable(self) -> None:
        if self._broken is not None:  # a broken CUDA context stays broken: never touch it again
            raise AcceleratorFailed(f"the GPU failed earlier and the process must restart: {self._broken}")
        if self._model is None:
            raise EngineError("the cosyvoice engine is not loaded")

    def _prepare(
        self, tasks: Sequence[SynthesisTask], scratch: Path
    ) -> tuple[list[TaskOutcome | None], list[tuple[int, list[Call]]]]:
        """Each task's outcome where it is known without the model (kept from before an
        out-of-memory, or refused), and the model calls of the others, by index."""
        outcomes: list[TaskOutcome | None] = [None] * len(tasks)
        runnable: list[tuple[int, list[Call]]] = []
        in_use: set[str] = set()
        for index, task in enumerate(tasks):
            with self._lock:
                kept = self._kept.pop(task.key, None)
            if kept is not None:
                outcomes[index] = kept
                continue
            try:
                runnable.append((index, self._plan(task, scratch, in_use)))
            except _Rejected as rejected:
                outcomes[index] = rejected.failure
        return outcomes, runnable

    def _run_all(
        self,
        tasks: Sequence[SynthesisTask],
        runnable: list[tuple[int, list[Call]]],
        outcomes: list[TaskOutcome | None],
    ) -> None:
        if self._pool is not None and len(runnable) > 1:
            futures = [(index, self._pool.submit(self._run, calls)) for index, calls in runnable]
            results = [(index, _result_or_error(future.result)) for index, future in futures]
        else:
            results = [
                (index, _result_or_error(functools.partial(self._run, calls))) for index, calls in runnable
            ]
        fatal: BaseException | None = None
        for index, result in results:
            if isinstance(result, AudioBuffer):
                outcomes[index] = result
                continue
            kind = failure_class(result)
            if kind in ("oom", "device"):
                if kind == "device" or fatal is None:  # a broken context outranks memory
                    fatal = result
                continue
            log.warning("cosyvoice task failed", extra={"error": type(result).__name__, "kind": kind})
            log.debug("cosyvoice task failure detail", exc_info=result)
            outcomes[index] = TaskFailure(
                FailureKind.INVALID if kind == "input" else FailureKind.TRANSIENT,
                f"CosyVoice failed on this request ({type(result).__name__})",
            )
        if fatal is None:
            return
        if failure_class(fatal) == "device":
            self._broken = str(fatal)
            raise AcceleratorFailed(f"the GPU failed during synthesis: {fatal}") from fatal
        self._keep_finished(tasks, outcomes)
        empty_cuda_cache()
        raise EngineOutOfMemory(f"out of GPU memory during synthesis ({type(fatal).__name__})") from fatal

    def _keep_finished(self, tasks: Sequence[SynthesisTask], outcomes: list[TaskOutcome | None]) -> None:
        with self._lock:
            for task, outcome in zip(tasks, outcomes, strict=True):
                if isinstance(outcome, AudioBuffer):
                    self._kept[task.key] = outcome
            while len(self._kept) > _KEPT_RESULTS:
                self._kept.popitem(last=False)

    def _run(self, calls: list[Call]) -> AudioBuffer:
        pieces: list[np.ndarray] = []
        for call in calls:
            for output in getattr(self._model, call.method)(**call.kwargs):
                pieces.append(_to_samples(output["tts_speech"]))
        samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        if not len(samples):
            raise ValueError("the model produced no audio")
        return AudioBuffer(np.clip(samples, -1.0, 1.0).astype(np.float32), self._sample_rate)

    # ------------------------------------------------------------------------ planning --

    def _plan(self, task: SynthesisTask, scratch: Path, in_use: set[str]) -> list[Call]:
        """The model calls for one task (and the speaker registration they need)."""
        text = text_rules.strip_special_tokens(task.text)
        segments = text_rules.split_text(text, self._segment_units)
        if not segments:
            raise _reject("the text has nothing to speak", "INVALID_REQUEST")
        common = {"stream": False, "speed": float(task.speed)}
        v3 = self._family == "cosyvoice3"
        if task.prompt is None:
            return self._plan_preset(task, segments, common)
        self._check_prompt(task.prompt)
        if task.style_instruction:
            # Not the cached speaker: its stored prompt text would replace the instruction.
            path = self._prompt_file(task.prompt, scratch)
            instruction = text_rules.instruct_text(task.style_instruction, v3=v3)
            return [
                Call(
                    "inference_instruct2",
                    {
                        "tts_text": segment,
                        "instruct_text": instruction,
                        "prompt_wav": str(path),
                        "zero_shot_spk_id": "",
                        **common,
                    },
                )
                for segment in segments
            ]
        speaker = self._register(task.prompt, scratch, in_use)
        if text_rules.is_cross_lingual(text, task.language, task.prompt.transcript):
            return [
                Call(
                    "inference_cross_lingual",
                    {
                        "tts_text": text_rules.cross_lingual_text(segment, v3=v3),
                        "prompt_wav": "",
                        "zero_shot_spk_id": speaker,
                        **common,
                    },
                )
                for segment in segments
            ]
        return [
            Call(
                "inference_zero_shot",
                {
                    "tts_text": segment,
                    "prompt_text": "",
                    "prompt_wav": "",
                    "zero_shot_spk_id": speaker,
                    **common,
                },
            )
            for segment in segments
        ]

    def _plan_preset(self, task: SynthesisTask, segments: list[str], common: dict[str, Any]) -> list[Call]:
        if task.preset is None or task.preset not in self._presets:
            raise _reject(
                "CosyVoice 2/3 ship no preset voices: use a registered voice or prompt audio",
                "VOICE_NOT_FOUND",
            )
        if task.style_instruction:
            raise _reject("style instructions need a cloned voice on CosyVoice 2/3", "UNSUPPORTED")
        return [
            Call("inference_sft", {"tts_text": segment, "spk_id": task.preset, **common})
            for segment in segments
        ]

    @staticmethod
    def _check_prompt(prompt: PromptAudio) -> None:
        audio = prompt.audio
        if audio.sample_rate_hz < MIN_PROMPT_RATE_HZ:
            raise _reject(f"prompt audio must be sampled at {MIN_PROMPT_RATE_HZ} Hz or more", "VOICE_INVALID")
        if audio.duration_seconds > MAX_PROMPT_SECONDS:
            raise _reject(f"prompt audio is longer than {MAX_PROMPT_SECONDS:g} s", "VOICE_INVALID")
        if not text_rules.speakable(prompt.transcript):
            raise _reject("the prompt transcript is empty", "VOICE_INVALID")

    @staticmethod
    def _speaker_id(prompt: PromptAudio) -> str:
        """One cache entry per audio *and* transcript: both shape what the model learns."""
        digest = hashlib.sha256(f"{prompt.content_id}\n{prompt.transcript}".encode()).hexdigest()
        return f"tts-{digest[:32]}"

    @staticmethod
    def _prompt_file(prompt: PromptAudio, scratch: Path) -> Path:
        import soundfile as sf

        path = scratch / f"{prompt.content_id}-{prompt.audio.sample_rate_hz}.wav"
        if not path.exists():
            sf.write(path, prompt.audio.samples, prompt.audio.sample_rate_hz, format="WAV", subtype="PCM_16")
        return path

    def _register(self, prompt: PromptAudio, scratch: Path, in_use: set[str]) -> str:
        speaker = self._speaker_id(prompt)
        in_use.add(speaker)
        if speaker in self._speakers:
            self._speakers.move_to_end(speaker)
            return speaker
        transcript = text_rules.strip_special_tokens(prompt.transcript)
        prompt_text = text_rules.zero_shot_prompt_text(transcript, v3=self._family == "cosyvoice3")
        path = self._prompt_file(prompt, scratch)
        try:
            self._model.add_zero_shot_spk(prompt_text, str(path), speaker)
        except Exception as exc:
            kind = failure_class(exc)
            if kind == "oom":
                empty_cuda_cache()
                raise EngineOutOfMemory("out of GPU memory while preparing a voice") from exc
            if kind == "device":
                self._broken = str(exc)
                raise AcceleratorFailed(f"the GPU failed while preparing a voice: {exc}") from exc
            log.warning(
                "voice registration failed",
                extra={"voice_id": prompt.content_id, "error": type(exc).__name__},
            )
            raise _reject(
                f"the prompt audio could not be prepared as a CosyVoice voice ({type(exc).__name__})",
                "VOICE_INVALID",
                FailureKind.INVALID if kind == "input" else FailureKind.TRANSIENT,
            ) from exc
        self._speakers[speaker] = None
        self._evict(in_use)
        return speaker

    def _evict(self, in_use: set[str]) -> None:
        for speaker in list(self._speakers):
            if len(self._speakers) <= self._speaker_cache_size:
                return
            if speaker not in in_use:
                self._forget_speaker(speaker)

    def _forget_speaker(self, speaker: str) -> None:
        self._speakers.pop(speaker, None)
        frontend = getattr(self._model, "frontend", None)
        cache = getattr(frontend, "spk2info", None)
        if isinstance(cache, dict):
            cache.pop(speaker, None)


def _result_or_error(run: Callable[[], AudioBuffer]) -> AudioBuffer | Exception:
    try:
        return run()
    except Exception as exc:
        return exc


def _to_samples(speech: Any) -> np.ndarray:
    """`tts_speech` is a (1, n) float tensor on the CPU; doubles accept numpy too."""
    if hasattr(speech, "detach"):
        speech = speech.detach().to("cpu").float().numpy()
    return np.asarray(speech, dtype=np.float32).reshape(-1)


def create_engine(settings: WorkerSettings) -> CosyVoiceEngine:
    """Cheap: nothing is checked or imported until `load()` (which raises EngineLoadError).
    Batched inference unless TTS_COSYVOICE_BATCHING is off -- or vLLM serves the LLM, which
    batches concurrent requests' decoding itself (docs/engines.md)."""
    options = CosyVoiceOptions(
        fp16=settings.cosyvoice_fp16,
        load_jit=settings.cosyvoice_load_jit,
        load_trt=settings.cosyvoice_load_trt,
        load_vllm=settings.cosyvoice_load_vllm,
        trt_concurrent=settings.cosyvoice_trt_concurrent,
        text_frontend=settings.cosyvoice_text_frontend,
        ttsfrd_resource_dir=settings.cosyvoice_ttsfrd_resource_dir,
    )
    if not settings.cosyvoice_batching or settings.cosyvoice_load_vllm:
        if settings.cosyvoice_batching:
            log.info("cosyvoice batching off: vLLM batches the LLM's decoding (TTS_COSYVOICE_LOAD_VLLM)")
        return CosyVoiceEngine(settings.model_dir, options=options, model_version=settings.model_version)
    from consumer.engines.cosyvoice_batched.engine import BatchedCosyVoiceEngine, BatchingOptions

    return BatchedCosyVoiceEngine(
        settings.model_dir,
        options=options,
        model_version=settings.model_version,
        batching=BatchingOptions(
            max_sequences=settings.cosyvoice_batch_max_sequences,
            max_tokens=settings.cosyvoice_batch_max_tokens,
            vocoder_max_items=settings.cosyvoice_vocoder_batch_max,
        ),
    )
