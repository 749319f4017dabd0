"""Safe decoding of cloning prompts into their canonical form.

Prompt audio comes from users, so it is treated as hostile: the bytes are size-checked before
decoding, sniffed for one of four containers (WAV, FLAC, Ogg, MP3) before libsndfile sees them,
decoded with a frame cap (a small compressed file cannot expand into hours of audio), and
checked for channel count, sample rate, duration, finite samples and silence.

The canonical form is what the registry stores and what its content id hashes: mono, 16-bit
PCM WAV at 24 kHz (CANONICAL_RATE_HZ, the rate CosyVoice 2/3 work at). The same input always
gives the same bytes on the same library versions: decoding and resampling run on the CPU.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soundfile as sf

from consumer.audio.encode import to_pcm16
from consumer.engine import AudioBuffer
from consumer.errors import PermanentError

CANONICAL_RATE_HZ = 24_000
MIN_SOURCE_RATE_HZ = 16_000  # below this the model's 16 kHz speech tokenizer gets less than it needs
MAX_SOURCE_RATE_HZ = 192_000
MAX_CHANNELS = 8
MIN_PROMPT_SECONDS = 1.0
SILENCE_DBFS = -60.0  # RMS under this is not speech anyone could clone
# The same stop-band shape as the output resampler (consumer/audio/dsp.py OUTPUT_RESAMPLING).
_KAISER_BETA = 8.555
_FORMATS = {"WAV": "wav", "WAVEX": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3"}


class InvalidPromptAudio(PermanentError):
    """The bytes are not usable prompt audio; the message says why (safe to show a caller)."""


@dataclass(frozen=True, slots=True)
class PromptLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_seconds: float = 30.0
    min_seconds: float = MIN_PROMPT_SECONDS


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What the caller gave us (kept as voice metadata)."""

    format: str
    sample_rate_hz: int
    channels: int
    size_bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class CanonicalPrompt:
    wav: bytes  # mono PCM16 WAV at CANONICAL_RATE_HZ
    content_id: str  # sha256 of `wav`
    audio: AudioBuffer  # exactly the samples in `wav`
    source: SourceInfo

    @property
    def duration_seconds(self) -> float:
        return self.audio.duration_seconds


