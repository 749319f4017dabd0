"""The official API call the sequential path would make, as the frontend inputs it would build.

Each `inference_*` method of CosyVoice normalises and splits its text with the frontend, then
builds one `model_input` dict per piece (text tokens, prompt text and speech tokens, prompt mel,
speaker embedding -- from the speaker cache when a speaker id is given) and hands each to the
model. The batched path calls the same frontend functions in the same way and hands the dicts
to its scheduler instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def model_inputs(model: Any, method: str, kwargs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The `model_input` dicts `model.<method>(**kwargs)` would pass to `model.model.tts`."""
    frontend = model.frontend
    rate = model.sample_rate
    pieces = frontend.text_normalize(kwargs["tts_text"], split=True)
    if method == "inference_zero_shot":
        prompt_text = frontend.text_normalize(kwargs["prompt_text"], split=False)
        return [
            frontend.frontend_zero_shot(
                piece, prompt_text, kwargs["prompt_wav"], rate, kwargs["zero_shot_spk_id"]
            )
            for piece in pieces
        ]
    if method == "inference_cross_lingual":
        return [
            frontend.frontend_cross_lingual(piece, kwargs["prompt_wav"], rate, kwargs["zero_shot_spk_id"])
            for piece in pieces
        ]
    if method == "inference_instruct2":
        return [
            frontend.frontend_instruct2(
                piece, kwargs["instruct_text"], kwargs["prompt_wav"], rate, kwargs["zero_shot_spk_id"]
            )
            for piece in pieces
        ]
    if method == "inference_sft":
        return [frontend.frontend_sft(piece, kwargs["spk_id"]) for piece in pieces]
    raise ValueError(f"the batched path has no form of {method}")
