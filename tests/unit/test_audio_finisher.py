"""The finisher end to end on synthetic signals (real speech: tests/integration/test_audio_espeak.py)."""

from __future__ import annotations

import hashlib
import io
import math
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from consumer.audio import dsp
from consumer.audio.finisher import TorchAudioFinisher, resolve_device
from consumer.engine import AudioBuffer
from consumer.errors import ConfigurationError
from consumer.ports import FinishSpec
from consumer.settings import WorkerSettings
from schemas.model import AudioFormat

CPU = torch.device("cpu")


def voice_like(seconds: float, rate: int, level: float, seed: int = 0) -> AudioBuffer:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    envelope = np.clip(np.sin(2 * np.pi * 2.7 * t), 0, None)
    harmonics = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 10))
    samples = level * envelope * (harmonics + 0.2 * rng.standard_normal(len(t)))
    return AudioBuffer(np.clip(samples, -1, 1).astype(np.float32), rate)


def decode(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    return samples, rate


def measure(samples: np.ndarray, rate: int) -> tuple[float, float]:
    batch = dsp.to_batch([samples], CPU)
    return dsp.integrated_loudness(batch, [len(samples)], rate)[0], dsp.true_peak_dbtp(
        batch, [len(samples)], rate
    )[0]


@pytest.fixture(scope="module")
def finisher() -> TorchAudioFinisher:
    return TorchAudioFinisher(device="cpu", true_peak_dbtp=-1.0)


def test_a_mixed_batch_comes_back_in_order_at_the_right_rates(finisher: TorchAudioFinisher) -> None:
    audio = voice_like(2.0, 22_050, 0.3)
    specs = [
        FinishSpec(AudioFormat.WAV, None, -16.0),
        FinishSpec(AudioFormat.FLAC, 16_000, -20.0),
        FinishSpec(AudioFormat.OGG_OPUS, None, -16.0),
        FinishSpec(AudioFormat.OGG_OPUS, 24_000, -16.0),
        FinishSpec(AudioFormat.MP3, 44_100, -14.0),
    ]
    results = finisher.finish([(audio, spec) for spec in specs])
    assert [r.sample_rate_hz for r in results] == [22_050, 16_000, 48_000, 24_000, 44_100]
    assert [r.content_type for r in results] == [s.output_format.content_type for s in specs]
    for result in results:
        samples, rate = decode(result.data)
        assert rate == result.sample_rate_hz
        assert len(samples) / rate == pytest.approx(result.duration_seconds, abs=1e-6)
        assert result.duration_seconds == pytest.approx(2.0, abs=1e-3)
        assert result.sha256 == hashlib.sha256(result.data).hexdigest()


@pytest.mark.parametrize("target", [-23.0, -16.0])
def test_loudness_meets_the_target_and_true_peak_the_ceiling(
    finisher: TorchAudioFinisher, target: float
) -> None:
    quiet, loud = voice_like(4.0, 24_000, 0.05, 1), voice_like(4.0, 24_000, 0.9, 2)
    results = finisher.finish([(a, FinishSpec(AudioFormat.WAV, 48_000, target)) for a in (quiet, loud)])
    for result in results:
        lufs, peak = measure(*decode(result.data))
        assert lufs == pytest.approx(target, abs=0.15)
        assert peak <= -1.0 + 0.02  # 16-bit rounding on top of the 0.1 dB margin


def test_the_peak_ceiling_wins_over_a_loudness_target_it_cannot_meet(finisher: TorchAudioFinisher) -> None:
    # This signal's peaks sit ~13 dB over its loudness: -8 LUFS would need +5 dBTP.
    audio = voice_like(4.0, 24_000, 0.3, 2)
    (result,) = finisher.finish([(audio, FinishSpec(AudioFormat.WAV, None, -8.0))])
    lufs, peak = measure(*decode(result.data))
    assert peak <= -1.0 + 0.02
    assert -14.0 < lufs < -8.0


def test_items_do_not_influence_each_other(finisher: TorchAudioFinisher) -> None:
    short = voice_like(1.0, 24_000, 0.2, 3)
    spec = FinishSpec(AudioFormat.WAV, 48_000, -16.0)
    alone = decode(finisher.finish([(short, spec)])[0].data)[0]
    together = decode(finisher.finish([(voice_like(6.0, 24_000, 0.9, 4), spec), (short, spec)])[1].data)[0]
    assert np.max(np.abs(alone - together)) <= 2 / 32768


def test_silence_stays_silent_and_quiet_audio_gets_at_most_30_db(finisher: TorchAudioFinisher) -> None:
    silence = AudioBuffer(np.zeros(24_000, np.float32), 24_000)
    whisper = voice_like(3.0, 24_000, 10 ** (-50 / 20), 5)  # ~ -55 LUFS: -16 would need +39 dB
    results = finisher.finish([(a, FinishSpec(AudioFormat.WAV, None, -16.0)) for a in (silence, whisper)])
    assert not np.any(decode(results[0].data)[0])
    before = measure(whisper.samples, 24_000)[0]
    after = measure(*decode(results[1].data))[0]
    assert after - before == pytest.approx(30.0, abs=0.3)


def test_empty_audio_becomes_a_valid_file(finisher: TorchAudioFinisher) -> None:
    empty = AudioBuffer(np.zeros(0, np.float32), 24_000)
    for fmt in AudioFormat:
        (result,) = finisher.finish([(empty, FinishSpec(fmt, None, -16.0))])
        samples, rate = decode(result.data)
        assert len(samples) / rate == pytest.approx(0.01, abs=1e-3)


def test_not_a_number_from_an_engine_is_silenced(finisher: TorchAudioFinisher) -> None:
    audio = voice_like(1.0, 24_000, 0.3)
    broken = audio.samples.copy()
    broken[100:200] = np.nan
    (result,) = finisher.finish([(AudioBuffer(broken, 24_000), FinishSpec(AudioFormat.WAV, None, -16.0))])
    assert np.isfinite(decode(result.data)[0]).all()


def test_profile_names_every_setting_that_changes_the_audio() -> None:
    a = TorchAudioFinisher(device="cpu", true_peak_dbtp=-1.0)
    b = TorchAudioFinisher(device="cpu", true_peak_dbtp=-2.0)
    assert a.profile(-16.0).startswith("lufs=-16.0;")
    assert a.profile(-16.0) != a.profile(-16.5)
    assert a.profile(-16.0) == a.profile(-16.04)  # the cache key's rounding (0.1 LU)
    assert a.profile(-16.0) != b.profile(-16.0)
    assert "tp=-1.0" in a.profile(-16.0)


def test_from_settings() -> None:
    finisher = TorchAudioFinisher.from_settings(WorkerSettings(true_peak_dbtp=-2.0, device="cpu"))
    assert finisher.device == "cpu"
    assert "tp=-2.0" in finisher.profile(-16.0)


def test_device_selection() -> None:
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigurationError, match="not a torch device"):
        resolve_device("gpu-please")
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(ConfigurationError, match="no CUDA device"):
            resolve_device("cuda")


