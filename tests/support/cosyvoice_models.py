"""Random-weight CosyVoice models for the tests and benchmarks, made once and cached under .infra.

The cache key is a hash of the model maker's own source, so changing the maker remakes the
models; the manifest is written last, so a half-made directory is never reused."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
from pathlib import Path

import numpy as np

from consumer.engine import AudioBuffer, PromptAudio
from tests.support.stack import ROOT

CACHE = ROOT / ".infra" / "test-models"
_MAKER = ROOT / "consumer" / "engines" / "cosyvoice_testmodel"


def _maker_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(_MAKER.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def tiny_model(family: str) -> Path:
    """The path of a complete tiny model of `family`, made if it is missing or stale."""
    return made_model(family, "tiny")


def made_model(family: str, size: str) -> Path:
    """The path of a complete model of `family` and `size`, made if it is missing or stale."""
    from consumer.engines.cosyvoice_testmodel import make_test_model, read_manifest

    CACHE.mkdir(parents=True, exist_ok=True)
    target = CACHE / f"{family}-{size}-{_maker_digest()}"
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test processes never make the same model at once
        if read_manifest(target) is None:
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            make_test_model(family, size, partial)
            shutil.rmtree(target, ignore_errors=True)
            partial.rename(target)
    return target


def prompt_voice(transcript: str = "Hello there, this is my voice.", *, seed: int = 0) -> PromptAudio:
    """Three seconds of a 24 kHz tone with a little noise: a prompt the frontend accepts (the
    test models' audio is noise whatever the prompt)."""
    rate = 24_000
    t = np.arange(3 * rate) / rate
    rng = np.random.default_rng(seed)
    samples = 0.1 * np.sin(2 * np.pi * (120 + 10 * seed) * t) + 0.01 * rng.standard_normal(len(t))
    return PromptAudio(f"{seed:064x}", transcript, AudioBuffer(samples.astype(np.float32), rate))
