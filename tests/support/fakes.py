"""In-process stand-ins for unit tests of pure logic (never the proof that a feature works)."""

from __future__ import annotations

import hashlib
import io
import wave
from collections.abc import Sequence

import numpy as np

from consumer.engine import AudioBuffer
from consumer.errors import VoiceResolutionError
from consumer.ports import EncodedAudio, FinishSpec, Resolution
from schemas.keys import ResolvedVoice
from schemas.model import ErrorCode, PresetVoice, Voice


class WavFinisher:
    """PCM16 WAV at the engine's rate, no loudness processing."""

    def profile(self, loudness_lufs: float) -> str:
        return "wav-only"

    def finish(self, items: Sequence[tuple[AudioBuffer, FinishSpec]]) -> list[EncodedAudio]:
        out = []
        for audio, _spec in items:
            buf = io.BytesIO()
            with wave.open(buf, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(audio.sample_rate_hz)
                w.writeframes((np.clip(audio.samples, -1, 1) * 32767).astype("<i2").tobytes())
            data = buf.getvalue()
            out.append(
                EncodedAudio(
                    data,
                    "audio/wav",
                    audio.sample_rate_hz,
                    audio.duration_seconds,
                    hashlib.sha256(data).hexdigest(),
                )
            )
        return out


class PresetResolver:
    def resolve(self, voice: Voice) -> Resolution:
        if isinstance(voice, PresetVoice):
            return Resolution(ResolvedVoice(preset=voice.name))
        raise VoiceResolutionError(ErrorCode.VOICE_NOT_FOUND, "only presets in this fake")


class TrippingResolver(PresetResolver):
    """Presets, except that the voice "boom" trips over a bug."""

    def resolve(self, voice: Voice) -> Resolution:
        if voice == PresetVoice("boom"):
            raise RuntimeError("resolver bug")
        return super().resolve(voice)
