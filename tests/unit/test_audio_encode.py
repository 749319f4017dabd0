"""Encoding: every format decodes back to the same length, bytes are deterministic."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from consumer.audio.encode import (
    OGG_SERIAL,
    CodecSettings,
    decoded_frames,
    encode,
    ogg_checksum,
    set_ogg_serial,
    to_pcm16,
)
from schemas.model import AudioFormat


def signal(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 2 * t)).astype(np.float32)


@pytest.mark.parametrize("fmt", list(AudioFormat))
@pytest.mark.parametrize("rate", [16_000, 24_000, 48_000])
def test_every_format_decodes_to_the_same_length_and_rate(fmt: AudioFormat, rate: int) -> None:
    samples = signal(1.7, rate)
    data = encode(samples, rate, fmt)
    decoded, decoded_rate = sf.read(io.BytesIO(data), dtype="float32")
    assert decoded_rate == rate
    assert len(decoded) == len(samples)
    assert decoded_frames(data) == (len(samples), rate)
    assert encode(samples, rate, fmt) == data  # deterministic, Ogg serial included


def test_pcm_formats_are_exact_at_16_bits() -> None:
    samples = signal(0.5, 24_000)
    for fmt in (AudioFormat.WAV, AudioFormat.FLAC):
        decoded, _ = sf.read(io.BytesIO(encode(samples, 24_000, fmt)), dtype="int16")
        assert np.array_equal(decoded, to_pcm16(samples))


def test_pcm16_conversion_rounds_and_saturates() -> None:
    converted = to_pcm16(np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, 1 / 65536], dtype=np.float32))
    assert converted.tolist() == [0, 16384, -16384, 32767, -32768, 32767, 0]


def test_rates_the_codec_cannot_carry_are_refused() -> None:
    with pytest.raises(ValueError, match="Opus"):
        encode(signal(0.1, 22_050), 22_050, AudioFormat.OGG_OPUS)
    with pytest.raises(ValueError, match="MP3"):
        encode(signal(0.1, 96_000), 96_000, AudioFormat.MP3)


def test_lossy_quality_settings_change_the_size() -> None:
    samples = signal(2.0, 48_000) + np.float32(0.01) * np.random.default_rng(0).standard_normal(
        96_000
    ).astype(np.float32)
    small = encode(samples, 48_000, AudioFormat.OGG_OPUS, CodecSettings(opus_compression=0.95))
    large = encode(samples, 48_000, AudioFormat.OGG_OPUS, CodecSettings(opus_compression=0.5))
    assert len(small) < len(large)
    assert CodecSettings().token == "opus=0.80;mp3=vbr0.50"


def test_ogg_checksum_reproduces_libsndfiles_pages() -> None:
    buffer = io.BytesIO()
    sf.write(buffer, signal(1.0, 48_000), 48_000, format="OGG", subtype="OPUS")
    data = buffer.getvalue()
    position = pages = 0
    while position < len(data):
        segments = data[position + 26]
        length = 27 + segments + sum(data[position + 27 : position + 27 + segments])
        page = bytearray(data[position : position + length])
        stored = int.from_bytes(page[22:26], "little")
        page[22:26] = bytes(4)
        assert ogg_checksum(bytes(page)) == stored
        position += length
        pages += 1
    assert pages >= 3
    fixed = set_ogg_serial(data, OGG_SERIAL)
    assert fixed[14:18] == OGG_SERIAL.to_bytes(4, "little")
    assert len(sf.read(io.BytesIO(fixed))[0]) == 48_000


def test_a_non_ogg_stream_is_refused() -> None:
    with pytest.raises(ValueError, match="not an Ogg page"):
        set_ogg_serial(b"RIFF....", 1)
