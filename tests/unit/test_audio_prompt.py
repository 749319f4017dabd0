"""Safe decoding of prompt audio into the canonical form (mono PCM16 WAV at 24 kHz)."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import soundfile as sf

from consumer.audio.prompt import (
    CANONICAL_RATE_HZ,
    InvalidPromptAudio,
    PromptLimits,
    canonical_wav,
    canonicalise,
    read_canonical,
    sniff_container,
)
from consumer.errors import PermanentError

LIMITS = PromptLimits(max_bytes=2 * 1024 * 1024, max_seconds=10.0)


def voice(seconds: float = 3.0, rate: int = 44_100, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 170 * t) * np.clip(np.sin(2 * np.pi * 2 * t), 0, None)
    mono = mono + 0.01 * rng.standard_normal(len(t))
    return (
        np.repeat(mono[:, None], channels, axis=1).astype(np.float32)
        if channels > 1
        else mono.astype(np.float32)
    )


def file_bytes(samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "subtype", "container"),
    [
        ("WAV", "PCM_16", "wav"),
        ("WAV", "FLOAT", "wav"),
        ("FLAC", "PCM_24", "flac"),
        ("OGG", "VORBIS", "ogg"),
        ("OGG", "OPUS", "ogg"),
        ("MP3", "MPEG_LAYER_III", "mp3"),
    ],
)
def test_every_accepted_container_becomes_canonical(fmt: str, subtype: str, container: str) -> None:
    rate = 48_000 if subtype == "OPUS" else 44_100
    data = file_bytes(voice(3.0, rate, channels=2), rate, fmt, subtype)
    prompt = canonicalise(data, LIMITS)
    assert prompt.source.format == container
    assert prompt.source.channels == 2
    assert prompt.source.sha256 == hashlib.sha256(data).hexdigest()
    assert prompt.audio.sample_rate_hz == CANONICAL_RATE_HZ
    assert prompt.duration_seconds == pytest.approx(3.0, abs=0.06)
    info = sf.info(io.BytesIO(prompt.wav))
    assert (info.format, info.subtype, info.channels, info.samplerate) == ("WAV", "PCM_16", 1, 24_000)
    assert prompt.content_id == hashlib.sha256(prompt.wav).hexdigest()


def test_the_content_id_is_deterministic_and_follows_the_sound() -> None:
    data = file_bytes(voice(seed=1), 44_100)
    assert canonicalise(data, LIMITS).content_id == canonicalise(data, LIMITS).content_id
    other = file_bytes(voice(seed=2), 44_100)
    assert canonicalise(other, LIMITS).content_id != canonicalise(data, LIMITS).content_id
    # The same sound in another container is the same voice.
    pcm = (np.round(voice(seed=1, rate=24_000) * 32768) / 32768).astype(np.float32)
    as_wav = canonicalise(file_bytes(pcm, 24_000, "WAV", "PCM_16"), LIMITS)
    as_flac = canonicalise(file_bytes(pcm, 24_000, "FLAC", "PCM_16"), LIMITS)
    assert as_wav.content_id == as_flac.content_id


def test_canonical_input_is_kept_sample_for_sample() -> None:
    pcm = np.round(voice(rate=24_000) * 32768).astype(np.int16)
    prompt = canonicalise(file_bytes(pcm, 24_000, "WAV", "PCM_16"), LIMITS)
    assert np.array_equal(np.round(prompt.audio.samples * 32768).astype(np.int16), pcm)
    assert read_canonical(prompt.wav).samples.tobytes() == prompt.audio.samples.tobytes()
    assert canonical_wav(prompt.audio) == prompt.wav


def test_float_audio_over_full_scale_is_scaled_not_clipped() -> None:
    loud = voice(rate=24_000) * np.float32(5.0)
    prompt = canonicalise(file_bytes(loud, 24_000, "WAV", "FLOAT"), LIMITS)
    assert np.max(np.abs(prompt.audio.samples)) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<html><body>hello</body></html>", "not a WAV, FLAC, Ogg or MP3"),
        (b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunkjunk", "could not be decoded"),
        (b"OggS" + b"\x00" * 200, "could not be decoded"),
        (b"", "not a WAV"),
    ],
)
def test_not_audio_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(InvalidPromptAudio, match=message):
        canonicalise(data, LIMITS)


def test_a_container_claiming_to_be_something_else_is_refused() -> None:
    flac = file_bytes(voice(), 44_100, "FLAC")
    disguised = b"RIFF\x00\x00\x00\x00WAVE" + flac  # a RIFF header stuck on other bytes
    with pytest.raises(InvalidPromptAudio):
        canonicalise(disguised, LIMITS)


def test_limits_are_enforced() -> None:
    with pytest.raises(InvalidPromptAudio, match="bytes; the limit"):
        canonicalise(b"RIFF" + b"\x00" * (LIMITS.max_bytes + 1), LIMITS)
    with pytest.raises(InvalidPromptAudio, match="the limit is 10 s"):
        canonicalise(file_bytes(voice(11.0, 16_000), 16_000, "FLAC"), LIMITS)
    with pytest.raises(InvalidPromptAudio, match="at least 1 s"):
        canonicalise(file_bytes(voice(0.5), 44_100), LIMITS)
    with pytest.raises(InvalidPromptAudio, match="8000 Hz"):
        canonicalise(file_bytes(voice(3.0, 8_000), 8_000), LIMITS)
    with pytest.raises(InvalidPromptAudio, match="9 channels"):
        canonicalise(file_bytes(voice(2.0, 16_000, channels=9), 16_000), LIMITS)


def test_a_small_file_cannot_expand_past_the_duration_limit() -> None:
    # Two minutes of near-silence compress to a few kilobytes; decoding stops at the cap.
    hours = np.zeros(120 * 16_000, np.float32)
    hours[::1000] = 0.5
    data = file_bytes(hours, 16_000, "FLAC")
    assert len(data) < LIMITS.max_bytes
    with pytest.raises(InvalidPromptAudio, match="the limit is 10 s"):
        canonicalise(data, LIMITS)


def test_silence_and_non_finite_samples_are_refused() -> None:
    with pytest.raises(InvalidPromptAudio, match="silent"):
        canonicalise(file_bytes(np.zeros(48_000, np.float32), 24_000), LIMITS)
    with pytest.raises(InvalidPromptAudio, match="silent"):
        canonicalise(file_bytes(voice(rate=24_000) * np.float32(1e-4), 24_000, "WAV", "FLOAT"), LIMITS)
    broken = voice(rate=24_000)
    broken[1000] = np.nan
    with pytest.raises(InvalidPromptAudio, match="finite"):
        canonicalise(file_bytes(broken, 24_000, "WAV", "FLOAT"), LIMITS)


def test_invalid_prompt_audio_is_permanent() -> None:
    assert issubclass(InvalidPromptAudio, PermanentError)


def test_stored_audio_must_be_canonical() -> None:
    with pytest.raises(InvalidPromptAudio, match="not canonical"):
        read_canonical(file_bytes(voice(rate=44_100), 44_100))
    with pytest.raises(InvalidPromptAudio, match="unreadable"):
        read_canonical(b"RIFF....WAVE")


@pytest.mark.parametrize(
    ("head", "container"),
    [
        (b"RIFF\x10\x00\x00\x00WAVEfmt ", "wav"),
        (b"fLaC\x00", "flac"),
        (b"OggS\x00", "ogg"),
        (b"ID3\x04", "mp3"),
        (b"\xff\xfb\x90\x00", "mp3"),
        (b"\x00\x00\x00\x18ftypM4A ", None),
        (b"#!/bin/sh", None),
    ],
)
def test_sniffing(head: bytes, container: str | None) -> None:
    assert sniff_container(head) == container
