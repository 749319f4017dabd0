"""Stand-ins for CosyVoice's two ONNX models, exported from small torch modules.

The frontend (cosyvoice/cli/frontend.py) runs them through onnxruntime by input *position*:

* `campplus.onnx`, the speaker embedding: input 0 is a Kaldi fbank with the mean removed,
  float32 `(1, frames, 80)`; output 0 is read flattened as a 192-d embedding.
* `speech_tokenizer_v2.onnx` / `_v3.onnx`: input 0 is Whisper's log-mel, float32
  `(1, 128, frames)` at 100 frames a second; input 1 its length, int32 `(1,)`; output 0 is read
  flattened as speech-token ids in [0, 6561), 25 a second (four mel frames a token).

We keep the released files' names (`input`/`output`; `feats`/`feats_length`/`indices`) and
their dtypes. The tokenizer quantises like the real one, with FSQ: 8 dimensions of 3 levels
each, so every id in [0, 6561) is reachable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FSQ_DIMS = 8
EMBEDDING_DIM = 192


def _modules() -> tuple[Any, Any]:
    import torch
    from torch import nn

    class SpeakerEmbedding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(80, EMBEDDING_DIM)

        def forward(self, fbank: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.proj(fbank)).mean(dim=1)

    class SpeechTokenizer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down1 = nn.Conv1d(128, 32, kernel_size=3, stride=2, padding=1)
            self.down2 = nn.Conv1d(32, FSQ_DIMS, kernel_size=3, stride=2, padding=1)

        def forward(self, feats: torch.Tensor, feats_length: torch.Tensor) -> torch.Tensor:
            frames = torch.arange(feats.shape[2], device=feats.device).unsqueeze(0)
            valid = (frames < feats_length.unsqueeze(1)).to(feats.dtype).unsqueeze(1)
            hidden = torch.nn.functional.gelu(self.down1(feats * valid))
            levels = torch.round(torch.tanh(self.down2(hidden) * 4.0)).to(torch.int64) + 1  # {0, 1, 2}
            place = (3 ** torch.arange(FSQ_DIMS, dtype=torch.int64)).view(1, FSQ_DIMS, 1)
            return (levels * place).sum(dim=1)

    return SpeakerEmbedding, SpeechTokenizer


def export_campplus(path: Path, seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    speaker_embedding, _ = _modules()
    module = speaker_embedding().eval()
    torch.onnx.export(
        module,
        (torch.zeros(1, 200, 80),),
        str(path),
        dynamo=False,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch", 1: "frames"}, "output": {0: "batch"}},
    )


def export_speech_tokenizer(path: Path, seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    _, speech_tokenizer = _modules()
    module = speech_tokenizer().eval()
    torch.onnx.export(
        module,
        (torch.zeros(1, 128, 300), torch.tensor([300], dtype=torch.int32)),
        str(path),
        dynamo=False,
        input_names=["feats", "feats_length"],
        output_names=["indices"],
        dynamic_axes={
            "feats": {0: "batch", 2: "frames"},
            "feats_length": {0: "batch"},
            "indices": {0: "batch", 1: "tokens"},
        },
    )
