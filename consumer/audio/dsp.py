"""Batched signal processing on torch: resampling, BS.1770 loudness and a true-peak limiter.

Every function works on a zero-padded batch `(items, samples)` plus each item's valid length, on
whatever device the batch lives on, and treats the padding so that no item's result depends on
its neighbours in the batch. This module imports torch when it is imported: only the finisher
and the prompt decoder import it, inside their methods (the producer side never gets here).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torchaudio.functional as audio_fn
from torch.nn import functional as nn_fn

# BS.1770-4: 400 ms blocks overlapping by 75 %, an absolute gate at -70 LUFS and a relative
# gate 10 LU under the absolutely gated mean; -0.691 dB offsets the K-filter's gain at 1 kHz.
BLOCK_S = 0.4
BLOCK_OVERLAP = 0.75
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
K_WEIGHTING_OFFSET_DB = -0.691
# torchaudio's biquads clamp their output to [-1, 1], and the K-filter's +4 dB shelf can push
# loud speech past that. Measuring a copy 12 dB quieter and correcting the energy is exact
# (the filter is linear) and keeps the clamp from ever biting.
_HEADROOM = 0.25
_TRUE_PEAK_TARGET_HZ = 192_000  # BS.1770 Annex 2: oversample to at least ~192 kHz
_FLOOR = 1e-12


@dataclass(frozen=True, slots=True)
class ResampleQuality:
    """A Kaiser-windowed sinc resampler (torchaudio's `sinc_interp_kaiser`)."""

    lowpass_filter_width: int
    rolloff: float
    beta: float

    @property
    def token(self) -> str:
        return f"kaiser{self.lowpass_filter_width}-{self.rolloff:g}-{self.beta:g}"


# Output resampling: flat to ~93 % of the lower Nyquist frequency, > 80 dB stop-band.
OUTPUT_RESAMPLING = ResampleQuality(lowpass_filter_width=16, rolloff=0.93, beta=8.555)
# Peak detection must not hide energy near Nyquist: a long kernel with a high roll-off reads a
# tone at 0.45 x the sample rate within 0.02 dB (48 kHz) to 0.13 dB (22.05 kHz) of its peak.
PEAK_OVERSAMPLING = ResampleQuality(lowpass_filter_width=32, rolloff=0.99, beta=12.0)


@dataclass(frozen=True, slots=True)
class LimiterSettings:
    """A look-ahead peak limiter with ramps in dB: the gain starts falling before a peak
    (`attack`), stays down over the interpolation neighbourhood (`hold`) and recovers after it
    (`release`). Offline, look-ahead costs no latency."""

    ceiling_dbtp: float
    attack_db_per_s: float = 1000.0  # a 6 dB reduction starts 6 ms ahead of the peak
    release_db_per_s: float = 60.0  # ... and recovers over 100 ms
    hold_s: float = 0.002

    @property
    def token(self) -> str:
        return (
            f"tp={self.ceiling_dbtp:.1f};att={self.attack_db_per_s:g};"
            f"rel={self.release_db_per_s:g};hold={self.hold_s:g}"
        )


# ------------------------------------------------------------------------------- batching --


def to_batch(items: Sequence[npt.NDArray[np.float32]], device: torch.device) -> torch.Tensor:
    """Stack mono buffers into one zero-padded float32 batch on `device` (one transfer)."""
    longest = max((len(item) for item in items), default=0)
    batch = torch.zeros((len(items), max(1, longest)), dtype=torch.float32)
    for row, item in enumerate(items):
        if len(item):
            batch[row, : len(item)] = torch.from_numpy(np.ascontiguousarray(item, dtype=np.float32))
    return torch.nan_to_num(batch, nan=0.0, posinf=0.0, neginf=0.0).to(device)


def from_batch(batch: torch.Tensor, lengths: Sequence[int]) -> list[npt.NDArray[np.float32]]:
    host = batch.detach().to("cpu", torch.float32).numpy()
    return [np.ascontiguousarray(host[row, :length]) for row, length in enumerate(lengths)]


def _valid_mask(batch: torch.Tensor, lengths: Sequence[int]) -> torch.Tensor:
    positions = torch.arange(batch.shape[-1], device=batch.device)
    limits = torch.tensor(list(lengths), device=batch.device)
    return positions.unsqueeze(0) < limits.unsqueeze(1)


# ----------------------------------------------------------------------------- resampling --


def resampled_length(length: int, source_hz: int, target_hz: int) -> int:
    """torchaudio's own output length for `length` input samples."""
    return math.ceil(length * target_hz / source_hz)


def resample(
    batch: torch.Tensor,
    lengths: Sequence[int],
    source_hz: int,
    target_hz: int,
    quality: ResampleQuality = OUTPUT_RESAMPLING,
) -> tuple[torch.Tensor, list[int]]:
    """Resample every item; returns the new batch and lengths (padding zeroed again)."""
    if source_hz == target_hz:
        return batch, list(lengths)
    out = audio_fn.resample(
        batch,
        source_hz,
        target_hz,
        lowpass_filter_width=quality.lowpass_filter_width,
        rolloff=quality.rolloff,
        resampling_method="sinc_interp_kaiser",
        beta=quality.beta,
    )
    new_lengths = [resampled_length(n, source_hz, target_hz) for n in lengths]
    # The filter rings past each item's end into the padding; later stages must see silence.
    return out * _valid_mask(out, new_lengths), new_lengths


# ------------------------------------------------------------------------------- loudness --


def _k_weighted_power(batch: torch.Tensor, rate_hz: int) -> torch.Tensor:
    """Squared K-weighted signal in float64. The filters are causal, so trailing padding
    never changes an item's valid samples."""
    weighted = audio_fn.treble_biquad(batch * _HEADROOM, rate_hz, 4.0, 1500.0, 1 / math.sqrt(2))
    weighted = audio_fn.highpass_biquad(weighted, rate_hz, 38.0, 0.5)
    power: torch.Tensor = weighted.to(torch.float64).square() / (_HEADROOM * _HEADROOM)
    return power


def integrated_loudness(batch: torch.Tensor, lengths: Sequence[int], rate_hz: int) -> list[float]:
    """Gated integrated loudness (BS.1770-4, mono) per item, in LUFS; -inf when every block is
    below the absolute gate (silence). An item shorter than one block is measured as a single
    block of its own length (the recommendation leaves that case open)."""
    return loudness_of_power(_k_weighted_power(batch, rate_hz), lengths, rate_hz)


def loudness_of_power(power: torch.Tensor, lengths: Sequence[int], rate_hz: int) -> list[float]:
    """The gating of `integrated_loudness`, on an already K-weighted, squared signal."""
    cumulative = nn_fn.pad(power.cumsum(-1), (1, 0))  # cumulative[:, i] = sum of power[:, :i]
    block = round(BLOCK_S * rate_hz)
    hop = round(block * (1 - BLOCK_OVERLAP))
    total = power.shape[-1]
    device = power.device
    limits = torch.tensor(list(lengths), device=device)

    starts = torch.arange(0, max(total - block, -1) + 1, hop, device=device)
    energy = (cumulative[:, starts + block] - cumulative[:, starts]) / block
    valid = (starts + block).unsqueeze(0) <= limits.unsqueeze(1)
    # Items shorter than one block: one extra "block" spanning the whole item.
    short = (limits < block) & (limits > 0)
    whole = cumulative.gather(1, limits.clamp(max=total).unsqueeze(1)) / limits.clamp(min=1).unsqueeze(1)
    energy = torch.cat([energy, whole], dim=1)
    valid = torch.cat([valid, short.unsqueeze(1)], dim=1)

    block_lufs = K_WEIGHTING_OFFSET_DB + 10 * torch.log10(energy.clamp_min(_FLOOR))
    gated = valid & (block_lufs > ABSOLUTE_GATE_LUFS)
    relative = _gated_mean_lufs(energy, gated) + RELATIVE_GATE_LU
    gated = gated & (block_lufs > relative.unsqueeze(1))
    loudness = _gated_mean_lufs(energy, gated)
    return [float(v) for v in loudness.cpu()]


def _gated_mean_lufs(energy: torch.Tensor, gated: torch.Tensor) -> torch.Tensor:
    count = gated.sum(-1)
    mean = (energy * gated).sum(-1) / count.clamp_min(1)
    lufs = K_WEIGHTING_OFFSET_DB + 10 * torch.log10(mean.clamp_min(_FLOOR))
    return torch.where(count > 0, lufs, torch.full_like(lufs, -math.inf))


# ----------------------------------------------------------------------- true peak, limiter --


def oversampling_factor(rate_hz: int) -> int:
    return max(2, min(16, math.ceil(_TRUE_PEAK_TARGET_HZ / rate_hz)))


def peak_envelope(batch: torch.Tensor, rate_hz: int) -> torch.Tensor:
    """Per sample n, the largest magnitude of the band-limited waveform in [n, n+1): the sample
    itself and the oversampled points up to the next one (true peak, BS.1770 Annex 2)."""
    factor = oversampling_factor(rate_hz)
    q = PEAK_OVERSAMPLING
    up = audio_fn.resample(
        batch,
        rate_hz,
        rate_hz * factor,
        lowpass_filter_width=q.lowpass_filter_width,
        rolloff=q.rolloff,
        resampling_method="sinc_interp_kaiser",
        beta=q.beta,
    )
    total = batch.shape[-1]
    up = up[..., : total * factor].reshape(*batch.shape[:-1], total, factor)
    return torch.maximum(up.abs().amax(-1), batch.abs())


def true_peak_dbtp(batch: torch.Tensor, lengths: Sequence[int], rate_hz: int) -> list[float]:
    envelope = peak_envelope(batch, rate_hz) * _valid_mask(batch, lengths)
    peaks = envelope.amax(-1).to(torch.float64).clamp_min(_FLOOR)
    return [float(v) for v in (20 * torch.log10(peaks)).cpu()]


def peak_level_db(batch: torch.Tensor, lengths: Sequence[int], rate_hz: int) -> torch.Tensor:
    """The true-peak envelope in dB (padding reads -120 dB). A gain of g dB moves it by
    exactly g dB, so it is computed once however many gains are tried."""
    envelope = peak_envelope(batch, rate_hz) * _valid_mask(batch, lengths)
    return 20 * torch.log10(envelope.clamp_min(1e-6))


def limiter_gain(level_db: torch.Tensor, rate_hz: int, settings: LimiterSettings) -> torch.Tensor | None:
    """Per-sample linear gain that keeps `level_db` at or under the ceiling; None when no
    sample is over it.

    The reduction each sample needs (in dB) is widened by the hold time, then spread with
    constant-slope ramps: `max_k need[k] - slope * |n - k|`, with the attack slope before a
    peak and the release slope after it. Both ramps are running maxima (cummax), so the whole
    envelope is computed without a per-sample loop, on any device.
    """
    need = (level_db - settings.ceiling_dbtp).clamp_min(0.0)
    if not bool((need > 0).any()):
        return None
    hold = max(1, round(settings.hold_s * rate_hz))
    need = nn_fn.max_pool1d(need.unsqueeze(1), 2 * hold + 1, stride=1, padding=hold).squeeze(1)
    need = need.to(torch.float64)  # the ramps below add offsets of up to n * slope
    n = torch.arange(level_db.shape[-1], device=level_db.device, dtype=torch.float64)
    attack = settings.attack_db_per_s / rate_hz
    release = settings.release_db_per_s / rate_hz
    after = torch.cummax(need + release * n, dim=-1).values - release * n
    before = torch.cummax((need - attack * n).flip(-1), dim=-1).values.flip(-1) + attack * n
    reduction = torch.maximum(after, before)
    return torch.pow(10.0, -reduction / 20).to(level_db.dtype)


def enforce_ceiling(
    batch: torch.Tensor, lengths: Sequence[int], rate_hz: int, ceiling_dbtp: float, rows: Sequence[int]
) -> torch.Tensor:
    """A smooth gain envelope can leave a residue of a few hundredths of a dB where the gain
    still moves inside the interpolation kernel: measure the limited `rows` again and scale
    the rare offender down to the ceiling."""
    if not rows:
        return batch
    index = torch.tensor(list(rows), device=batch.device)
    peaks = peak_envelope(batch[index], rate_hz).amax(-1).to(torch.float64)
    scale = (10 ** (ceiling_dbtp / 20) / peaks.clamp_min(_FLOOR)).clamp(max=1.0)
    out = batch.clone()
    out[index] = batch[index] * scale.to(batch.dtype).unsqueeze(1)
    return out


def limit_true_peak(
    batch: torch.Tensor, lengths: Sequence[int], rate_hz: int, settings: LimiterSettings
) -> tuple[torch.Tensor, list[float]]:
    """Keep every item's true peak at or under the ceiling with a smooth gain envelope.
    Returns the batch and the largest reduction applied to each item (dB)."""
    gain = limiter_gain(peak_level_db(batch, lengths, rate_hz), rate_hz, settings)
    if gain is None:
        return batch, [0.0] * len(lengths)
    reductions = [float(v) for v in (-20 * torch.log10(gain.amin(-1).to(torch.float64))).cpu()]
    rows = [row for row, value in enumerate(reductions) if value > 0]
    limited = enforce_ceiling(batch * gain, lengths, rate_hz, settings.ceiling_dbtp, rows)
    return limited, reductions


@dataclass(frozen=True, slots=True)
class Normalised:
    measured_lufs: float  # of the input
    gain_db: float  # applied before the limiter
    limiter_db: float  # deepest reduction the limiter made
    lufs: float  # of the output (the target unless the ceiling or the gain cap prevented it)


def normalise(
    batch: torch.Tensor,
    lengths: Sequence[int],
    rate_hz: int,
    targets_lufs: Sequence[float],
    settings: LimiterSettings,
    *,
    max_gain_db: float = 30.0,
    max_makeup_db: float = 6.0,
    passes: int = 4,
    tolerance_lu: float = 0.05,
) -> tuple[torch.Tensor, list[Normalised]]:
    """Bring each item to its loudness target under the true-peak ceiling.

    Gain first, then the limiter. Limiting peaky audio (synthetic speech often has 18 dB or
    more between its loudness and its peaks) takes loudness away, so the shortfall is measured
    and made up with more gain (a secant step on the gain-to-loudness curve), up to `passes`
    times and `max_makeup_db` in total: the ceiling always holds, and where it forbids the
    target the output falls short rather than being squashed further. Silence (no block over
    -70 LUFS) is left alone.

    Each pass re-measures loudness without filtering again: the limiter's gain moves slowly
    against the K-filter's time constants, so K(x * g) ~ g * K(x) and the block energies of
    the limited signal are those of the input weighted by g squared.
    """
    power = _k_weighted_power(batch, rate_hz)
    measured = loudness_of_power(power, lengths, rate_hz)
    gains = [
        0.0 if not math.isfinite(lufs) else min(target - lufs, max_gain_db)
        for lufs, target in zip(measured, targets_lufs, strict=True)
    ]
    ceilings = [
        min(max_gain_db, target - lufs + max_makeup_db) if math.isfinite(lufs) else 0.0
        for lufs, target in zip(measured, targets_lufs, strict=True)
    ]
    level = peak_level_db(batch, lengths, rate_hz)
    previous: list[tuple[float, float] | None] = [None] * len(gains)  # (gain, loudness) of the last pass
    envelope: torch.Tensor | None = None
    envelope_gains = list(gains)
    after = [m + g if math.isfinite(m) else m for m, g in zip(measured, gains, strict=True)]
    for _ in range(passes):
        gain_db = torch.tensor(gains, dtype=batch.dtype, device=batch.device).unsqueeze(1)
        envelope, envelope_gains = limiter_gain(level + gain_db, rate_hz, settings), list(gains)
        if envelope is None:
            after = [m + g if math.isfinite(m) else m for m, g in zip(measured, gains, strict=True)]
            break
        weight = torch.pow(10.0, gain_db.to(torch.float64) / 10) * envelope.to(torch.float64).square()
        after = loudness_of_power(power * weight, lengths, rate_hz)
        changed = False
        for row, (lufs, target) in enumerate(zip(after, targets_lufs, strict=True)):
            miss = target - lufs
            if not math.isfinite(lufs) or abs(miss) <= tolerance_lu:
                continue
            slope = 1.0
            last = previous[row]
            if last is not None and abs(gains[row] - last[0]) > 1e-6:
                slope = min(1.0, max(0.1, (lufs - last[1]) / (gains[row] - last[0])))
            proposal = min(ceilings[row], gains[row] + miss / slope)
            if abs(proposal - gains[row]) > 0.01:
                previous[row] = (gains[row], lufs)
                gains[row] = proposal
                changed = True
        if not changed:
            break
    gain_db = torch.tensor(gains, dtype=batch.dtype, device=batch.device).unsqueeze(1)
    out = batch * torch.pow(10.0, gain_db / 20)
    limiter = [0.0] * len(gains)
    if envelope is not None and envelope_gains != gains:
        # The last pass proposed gains it did not try: limit for those.
        envelope = limiter_gain(level + gain_db, rate_hz, settings)
    if envelope is not None:
        out = out * envelope
        limiter = [float(v) for v in (-20 * torch.log10(envelope.amin(-1).to(torch.float64))).cpu()]
        rows = [row for row, value in enumerate(limiter) if value > 0]
        out = enforce_ceiling(out, lengths, rate_hz, settings.ceiling_dbtp, rows)
    report = [Normalised(m, g, r, a) for m, g, r, a in zip(measured, gains, limiter, after, strict=True)]
    return out, report
