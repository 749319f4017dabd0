"""The audio finisher: resample, loudness-normalise, true-peak limit and encode a batch.

`TorchAudioFinisher` implements `consumer.ports.AudioFinisher`. The signal chain runs batched on
one torch device (`TTS_DEVICE`: auto, cpu, cuda, cuda:N); encoding runs on the CPU. Importing
this module does not import torch: the constructor does. docs/audio.md describes the chain.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from consumer.audio.encode import OPUS_DEFAULT_RATE_HZ, OPUS_RATES_HZ, CodecSettings, encode
from consumer.engine import AudioBuffer
from consumer.errors import ConfigurationError
from consumer.ports import AudioFinisher, EncodedAudio, FinishSpec
from schemas.keys import loudness_token
from schemas.model import AudioFormat

if TYPE_CHECKING:
    import torch

    from consumer.settings import WorkerSettings

log = logging.getLogger(__name__)

PIPELINE_VERSION = "pp1"  # bump when the chain changes in a way the settings do not capture
MIN_SECONDS = 0.01  # an empty buffer becomes this much silence: every format needs one frame
DEFAULT_MAX_GAIN_DB = 30.0
# Aim this far under the configured ceiling so another meter's interpolator (a few hundredths
# of a dB apart from ours) still reads the file as compliant.
CEILING_MARGIN_DB = 0.1
# Largest padded batch (items x samples) handled at once: the 4-16x oversampled peak
# detector holds a few copies of it, so this bounds memory at a few hundred MB.
MAX_BATCH_SAMPLES = 8_000_000


def resolve_device(name: str) -> torch.device:
    """`auto` picks the first GPU when torch sees one. An explicit GPU that is missing is a
    configuration error (the worker must not silently run its audio chain elsewhere)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigurationError(
            f"TTS_DEVICE={name!r} is not a torch device (auto, cpu, cuda, cuda:N)"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"TTS_DEVICE={name!r} but torch sees no CUDA device")
    return device


