"""Real speech for audio and voice tests: eSpeak NG through the product's own espeak engine.

Synthesising starts a pool process (about a second), so phrases are made once per session.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import cache

import numpy as np
import soundfile as sf

from consumer.engine import AudioBuffer, SynthesisTask

PHRASES = (
    "The quick brown fox jumps over the lazy dog, and then it runs far away into the forest.",
    "Numbers like 1234 and dates like March fifth are read out loud by the engine.",
    "A short one.",
)


@cache
def _speak_all(phrases: tuple[tuple[str, str], ...]) -> tuple[AudioBuffer, ...]:
    from consumer.engines.espeak import EspeakEngine

    engine = EspeakEngine(processes=1)
    engine.load()
    try:
        tasks = [
            SynthesisTask(key=str(i), text=text, preset=voice) for i, (text, voice) in enumerate(phrases)
        ]
        outcomes = engine.synthesize(tasks)
    finally:
        engine.close()
    buffers = []
    for outcome in outcomes:
        assert isinstance(outcome, AudioBuffer), outcome
        buffers.append(outcome)
    return tuple(buffers)


def speech(text: str = PHRASES[0], voice: str = "en-us") -> AudioBuffer:
    return speeches([(text, voice)])[0]


def speeches(phrases: Sequence[tuple[str, str]]) -> list[AudioBuffer]:
    return list(_speak_all(tuple(phrases)))


def wav_bytes(
    audio: AudioBuffer, *, subtype: str = "PCM_16", rate: int | None = None, channels: int = 1
) -> bytes:
    """Encode (optionally resampled by simple interpolation, and duplicated to `channels`)."""
    samples = audio.samples
    target = rate or audio.sample_rate_hz
    if target != audio.sample_rate_hz:
        n = round(len(samples) * target / audio.sample_rate_hz)
        samples = np.interp(
            np.arange(n) * audio.sample_rate_hz / target, np.arange(len(samples)), samples
        ).astype(np.float32)
    data = np.repeat(samples[:, None], channels, axis=1) if channels > 1 else samples
    buffer = io.BytesIO()
    sf.write(buffer, data, target, format="WAV", subtype=subtype)
    return buffer.getvalue()


def encoded(audio: AudioBuffer, fmt: str, subtype: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio.samples, audio.sample_rate_hz, format=fmt, subtype=subtype)
    return buffer.getvalue()