def sniff_container(data: bytes) -> str | None:
    """The container by its magic bytes, or None for anything else."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0):
        return "mp3"
    return None


def canonicalise(data: bytes, limits: PromptLimits) -> CanonicalPrompt:
    """Decode, check and convert prompt audio. Raises InvalidPromptAudio."""
    if len(data) > limits.max_bytes:
        raise InvalidPromptAudio(f"prompt audio is {len(data)} bytes; the limit is {limits.max_bytes}")
    container = sniff_container(data)
    if container is None:
        raise InvalidPromptAudio("prompt audio is not a WAV, FLAC, Ogg or MP3 file")
    samples, rate, channels = _decode(data, container, limits)
    mono = samples.mean(axis=1, dtype=np.float64) if channels > 1 else samples[:, 0].astype(np.float64)
    if not np.isfinite(mono).all():
        raise InvalidPromptAudio("prompt audio contains samples that are not finite numbers")
    seconds = len(mono) / rate
    if seconds < limits.min_seconds:
        raise InvalidPromptAudio(
            f"prompt audio is {seconds:.2f} s long; at least {limits.min_seconds:g} s of speech is needed"
        )
    rms = math.sqrt(float(np.mean(np.square(mono)))) if len(mono) else 0.0
    if rms <= 0 or 20 * math.log10(rms) < SILENCE_DBFS:
        raise InvalidPromptAudio("prompt audio is silent")
    canonical = _to_canonical_rate(mono.astype(np.float32), rate)
    peak = float(np.max(np.abs(canonical))) if len(canonical) else 0.0
    if peak > 1.0:  # float sources (and resampling overshoot) can exceed full scale
        canonical = canonical / np.float32(peak)
    pcm = to_pcm16(canonical)
    wav = _wav_bytes(pcm)
    return CanonicalPrompt(
        wav=wav,
        content_id=hashlib.sha256(wav).hexdigest(),
        audio=AudioBuffer(pcm.astype(np.float32) / np.float32(32768.0), CANONICAL_RATE_HZ),
        source=SourceInfo(
            format=container,
            sample_rate_hz=rate,
            channels=channels,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        ),
    )


def read_canonical(wav: bytes) -> AudioBuffer:
    """Samples of a stored canonical prompt. Raises InvalidPromptAudio when it is not one."""
    try:
        with sf.SoundFile(io.BytesIO(wav)) as f:
            if (f.format, f.subtype, f.channels, f.samplerate) != ("WAV", "PCM_16", 1, CANONICAL_RATE_HZ):
                raise InvalidPromptAudio("stored prompt audio is not canonical (mono PCM16 WAV at 24 kHz)")
            pcm = f.read(dtype="int16")
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise InvalidPromptAudio(f"stored prompt audio is unreadable: {exc}") from exc
    return AudioBuffer(pcm.astype(np.float32) / np.float32(32768.0), CANONICAL_RATE_HZ)


def canonical_wav(audio: AudioBuffer) -> bytes:
    """Canonical WAV bytes of samples already at CANONICAL_RATE_HZ (e.g. a cached prompt)."""
    if audio.sample_rate_hz != CANONICAL_RATE_HZ:
        raise ValueError(f"expected {CANONICAL_RATE_HZ} Hz, got {audio.sample_rate_hz}")
    return _wav_bytes(to_pcm16(audio.samples))


def _wav_bytes(pcm: npt.NDArray[np.int16]) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, pcm, CANONICAL_RATE_HZ, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _decode(data: bytes, container: str, limits: PromptLimits) -> tuple[npt.NDArray[np.float32], int, int]:
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if _FORMATS.get(f.format) != container:
                raise InvalidPromptAudio("prompt audio's contents do not match its container")
            rate, channels = int(f.samplerate), int(f.channels)
            if not 1 <= channels <= MAX_CHANNELS:
                raise InvalidPromptAudio(f"prompt audio has {channels} channels; at most {MAX_CHANNELS}")
            if not MIN_SOURCE_RATE_HZ <= rate <= MAX_SOURCE_RATE_HZ:
                raise InvalidPromptAudio(
                    f"prompt audio is sampled at {rate} Hz; "
                    f"{MIN_SOURCE_RATE_HZ}-{MAX_SOURCE_RATE_HZ} Hz is needed"
                )
            cap = math.floor(limits.max_seconds * rate)
            declared = int(f.frames) if f.frames and f.frames > 0 else 0
            if declared > cap:
                raise InvalidPromptAudio(_too_long(declared / rate, limits))
            # One frame past the cap tells "exactly at the limit" from "over it" whatever the
            # header claimed.
            samples = f.read(frames=cap + 1, dtype="float32", always_2d=True)
    except InvalidPromptAudio:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, MemoryError) as exc:
        raise InvalidPromptAudio(f"prompt audio could not be decoded as {container}") from exc
    if len(samples) > cap:
        raise InvalidPromptAudio(_too_long(len(samples) / rate, limits, at_least=True))
    return samples, rate, channels


def _too_long(seconds: float, limits: PromptLimits, *, at_least: bool = False) -> str:
    qualifier = "more than " if at_least else ""
    return f"prompt audio is {qualifier}{seconds:.1f} s long; the limit is {limits.max_seconds:g} s"


def _to_canonical_rate(mono: npt.NDArray[np.float32], rate: int) -> npt.NDArray[np.float32]:
    """Polyphase resampling with a Kaiser-windowed sinc (scipy), in float64 on the CPU.

    Not torch: the canonical form is computed wherever a voice is registered, and the HTTP
    gateway (which registers uploads) is producer side and never imports torch. One resampler
    for every entry point keeps a file's voice id the same whoever registers it.
    """
    if rate == CANONICAL_RATE_HZ:
        return mono
    from scipy.signal import resample_poly

    common = math.gcd(rate, CANONICAL_RATE_HZ)
    up, down = CANONICAL_RATE_HZ // common, rate // common
    out = resample_poly(mono.astype(np.float64), up, down, window=("kaiser", _KAISER_BETA))
    return np.asarray(out, dtype=np.float32)
