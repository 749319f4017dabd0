"""Make a CosyVoice 2 or 3 model directory with random weights that the real library loads.

No weights can be downloaded where this project is built and tested, but CosyVoice's inference
code can run on weights we make: the structure is in the yaml, and random, seeded weights
exercise every line of the inference path (the audio is noise; the code path, tensor shapes,
files and timings are real). `make_test_model` writes what `AutoModel(model_dir=...)` reads:

    cosyvoice3.yaml | cosyvoice2.yaml   CosyVoice's classes, dimensions from `dims.py`
    llm.pt flow.pt hift.pt              state dicts of those classes, seeded random init
    campplus.onnx                       speaker embedding stand-in (onnx_parts.py)
    speech_tokenizer_v3.onnx | _v2      speech tokenizer stand-in (onnx_parts.py)
    CosyVoice-BlankEN/                  Qwen2 config + weights, tokenizer trained here
    test-model.json                     what was made, the parameter counts, the seed

Building the modules needs the CosyVoice source tree importable (`make cosyvoice`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from consumer.engines.cosyvoice_testmodel import dims as model_dims
from consumer.engines.cosyvoice_testmodel import onnx_parts
from consumer.engines.cosyvoice_testmodel.tokenizer import write_tokenizer

log = logging.getLogger(__name__)

MAKER_VERSION = 1  # bump when the files made change: test caches key on it
MANIFEST = "test-model.json"
TOKENIZER_DIR = "CosyVoice-BlankEN"
_LOGIT_SHARPENING = 40.0  # speech-token logits of a few tens: a zero logit is never sampled
_SPEECH_TOKENIZER = {"cosyvoice3": "speech_tokenizer_v3.onnx", "cosyvoice2": "speech_tokenizer_v2.onnx"}

# Parameters of the released checkpoints (fp32 state dicts: bytes / 4, rounded), for the report.
RELEASED_PARAMETERS = {
    "cosyvoice3": {"llm": 506_167_000, "flow": 332_279_000, "hift": 20_800_000},
}


@dataclass(frozen=True, slots=True)
class TestModel:
    family: str
    size: str
    seed: int
    maker_version: int
    parameters: dict[str, int]
    learned_tokens: int
    seconds: float


def make_test_model(family: str, size: str, out: Path, *, seed: int = 0) -> TestModel:
    dims = model_dims.dims_for(family, size)
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # written last: its presence means complete
    blank = out / TOKENIZER_DIR
    learned = write_tokenizer(blank)
    _write_qwen(dims, blank, seed)
    config = out / f"{family}.yaml"
    config.write_text(model_dims.render_yaml(dims), encoding="utf-8")
    parameters = _write_weights(config, blank, out, seed)
    onnx_parts.export_campplus(out / "campplus.onnx", seed + 1)
    onnx_parts.export_speech_tokenizer(out / _SPEECH_TOKENIZER[family], seed + 2)
    report = TestModel(
        family=family,
        size=size,
        seed=seed,
        maker_version=MAKER_VERSION,
        parameters=parameters,
        learned_tokens=learned,
        seconds=round(time.monotonic() - started, 1),
    )
    (out / MANIFEST).write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return report


def read_manifest(model_dir: Path) -> dict[str, Any] | None:
    path = model_dir / MANIFEST
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def _write_qwen(dims: model_dims.ModelDims, directory: Path, seed: int) -> None:
    import importlib

    import torch

    transformers: Any = importlib.import_module("transformers")  # its stubs are partial
    torch.manual_seed(seed)
    config = transformers.Qwen2Config(**model_dims.qwen_config(dims))
    model = transformers.Qwen2ForCausalLM(config)
    model.save_pretrained(str(directory), safe_serialization=True)


def _write_weights(config: Path, blank: Path, out: Path, seed: int) -> dict[str, int]:
    """Instantiate the yaml with CosyVoice's classes and save their state dicts."""
    import torch

    from consumer.engines.cosyvoice_model import root_logging_kept

    with root_logging_kept():
        from hyperpyyaml import load_hyperpyyaml

        torch.manual_seed(seed)
        with config.open(encoding="utf-8") as handle:
            built = load_hyperpyyaml(handle, overrides={"qwen_pretrain_path": str(blank)})
    _never_stop(built["llm"])
    parameters: dict[str, int] = {}
    for part in ("llm", "flow", "hift"):
        module: torch.nn.Module = built[part]
        torch.save(module.state_dict(), out / f"{part}.pt")
        parameters[part] = sum(p.numel() for p in module.parameters())
    return parameters


def _never_stop(llm: Any) -> None:
    """Random weights would stop at random: CosyVoice 3 has 200 stop ids, which its sampler lets
    through even before the minimum length, so requests would end after a token or two. Make
    the speech-token logits sharp and the stop rows zero, so a random model always generates up
    to CosyVoice's own cap (`max_token_text_ratio`, 20 speech tokens per text token): lengths are
    deterministic and bounded the way the library bounds them."""
    import torch

    decoder = llm.llm_decoder
    with torch.no_grad():
        decoder.weight.mul_(_LOGIT_SHARPENING)
        decoder.weight[model_dims.SPEECH_TOKENS :].zero_()
        if decoder.bias is not None:
            decoder.bias[model_dims.SPEECH_TOKENS :].zero_()
