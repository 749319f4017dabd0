"""Encoding finished audio with libsndfile (through soundfile): WAV and FLAC as 16-bit PCM,
Ogg Opus and MP3 (libsndfile 1.2 has both encoders built in).

Output is deterministic: the same samples always give the same bytes, so an object's sha256
says what it sounds like. libsndfile gives each Ogg stream a random serial number; we rewrite it
to a constant (and fix the page checksums), which is all that differed between two encodes.
"""

from __future__ import annotations

import io
import wave
import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soundfile as sf

from schemas.model import AudioFormat

OPUS_RATES_HZ = frozenset({8000, 12000, 16000, 24000, 48000})
OPUS_DEFAULT_RATE_HZ = 48_000
MP3_RATES_HZ = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
OGG_SERIAL = 0x74747373  # "ttss": one logical stream per file, so any fixed value is valid

_CONTAINERS = {
    AudioFormat.WAV: ("WAV", "PCM_16"),
    AudioFormat.FLAC: ("FLAC", "PCM_16"),
    AudioFormat.OGG_OPUS: ("OGG", "OPUS"),
    AudioFormat.MP3: ("MP3", "MPEG_LAYER_III"),
}


@dataclass(frozen=True, slots=True)
class CodecSettings:
    """Settings of the lossy encoders (libsndfile's 0..1 compression level: lower is better
    quality). The defaults give ~60 kbit/s Opus and ~65 kbit/s VBR MP3 at 48 kHz speech."""

    opus_compression: float = 0.8
    mp3_compression: float = 0.5

    @property
    def token(self) -> str:
        return f"opus={self.opus_compression:.2f};mp3=vbr{self.mp3_compression:.2f}"


def to_pcm16(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    """Float to 16-bit with rounding and saturation (x * 32768, the scale libsndfile reads
    with, so a decode and re-encode of 16-bit audio is lossless)."""
    scaled = np.round(np.asarray(samples, dtype=np.float64) * 32768.0)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def encode(
    samples: npt.NDArray[np.float32],
    sample_rate_hz: int,
    output_format: AudioFormat,
    codec: CodecSettings | None = None,
) -> bytes:
    """Encode mono samples. Raises ValueError for a rate the format cannot carry."""
    codec = codec or CodecSettings()
    container, subtype = _CONTAINERS[output_format]
    if output_format is AudioFormat.OGG_OPUS and sample_rate_hz not in OPUS_RATES_HZ:
        raise ValueError(f"Opus cannot carry {sample_rate_hz} Hz")
    if output_format is AudioFormat.MP3 and sample_rate_hz not in MP3_RATES_HZ:
        raise ValueError(f"MP3 cannot carry {sample_rate_hz} Hz")
    buffer = io.BytesIO()
    if output_format is AudioFormat.WAV:
        # The standard library writes a plain 44-byte PCM header without libsndfile's per-call
        # set-up, which dominated the cost of short clips.
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(sample_rate_hz)
            out.writeframes(to_pcm16(samples).astype("<i2", copy=False).tobytes())
        return buffer.getvalue()
    if output_format is AudioFormat.FLAC:
        sf.write(buffer, to_pcm16(samples), sample_rate_hz, format=container, subtype=subtype)
        return buffer.getvalue()
    data = np.ascontiguousarray(samples, dtype=np.float32)
    if output_format is AudioFormat.OGG_OPUS:
        sf.write(
            buffer,
            data,
            sample_rate_hz,
            format=container,
            subtype=subtype,
            compression_level=codec.opus_compression,
        )
        return set_ogg_serial(buffer.getvalue(), OGG_SERIAL)
    sf.write(
        buffer,
        data,
        sample_rate_hz,
        format=container,
        subtype=subtype,
        compression_level=codec.mp3_compression,
        bitrate_mode="VARIABLE",
    )
    return buffer.getvalue()


def decoded_frames(data: bytes) -> tuple[int, int]:
    """(frames, rate) as a decoder reports them from the encoded bytes."""
    info = sf.info(io.BytesIO(data))
    return int(info.frames), int(info.samplerate)


# ----------------------------------------------------------------------------------- Ogg --

_PAGE_HEADER = 27
_SERIAL = slice(14, 18)
_CHECKSUM = slice(22, 26)
_REVERSED_BITS = bytes(int(f"{value:08b}"[::-1], 2) for value in range(256))


def ogg_checksum(page: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, MSB first, zero initial value, no final xor).

    zlib computes the bit-reflected variant of the same polynomial in C; feeding it the
    bit-reversed bytes and reversing its result gives Ogg's value without a Python loop.
    """
    reflected = zlib.crc32(page.translate(_REVERSED_BITS), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def set_ogg_serial(data: bytes, serial: int) -> bytes:
    """Rewrite the stream serial number of every page and recompute the page checksums."""
    out = bytearray(data)
    position = 0
    new_serial = serial.to_bytes(4, "little")
    while position < len(out):
        if out[position : position + 4] != b"OggS" or position + _PAGE_HEADER > len(out):
            raise ValueError(f"not an Ogg page at byte {position}")
        segments = out[position + 26]
        table_end = position + _PAGE_HEADER + segments
        length = table_end - position + sum(out[position + _PAGE_HEADER : table_end])
        page = out[position : position + length]
        page[_SERIAL] = new_serial
        page[_CHECKSUM] = b"\x00\x00\x00\x00"
        page[_CHECKSUM] = ogg_checksum(bytes(page)).to_bytes(4, "little")
        out[position : position + length] = page
        position += length
    return bytes(out)