def test_encoding_on_threads_gives_the_same_bytes() -> None:
    items = [
        (voice_like(1.5, 24_000, 0.3, i), FinishSpec(fmt, None, -16.0)) for i, fmt in enumerate(AudioFormat)
    ]
    serial = TorchAudioFinisher(device="cpu").finish(items)
    threaded = TorchAudioFinisher(device="cpu", encode_threads=3)
    try:
        assert [r.data for r in threaded.finish(items)] == [r.data for r in serial]
    finally:
        threaded.close()


def test_nothing_on_the_producer_path_imports_torch() -> None:
    code = (
        "import sys\n"
        "import consumer.engine, consumer.ports, consumer.audio, consumer.voices\n"
        "import consumer.engines.cosyvoice, consumer.cli_voices, consumer.cli_models\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_a_true_peak_ceiling_is_respected_at_low_rates(finisher: TorchAudioFinisher) -> None:
    bright = voice_like(2.0, 48_000, 0.9, 6)
    (result,) = finisher.finish([(bright, FinishSpec(AudioFormat.WAV, 8_000, -10.0))])
    samples, rate = decode(result.data)
    assert rate == 8_000
    assert measure(samples, rate)[1] <= -1.0 + 0.02
    assert math.isfinite(measure(samples, rate)[0])
