"""Post-processing of real speech (eSpeak NG through the espeak engine): after the finisher,
every format decodes back to the expected duration, and the measured loudness and true peak
meet the targets. Loudness and peak are measured on the *decoded file*, with torchaudio's own
BS.1770 meter as well as ours."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as audio_fn

from consumer.audio import dsp
from consumer.audio.finisher import TorchAudioFinisher
from consumer.engine import AudioBuffer
from consumer.ports import FinishSpec
from schemas.model import AudioFormat
from tests.support.speech import speeches

CPU = torch.device("cpu")
CASES = [
    (AudioFormat.WAV, None),
    (AudioFormat.WAV, 48_000),
    (AudioFormat.FLAC, 16_000),
    (AudioFormat.FLAC, 44_100),
    (AudioFormat.OGG_OPUS, None),
    (AudioFormat.OGG_OPUS, 24_000),
    (AudioFormat.MP3, 22_050),
    (AudioFormat.MP3, 48_000),
]
LOSSLESS = (AudioFormat.WAV, AudioFormat.FLAC)


@pytest.fixture(scope="module")
def speech() -> list[AudioBuffer]:
    return speeches(
        [
            ("The quick brown fox jumps over the lazy dog, and then it runs far away.", "en-us"),
            ("Numbers like 1234 and dates like March fifth are read aloud.", "en-gb+f3"),
            ("今天天气很好，我们去公园散步吧。", "cmn"),
        ]
    )


@pytest.fixture(scope="module")
def finisher() -> TorchAudioFinisher:
    return TorchAudioFinisher(device="cpu", true_peak_dbtp=-1.0)


def decoded(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    return samples, rate


def measure(samples: np.ndarray, rate: int) -> tuple[float, float, float]:
    """(our LUFS, torchaudio's LUFS, true peak dBTP)."""
    batch = dsp.to_batch([samples], CPU)
    ours = dsp.integrated_loudness(batch, [len(samples)], rate)[0]
    theirs = float(audio_fn.loudness(torch.from_numpy(samples).double()[None, None], rate))
    return ours, theirs, dsp.true_peak_dbtp(batch, [len(samples)], rate)[0]


def test_espeak_output_is_real_speech_to_begin_with(speech: list[AudioBuffer]) -> None:
    for audio in speech:
        assert audio.sample_rate_hz == 22_050
        assert audio.duration_seconds > 1.5
        lufs, _, _ = measure(audio.samples, audio.sample_rate_hz)
        assert math.isfinite(lufs)


@pytest.mark.parametrize("target", [-23.0, -16.0])
def test_every_format_meets_loudness_peak_and_duration(
    speech: list[AudioBuffer], finisher: TorchAudioFinisher, target: float
) -> None:
    items = [(audio, FinishSpec(fmt, rate, target)) for audio in speech for fmt, rate in CASES]
    results = finisher.finish(items)
    assert len(results) == len(items)
    for (audio, spec), result in zip(items, results, strict=True):
        samples, rate = decoded(result.data)
        expected_rate = spec.sample_rate_hz or (
            48_000 if spec.output_format is AudioFormat.OGG_OPUS else 22_050
        )
        assert rate == result.sample_rate_hz == expected_rate
        assert result.content_type == spec.output_format.content_type
        # Duration: what a decoder gets equals what the result event reports, and the source's.
        assert len(samples) / rate == pytest.approx(result.duration_seconds, abs=1e-6)
        assert result.duration_seconds == pytest.approx(audio.duration_seconds, abs=1.5 / rate + 1e-6)
        ours, theirs, peak = measure(samples, rate)
        lossless = spec.output_format in LOSSLESS
        label = f"{spec.output_format.value}@{rate}"
        assert ours == pytest.approx(target, abs=0.3 if lossless else 0.6), label
        assert theirs == pytest.approx(target, abs=0.4 if lossless else 0.7), label
        # -1 dBTP holds exactly for PCM; lossy coders may overshoot a little, which is why
        # the ceiling sits 1 dB under full scale in the first place (EBU R 128).
        assert peak <= (-1.0 + 0.02 if lossless else -1.0 + 1.0), label


def test_a_request_override_and_the_deployment_default_in_one_batch(
    speech: list[AudioBuffer], finisher: TorchAudioFinisher
) -> None:
    audio = speech[0]
    quiet, loud = finisher.finish(
        [(audio, FinishSpec(AudioFormat.WAV, None, -30.0)), (audio, FinishSpec(AudioFormat.WAV, None, -14.0))]
    )
    quiet_lufs, _, _ = measure(*decoded(quiet.data))
    loud_lufs, _, loud_peak = measure(*decoded(loud.data))
    assert quiet_lufs == pytest.approx(-30.0, abs=0.2)
    # eSpeak's pulse-like voicing puts its peaks ~18 dB over its loudness; -14 LUFS under a
    # -1 dBTP ceiling needs ~5 dB of limiting, and the limiter gives some loudness back. The
    # ceiling always wins; the target is approached to within a dB.
    assert -15.0 <= loud_lufs <= -13.9
    assert loud_peak <= -1.0 + 0.02


def test_the_same_request_gives_the_same_bytes(
    speech: list[AudioBuffer], finisher: TorchAudioFinisher
) -> None:
    items = [(speech[1], FinishSpec(fmt, None, -16.0)) for fmt in AudioFormat]
    first = [r.sha256 for r in finisher.finish(items)]
    second = [r.sha256 for r in finisher.finish(items)]
    assert first == second
