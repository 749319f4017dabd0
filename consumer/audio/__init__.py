"""Audio post-processing (resample, loudness, true-peak limit, encode) and prompt decoding.

Importing this package does not import torch; the finisher's constructor does. Prompt decoding
never does (scipy resamples prompts), so the voice registry runs without torch. docs/audio.md
describes the chain and its costs.
"""

from __future__ import annotations

from consumer.audio.encode import CodecSettings
from consumer.audio.finisher import TorchAudioFinisher
from consumer.audio.prompt import (
    CANONICAL_RATE_HZ,
    CanonicalPrompt,
    InvalidPromptAudio,
    PromptLimits,
    canonicalise,
    read_canonical,
)

__all__ = [
    "CANONICAL_RATE_HZ",
    "CanonicalPrompt",
    "CodecSettings",
    "InvalidPromptAudio",
    "PromptLimits",
    "TorchAudioFinisher",
    "canonicalise",
    "read_canonical",
]
