"""The one place where the pinned CosyVoice meets a newer torchaudio than it was written for.

CosyVoice (ace7c47) pins torch/torchaudio 2.3.1 and reads prompt audio with
`torchaudio.load(path, backend='soundfile')` in `cosyvoice.utils.file_utils.load_wav`. From
torchaudio 2.9 (the version this project tests and ships) `load` ignores `backend` and always
goes through TorchCodec, an extra package that needs FFmpeg's shared libraries; without it every
voice registration fails with ImportError. `load_wav` is the library's only audio read on the
inference path, so the engine gives the frontend an equivalent that reads with soundfile, as
torchaudio 2.3's soundfile backend did, and resamples with torchaudio as the original does:
same float32 samples, same channel mean, same minimum-rate assertion. The library's files are
not changed; tests/integration/test_cosyvoice_real.py checks it against the original
behaviour and runs every prompt through it.
"""

from __future__ import annotations

import importlib
from typing import Any


def torchaudio_needs_torchcodec() -> bool:
    """True when `torchaudio.load` would require TorchCodec and it is not installed."""
    import torchaudio

    major, minor = (int(part) for part in torchaudio.__version__.split(".")[:2])
    if (major, minor) < (2, 9):
        return False
    try:
        importlib.import_module("torchcodec")
    except ImportError:
        return True
    return False


def load_wav(wav: Any, target_sr: int, min_sr: int = 16000) -> Any:
    """CosyVoice's `load_wav` contract: a (1, samples) float tensor at `target_sr`, the mean of
    the channels; asserts the source rate is at least `min_sr` when it must be resampled."""
    import soundfile as sf
    import torch
    import torchaudio

    samples, sample_rate = sf.read(wav, dtype="float32", always_2d=True)
    speech = torch.from_numpy(samples.T.copy()).mean(dim=0, keepdim=True)
    if sample_rate != target_sr:
        assert sample_rate >= min_sr, f"wav sample rate {sample_rate} must be greater than {target_sr}"
        speech = torchaudio.transforms.Resample(orig_freq=sample_rate, new_freq=target_sr)(speech)
    return speech


def adapt(frontend_module: Any) -> bool:
    """Point the frontend module's `load_wav` at ours when torchaudio cannot read on its own.
    Returns whether it did."""
    if not torchaudio_needs_torchcodec():
        return False
    frontend_module.load_wav = load_wav
    return True