class TorchAudioFinisher:
    """Post-processing for the worker (see module docstring)."""

    def __init__(
        self,
        *,
        true_peak_dbtp: float = -1.0,
        device: str = "auto",
        max_gain_db: float = DEFAULT_MAX_GAIN_DB,
        codec: CodecSettings | None = None,
        encode_threads: int = 1,
    ) -> None:
        from consumer.audio import dsp

        self._device = resolve_device(device)
        self._limiter = dsp.LimiterSettings(ceiling_dbtp=true_peak_dbtp - CEILING_MARGIN_DB)
        self._true_peak_dbtp = true_peak_dbtp
        self._max_gain_db = max_gain_db
        self._codec = codec or CodecSettings()
        self._encoders = ThreadPoolExecutor(encode_threads, "encode") if encode_threads > 1 else None
        self._settings_token = ";".join(
            (
                PIPELINE_VERSION,
                f"tp={true_peak_dbtp:.1f}",
                f"maxgain={max_gain_db:g}",
                f"rs={dsp.OUTPUT_RESAMPLING.token}",
                self._codec.token,
            )
        )

    @classmethod
    def from_settings(cls, settings: WorkerSettings, *, encode_threads: int = 1) -> TorchAudioFinisher:
        return cls(
            true_peak_dbtp=settings.true_peak_dbtp, device=settings.device, encode_threads=encode_threads
        )

    @property
    def device(self) -> str:
        return str(self._device)

    def profile(self, loudness_lufs: float) -> str:
        """Every setting that changes the output, for the cache key."""
        return f"lufs={loudness_token(loudness_lufs)};{self._settings_token}"

    def close(self) -> None:
        if self._encoders is not None:
            self._encoders.shutdown(wait=True)

    # ---------------------------------------------------------------------------- the chain --

    def finish(self, items: Sequence[tuple[AudioBuffer, FinishSpec]]) -> list[EncodedAudio]:
        started = time.perf_counter()
        processed: list[np.ndarray | None] = [None] * len(items)
        rates = [self.output_rate(audio, spec) for audio, spec in items]
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, (audio, _) in enumerate(items):
            if not np.any(audio.samples):
                # Silence has no loudness to normalise and no peak to limit: only its length
                # changes with the rate. (The null engine's output; real speech never takes this.)
                processed[index] = _silence(audio, rates[index])
                continue
            groups[(audio.sample_rate_hz, rates[index])].append(index)
        for (source_hz, target_hz), members in groups.items():
            for chunk in _chunks(members, items, source_hz, target_hz):
                outputs = self._process(
                    [_samples(items[i][0]) for i in chunk],
                    [items[i][1].loudness_lufs for i in chunk],
                    source_hz,
                    target_hz,
                )
                for index, samples in zip(chunk, outputs, strict=True):
                    processed[index] = samples
        jobs: list[tuple[np.ndarray, int, AudioFormat]] = []
        for done, rate, (_, spec) in zip(processed, rates, items, strict=True):
            assert done is not None  # every index belongs to exactly one group
            jobs.append((done, rate, spec.output_format))
        if self._encoders is not None:
            encoded = list(self._encoders.map(lambda job: self._encode(*job), jobs))
        else:
            encoded = [self._encode(*job) for job in jobs]
        audio_s = sum(e.duration_seconds for e in encoded)
        log.debug(
            "finished audio batch",
            extra={
                "items": len(items),
                "audio_seconds": round(audio_s, 3),
                "elapsed_s": round(time.perf_counter() - started, 4),
                "device": str(self._device),
            },
        )
        return encoded

    @staticmethod
    def output_rate(audio: AudioBuffer, spec: FinishSpec) -> int:
        if spec.output_format is AudioFormat.OGG_OPUS:
            rate = spec.sample_rate_hz or OPUS_DEFAULT_RATE_HZ
            return rate if rate in OPUS_RATES_HZ else OPUS_DEFAULT_RATE_HZ
        return spec.sample_rate_hz or audio.sample_rate_hz

    def _process(
        self, samples: list[np.ndarray], targets_lufs: list[float], source_hz: int, target_hz: int
    ) -> list[np.ndarray]:
        from consumer.audio import dsp

        batch = dsp.to_batch(samples, self._device)
        batch, lengths = dsp.resample(batch, [len(s) for s in samples], source_hz, target_hz)
        batch, report = dsp.normalise(
            batch, lengths, target_hz, targets_lufs, self._limiter, max_gain_db=self._max_gain_db
        )
        for item in report:
            log.debug(
                "normalised audio",
                extra={
                    "measured_lufs": round(item.measured_lufs, 2),
                    "gain_db": round(item.gain_db, 2),
                    "limiter_db": round(item.limiter_db, 2),
                    "lufs": round(item.lufs, 2),
                },
            )
        return dsp.from_batch(batch, lengths)

    def _encode(self, samples: np.ndarray, rate: int, output_format: AudioFormat) -> EncodedAudio:
        data = encode(samples, rate, output_format, self._codec)
        return EncodedAudio(
            data=data,
            content_type=output_format.content_type,
            sample_rate_hz=rate,
            duration_seconds=len(samples) / rate,
            sha256=hashlib.sha256(data).hexdigest(),
        )


if TYPE_CHECKING:
    _conforms: type[AudioFinisher] = TorchAudioFinisher


def _silence(audio: AudioBuffer, rate_hz: int) -> np.ndarray:
    from consumer.audio import dsp

    length = max(len(audio.samples), round(MIN_SECONDS * audio.sample_rate_hz))
    return np.zeros(max(1, dsp.resampled_length(length, audio.sample_rate_hz, rate_hz)), dtype=np.float32)


def _samples(audio: AudioBuffer) -> np.ndarray:
    if len(audio.samples) == 0:
        return np.zeros(max(1, round(MIN_SECONDS * audio.sample_rate_hz)), dtype=np.float32)
    return audio.samples


def _chunks(
    members: list[int], items: Sequence[tuple[AudioBuffer, FinishSpec]], source_hz: int, target_hz: int
) -> list[list[int]]:
    """Split a group so no padded batch exceeds MAX_BATCH_SAMPLES; sorting by length first
    keeps the padding (wasted work) small."""
    ordered = sorted(members, key=lambda i: len(items[i][0].samples))
    chunks: list[list[int]] = []
    current: list[int] = []
    scale = max(1.0, target_hz / source_hz)
    for index in ordered:
        longest = len(items[index][0].samples) * scale  # sorted: the newcomer is the longest
        if current and (len(current) + 1) * longest > MAX_BATCH_SAMPLES:
            chunks.append(current)
            current = []
        current.append(index)
    if current:
        chunks.append(current)
    return chunks
