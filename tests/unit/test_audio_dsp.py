"""Batched resampling, BS.1770 loudness and the true-peak limiter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchaudio.functional as audio_fn

from consumer.audio import dsp

CPU = torch.device("cpu")


def tone(freq: float, seconds: float, rate: int, amplitude: float, phase: float = 0.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def speechlike(seconds: float, rate: int, seed: int, level: float = 0.1) -> np.ndarray:
    """Noise bursts shaped like syllables, with pauses: something the gates have work on."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    envelope = np.clip(np.sin(2 * np.pi * 3.1 * t), 0, None) ** 2
    carrier = np.sin(2 * np.pi * 180 * t) + 0.5 * rng.standard_normal(len(t))
    return (level * envelope * carrier).astype(np.float32)


def batch_of(*items: np.ndarray) -> tuple[torch.Tensor, list[int]]:
    return dsp.to_batch(list(items), CPU), [len(i) for i in items]


def reference_lufs(samples: np.ndarray, rate: int) -> float:
    return float(audio_fn.loudness(torch.from_numpy(samples).double()[None, None], rate))


# ------------------------------------------------------------------------------ loudness --


def test_a_full_scale_1khz_sine_reads_minus_3_lufs() -> None:
    # BS.1770's calibration: a 0 dBFS 997 Hz sine is -3.01 LKFS.
    batch, lengths = batch_of(tone(997, 5, 48_000, 1.0), tone(997, 5, 48_000, 0.1))
    full, tenth = dsp.integrated_loudness(batch, lengths, 48_000)
    assert full == pytest.approx(-3.01, abs=0.05)
    assert tenth == pytest.approx(-23.01, abs=0.05)


@pytest.mark.parametrize("rate", [16_000, 22_050, 24_000, 48_000])
def test_batched_loudness_matches_torchaudio_item_by_item(rate: int) -> None:
    items = [speechlike(3.0, rate, 1), speechlike(5.5, rate, 2, 0.02), speechlike(1.2, rate, 3, 0.3)]
    batch, lengths = batch_of(*items)
    measured = dsp.integrated_loudness(batch, lengths, rate)
    for value, item in zip(measured, items, strict=True):
        assert value == pytest.approx(reference_lufs(item, rate), abs=0.01)


def test_loudness_does_not_depend_on_batch_neighbours() -> None:
    short = speechlike(2.0, 24_000, 4)
    alone = dsp.integrated_loudness(*batch_of(short), 24_000)[0]
    beside_long = dsp.integrated_loudness(*batch_of(short, speechlike(9.0, 24_000, 5, 0.5)), 24_000)[0]
    assert beside_long == pytest.approx(alone, abs=1e-6)


def test_loud_audio_is_measured_without_the_filters_clamping() -> None:
    # A near-full-scale 8 kHz tone: the K-filter's shelf lifts it past 1.0, where torchaudio's
    # filters clamp. Loudness is linear in level, so it must read exactly 20 dB over a copy
    # at a tenth of the level.
    loud, quiet = tone(8000, 3, 48_000, 0.99), tone(8000, 3, 48_000, 0.099)
    measured_loud, measured_quiet = dsp.integrated_loudness(*batch_of(loud, quiet), 48_000)
    assert measured_loud == pytest.approx(measured_quiet + 20.0, abs=0.01)
    assert reference_lufs(loud, 48_000) < measured_loud - 0.2  # what clamping would have cost


def test_silence_is_minus_infinity_and_short_items_are_one_block() -> None:
    batch, lengths = batch_of(np.zeros(48_000, np.float32), tone(997, 0.2, 48_000, 0.1))
    silent, short = dsp.integrated_loudness(batch, lengths, 48_000)
    assert silent == -math.inf
    assert short == pytest.approx(-23.01, abs=0.2)


# ----------------------------------------------------------------------------- resampling --


def test_resampling_keeps_pitch_and_length_and_zeroes_the_padding() -> None:
    a, b = tone(1000, 1.0, 22_050, 0.5), tone(1000, 0.3, 22_050, 0.5)
    batch, lengths = batch_of(a, b)
    out, new_lengths = dsp.resample(batch, lengths, 22_050, 48_000)
    assert new_lengths == [48_000, math.ceil(0.3 * 22_050 * 48_000 / 22_050)]
    spectrum = np.abs(np.fft.rfft(out[0, : new_lengths[0]].numpy()))
    assert np.argmax(spectrum) == 1000  # 1 Hz bins over one second
    assert torch.count_nonzero(out[1, new_lengths[1] :]) == 0
    alone, _ = dsp.resample(*batch_of(b), 22_050, 48_000)
    assert torch.allclose(alone[0, : new_lengths[1]], out[1, : new_lengths[1]], atol=1e-6)


def test_resampling_to_the_same_rate_is_a_no_op() -> None:
    batch, lengths = batch_of(tone(440, 0.5, 24_000, 0.3))
    out, same = dsp.resample(batch, lengths, 24_000, 24_000)
    assert out is batch
    assert same == lengths


# ------------------------------------------------------------------- true peak, limiting --


