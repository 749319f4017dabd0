"""The `espeak` engine: eSpeak NG through the `espeakng-loader` wheel, on the CPU, offline.

eSpeak NG keeps global state and is not re-entrant, so the engine runs a pool of worker
processes, each with its own copy of the library; a batch is spread over them. It speaks
presets only: cloning and style instructions are UNSUPPORTED (validation refuses them before
they get here).

Presets are eSpeak voice names ("en-us", "cmn", "de", ...), optionally with a variant
("en-us+f3"). An explicit request language picks the eSpeak voice for that language and keeps
the preset's variant. eSpeak NG is GPL-3.0; this module only loads it at run time (see README).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
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
    FailureKind,
    InvocationCounter,
    SynthesisTask,
    TaskFailure,
    TaskOutcome,
)

if TYPE_CHECKING:
    from consumer.settings import WorkerSettings

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 22050
BASE_WORDS_PER_MINUTE = 175
# BCP-47 primary tags whose eSpeak voice has another name.
LANGUAGE_ALIASES = {
    "zh": "cmn",
    "zh-cn": "cmn",
    "zh-hans": "cmn",
    "zh-hk": "yue",
    "zh-yue": "yue",
    "en": "en-us",
}

# ---------------------------------------------------------------------- inside a pool process --

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_INITIALIZE_DONT_EXIT = 0x8000
_PARAM_RATE = 1
_EE_OK = 0
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Voice(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    )


@dataclass
class _Library:
    lib: Any
    chunks: list[bytes]
    callback: Any  # kept referenced: ctypes must not collect it while the library holds it


_state: _Library | None = None


def _data_dir() -> Path:
    import espeakng_loader

    data = Path(espeakng_loader.get_data_path())
    if not (data / "phontab").is_file():
        raise EngineLoadError(f"eSpeak NG data is incomplete: {data / 'phontab'} is missing")
    # eSpeak NG keeps the data path in a 160-byte buffer; a long venv path would be cut off
    # (and a failed data load is fatal inside the library), so use a short copy instead.
    if len(os.fsencode(str(data))) > 140:
        short = Path(tempfile.gettempdir()) / f"tts-stream-espeak-ng-data-{os.getuid()}"
        if not (short / "phontab").is_file():
            shutil.copytree(data, short, dirs_exist_ok=True)
        data = short
    return data


def _library() -> _Library:
    global _state  # noqa: PLW0603 - one library instance per pool process is the point
    if _state is not None:
        return _state
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint),
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    rate = lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS, 0, os.fsencode(str(_data_dir())), _INITIALIZE_DONT_EXIT
    )
    if rate != SAMPLE_RATE_HZ:
        raise EngineLoadError(f"espeak_Initialize returned {rate}, expected {SAMPLE_RATE_HZ} Hz")
    chunks: list[bytes] = []

    def collect(wav: Any, count: int, _events: Any) -> int:
        if wav and count > 0:
            chunks.append(ctypes.string_at(wav, count * 2))
        return 0

    callback = _SYNTH_CALLBACK(collect)
    lib.espeak_SetSynthCallback(callback)
    _state = _Library(lib, chunks, callback)
    return _state


def _list_voices() -> tuple[dict[str, str], list[str]]:
    """({language code: voice identifier}, variant names) as eSpeak reports them.

    eSpeak selects voices by file identifier ("gmw/en" for British English) while people name
    them by language ("en-gb"); the preset names we accept are the language codes.
    """
    state = _library()
    best: dict[str, tuple[int, str]] = {}
    voices = state.lib.espeak_ListVoices(None)
    i = 0
    while voices[i]:
        voice = voices[i].contents
        identifier = (voice.identifier or b"").decode("ascii", "replace")
        raw: bytes = voice.languages or b""
        # languages: repeated (priority byte, NUL-terminated code), ended by an empty code.
        pos = 0
        while pos < len(raw):
            end = raw.find(b"\x00", pos + 1)
            end = len(raw) if end < 0 else end
            code = raw[pos + 1 : end].decode("ascii", "replace").lower()
            if code and (code not in best or raw[pos] < best[code][0]):
                best[code] = (raw[pos], identifier)
            pos = end + 1
        i += 1
    languages = {code: identifier for code, (_, identifier) in best.items()}
    # Primary subtags ("fr" for "fr-fr") resolve to the highest-priority voice of that language.
    for code, (priority, identifier) in sorted(best.items(), key=lambda item: item[1][0]):
        primary = code.split("-", 1)[0]
        if primary not in languages or best.get(primary, (99, ""))[0] > priority:
            languages.setdefault(primary, identifier)
    variants = sorted(p.name for p in (_data_dir() / "voices" / "!v").iterdir() if p.is_file())
    return languages, variants


def _speak(text: str, voice: str, speed: float) -> bytes:
    """Raw PCM s16 mono at 22050 Hz. Raises ValueError for an unknown voice."""
    state = _library()
    lib = state.lib
    if lib.espeak_SetVoiceByName(voice.encode("ascii", "replace")) != _EE_OK:
        raise ValueError(f"eSpeak NG has no voice {voice!r}")
    lib.espeak_SetParameter(_PARAM_RATE, round(BASE_WORDS_PER_MINUTE * speed), 0)
    state.chunks.clear()
    buffer = ctypes.create_string_buffer(text.encode("utf-8"))
    err = lib.espeak_Synth(buffer, len(buffer), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
    if err != _EE_OK:
        raise RuntimeError(f"espeak_Synth failed with code {err}")
    lib.espeak_Synchronize()
    return b"".join(state.chunks)


def _speak_job(job: tuple[str, str, float]) -> tuple[str, bytes | str]:
    """Pool entry point: ("ok", pcm) or ("invalid" | "error", message). Never raises, so one
    bad task cannot fail the others in its chunk."""
    text, voice, speed = job
    try:
        return "ok", _speak(text, voice, speed)
    except ValueError as exc:
        return "invalid", str(exc)
    except Exception as exc:
        return "error", f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------- the engine ------


class EspeakEngine:
    """Engine on a pool of eSpeak NG processes."""

    def __init__(self, processes: int = 0, *, model_version: str | None = None) -> None:
        self._processes = processes or max(1, os.cpu_count() or 1)
        self._pool: ProcessPoolExecutor | None = None
        self._voices: dict[str, str] = {}
        self._variants: frozenset[str] = frozenset()
        self._model_version = model_version or "espeak-ng-1.52"
        self.invocations = InvocationCounter()

    @property
    def name(self) -> str:
        return "espeak"

    @property
    def model_version(self) -> str:
        return self._model_version

    @property
    def sample_rate_hz(self) -> int:
        return SAMPLE_RATE_HZ

    @property
    def capabilities(self) -> EngineCapabilities:
        return EngineCapabilities(
            presets=frozenset(self._voices),
            languages=frozenset(self._voices) | frozenset(LANGUAGE_ALIASES),
            cloning=False,
            instruct=False,
        )

    @property
    def limits(self) -> BatchLimits:
        # Tiny per-item cost: batches only amortise the process hop, so keep them modest.
        return BatchLimits(max_items=8 * self._processes, max_cost=4000 * self._processes)

    def load(self) -> None:
        try:
            import espeakng_loader  # noqa: F401 - fail early with a clear message
        except ImportError as exc:
            raise EngineLoadError(
                "the espeak engine needs the espeak extra: pip install 'tts-stream[espeak]'"
            ) from exc
        # Spawned, not forked: the worker process already runs Kafka and HTTP threads.
        context = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(max_workers=self._processes, mp_context=context)
        try:
            voices, variants = self._pool.submit(_list_voices).result(timeout=60)
        except EngineLoadError:
            raise
        except Exception as exc:
            raise EngineLoadError(f"eSpeak NG failed to start: {exc}") from exc
        self._voices = voices
        self._variants = frozenset(variants)
        log.info("espeak engine loaded", extra={"processes": self._processes, "voices": len(voices)})

    def warm_up(self) -> None:
        # Touch every pool process so none pays for initialisation during the first real batch.
        pool = self._require_pool()
        list(pool.map(_speak_job, [("warm up", "en-us", 1.0)] * self._processes))

    def voice_for(self, task: SynthesisTask) -> str:
        """The eSpeak voice name for a task: the language's voice file plus the preset's variant."""
        preset = (task.preset or "en-us").lower()
        base, _, variant = preset.partition("+")
        if task.language:
            base = task.language.lower()
        base = LANGUAGE_ALIASES.get(base, base)
        identifier = self._voices.get(base) or self._voices.get(base.split("-", 1)[0], base)
        return f"{identifier}+{variant}" if variant else identifier

    def synthesize(self, tasks: Sequence[SynthesisTask]) -> list[TaskOutcome]:
        pool = self._require_pool()
        self.invocations.record(tasks)
        outcomes: list[TaskOutcome | None] = [None] * len(tasks)
        jobs: list[tuple[str, str, float]] = []
        positions: list[int] = []
        for i, task in enumerate(tasks):
            voice = self.voice_for(task)
            variant = voice.partition("+")[2]
            if variant and variant not in self._variants:
                outcomes[i] = TaskFailure(
                    FailureKind.INVALID, f"unknown eSpeak variant {variant!r}", "VOICE_NOT_FOUND"
                )
                continue
            jobs.append((task.text, voice, task.speed))
            positions.append(i)
        try:
            results = list(pool.map(_speak_job, jobs, chunksize=max(1, len(jobs) // (2 * self._processes))))
        except Exception as exc:  # a pool process died (BrokenProcessPool) or the pool is shut down
            raise EngineError(f"eSpeak NG pool failed: {exc}") from exc
        for i, (status, payload) in zip(positions, results, strict=True):
            if status == "ok":
                assert isinstance(payload, bytes)
                samples = np.frombuffer(payload, dtype="<i2").astype(np.float32) / 32768.0
                outcomes[i] = AudioBuffer(samples, SAMPLE_RATE_HZ)
            elif status == "invalid":
                outcomes[i] = TaskFailure(FailureKind.INVALID, str(payload), "VOICE_NOT_FOUND")
            else:
                outcomes[i] = TaskFailure(FailureKind.TRANSIENT, str(payload))
        return [o for o in outcomes if o is not None]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _require_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            raise EngineError("the espeak engine is not loaded")
        return self._pool


def create_engine(settings: WorkerSettings) -> EspeakEngine:
    return EspeakEngine(settings.espeak_processes, model_version=settings.model_version)