def faded(samples: np.ndarray, rate: int) -> np.ndarray:
    """Fade 10 ms in and out: an abrupt start has inter-sample overshoot of its own."""
    ramp = np.sin(np.linspace(0, np.pi / 2, rate // 100)) ** 2
    out = samples.copy()
    out[: len(ramp)] *= ramp
    out[-len(ramp) :] *= ramp[::-1]
    return out


def test_true_peak_sees_between_the_samples() -> None:
    # A quarter-rate sine at 45 degrees: every sample is at 0.707 of the true peak.
    samples = faded(tone(12_000, 1.0, 48_000, 0.5, phase=math.pi / 4), 48_000)
    assert np.max(np.abs(samples)) == pytest.approx(0.5 / math.sqrt(2), rel=1e-3)
    (peak,) = dsp.true_peak_dbtp(*batch_of(samples), 48_000)
    assert peak == pytest.approx(20 * math.log10(0.5), abs=0.1)


def test_oversampling_reaches_about_192khz() -> None:
    assert dsp.oversampling_factor(48_000) == 4
    assert dsp.oversampling_factor(24_000) == 8
    assert dsp.oversampling_factor(8_000) == 16


SETTINGS = dsp.LimiterSettings(ceiling_dbtp=-1.0)


def test_audio_under_the_ceiling_is_untouched() -> None:
    batch, lengths = batch_of(tone(440, 1, 48_000, 0.5))
    out, reductions = dsp.limit_true_peak(batch, lengths, 48_000, SETTINGS)
    assert reductions == [0.0]
    assert torch.equal(out, batch)


def test_the_limiter_holds_the_ceiling_with_look_ahead_and_release() -> None:
    rate = 48_000
    quiet = tone(440, 2.0, rate, 0.3)
    loud = quiet.copy()
    loud[rate : rate + 480] *= 6.0  # a 10 ms burst at +5 dBFS: 6 dB over the ceiling
    batch, lengths = batch_of(loud, quiet)
    out, reductions = dsp.limit_true_peak(batch, lengths, rate, SETTINGS)
    peaks = dsp.true_peak_dbtp(out, lengths, rate)
    assert peaks[0] <= -1.0 + 1e-3
    assert reductions[0] > 5.0
    assert reductions[1] == 0.0
    assert torch.equal(out[1, : lengths[1]], batch[1, : lengths[1]])  # the neighbour is untouched

    gain = (out[0] / batch[0].masked_fill(batch[0].abs() < 1e-3, float("nan"))).numpy()
    burst = slice(rate, rate + 480)
    ahead = gain[rate - 96 : rate - 48]  # 1-2 ms before the burst: already turned down
    assert np.nanmax(ahead) < 0.95
    assert np.nanmax(gain[: rate - 500]) == pytest.approx(1.0, abs=1e-6)  # long before: untouched
    assert np.nanmax(gain[rate + 480 + 48 * 150 :]) == pytest.approx(1.0, abs=1e-6)  # recovered
    recovering = gain[rate + 480 + 48 * 10 : rate + 480 + 48 * 40]
    assert np.nanmax(recovering) < 0.999  # release is gradual, not a jump back
    # No clipping: inside the burst the waveform keeps its shape (a near-constant gain).
    inside = gain[burst]
    assert np.nanmax(inside) - np.nanmin(inside) < 0.02


def test_the_gain_envelope_moves_slowly() -> None:
    rate = 24_000
    samples = speechlike(3.0, rate, 7, 0.9)
    batch, lengths = batch_of(samples)
    out, _ = dsp.limit_true_peak(batch, lengths, rate, SETTINGS)
    audible = np.abs(samples) > 1e-2  # the ratio is float noise near zero crossings
    ratio = np.where(audible, np.abs(out[0].numpy()) / np.where(audible, np.abs(samples), 1.0), np.nan)
    steps = np.abs(np.diff(20 * np.log10(ratio)))  # between neighbouring audible samples only
    assert np.nanmin(20 * np.log10(ratio)) < -1.0  # it did limit
    # Attack slope 1000 dB/s = ~0.042 dB per sample at 24 kHz (plus float noise).
    assert np.nanmax(steps) < 0.05


def clicky(seconds: float, rate: int) -> np.ndarray:
    """A steady tone with a 1 ms click every half second: 20 dB between loudness and peak,
    all of it in the clicks."""
    t = np.arange(round(seconds * rate)) / rate
    samples = 0.05 * np.sin(2 * np.pi * 300 * t) * (1 + 0.3 * np.sin(2 * np.pi * 2 * t))
    click = round(rate / 1000)
    for start in range(0, len(samples), rate // 2):
        samples[start : start + click] += 0.3 * np.hanning(click)[: len(samples) - start]
    return samples.astype(np.float32)


def test_normalise_makes_up_what_the_limiter_takes() -> None:
    rate = 24_000
    batch, lengths = batch_of(clicky(3.0, rate), speechlike(3.0, rate, 8, 0.01))
    plain, _ = dsp.normalise(batch, lengths, rate, [-16.0, -20.0], SETTINGS, max_makeup_db=0.0)
    out, report = dsp.normalise(batch, lengths, rate, [-16.0, -20.0], SETTINGS)
    first = dsp.integrated_loudness(plain, lengths, rate)
    final = dsp.integrated_loudness(out, lengths, rate)
    assert first[0] < -16.3  # gain then limiter: the limiter took loudness away
    assert final[0] == pytest.approx(-16.0, abs=0.1)  # made up by further passes
    assert report[0].lufs == pytest.approx(final[0], abs=0.1)  # the cheap re-measurement holds
    assert report[0].limiter_db > 3.0
    assert report[0].gain_db > -16.0 - report[0].measured_lufs
    assert final[1] == pytest.approx(-20.0, abs=0.01)  # the quiet neighbour needed no limiting
    assert report[1].limiter_db == 0.0
    assert max(dsp.true_peak_dbtp(out, lengths, rate)) <= -1.0 + 1e-3


def test_normalise_leaves_silence_and_caps_gain() -> None:
    rate = 24_000
    batch, lengths = batch_of(np.zeros(rate, np.float32), speechlike(2.0, rate, 9, 10 ** (-60 / 20)))
    out, report = dsp.normalise(batch, lengths, rate, [-16.0, -16.0], SETTINGS, max_gain_db=20.0)
    assert not torch.any(out[0])
    assert report[0].gain_db == 0.0
    assert report[1].gain_db == 20.0
