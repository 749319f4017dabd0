"""Loading side of the cosyvoice engine: the model directory, the official package's import,
and the options passed through to `AutoModel` (docs/engines.md)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumer.engine import EngineLoadError

FAMILIES = {
    "cosyvoice3": ("cosyvoice3.yaml", "speech_tokenizer_v3.onnx"),
    "cosyvoice2": ("cosyvoice2.yaml", "speech_tokenizer_v2.onnx"),
}
REQUIRED_FILES = ("llm.pt", "flow.pt", "hift.pt", "campplus.onnx", "CosyVoice-BlankEN/config.json")
LANGUAGES = {
    "cosyvoice3": frozenset({"zh", "en", "ja", "ko", "de", "es", "fr", "it", "ru", "yue"}),
    "cosyvoice2": frozenset({"zh", "en", "ja", "ko", "yue"}),
}


@dataclass(frozen=True, slots=True)
class CosyVoiceOptions:
    fp16: bool = False
    load_jit: bool = False
    load_trt: bool = False
    load_vllm: bool = False
    trt_concurrent: int = 1

    @property
    def concurrency(self) -> int:
        """Tasks run at once: only vLLM batches concurrent requests' decoding."""
        return max(1, self.trt_concurrent) if self.load_vllm else 1


# -------------------------------------------------------------------- the model directory --


def detect_family(model_dir: Path) -> str:
    for family, (config, _) in FAMILIES.items():
        if (model_dir / config).is_file():
            return family
    if (model_dir / "cosyvoice.yaml").is_file():
        raise EngineLoadError(
            f"{model_dir} holds a CosyVoice 1 (300M) model; this engine serves CosyVoice 2 and 3"
        )
    raise EngineLoadError(
        f"{model_dir} holds neither cosyvoice3.yaml nor cosyvoice2.yaml: not a CosyVoice model"
    )


def check_model_dir(model_dir: Path, family: str, options: CosyVoiceOptions) -> None:
    """Fail with the list of what is missing before the model spends minutes loading."""
    tokenizer = FAMILIES[family][1]
    missing = [name for name in (*REQUIRED_FILES, tokenizer) if not (model_dir / name).is_file()]
    if options.load_jit and family == "cosyvoice2":
        jit = f"flow.encoder.{'fp16' if options.fp16 else 'fp32'}.zip"
        missing += [] if (model_dir / jit).is_file() else [jit]
    if missing:
        raise EngineLoadError(f"the model directory {model_dir} lacks {', '.join(missing)}")
    writable = os.access(model_dir, os.W_OK)
    if options.load_trt:
        plan = f"flow.decoder.estimator.{'fp16' if options.fp16 else 'fp32'}.mygpu.plan"
        if not (model_dir / plan).is_file():
            if not (model_dir / "flow.decoder.estimator.fp32.onnx").is_file():
                raise EngineLoadError(
                    f"load_trt needs {plan} or flow.decoder.estimator.fp32.onnx in {model_dir}"
                )
            if not writable:
                raise EngineLoadError(
                    f"load_trt must build {plan} into {model_dir}, which is read-only: build it once on "
                    "a writable copy on this GPU model (docs/engines.md)"
                )
    if options.load_vllm and not (model_dir / "vllm").is_dir() and not writable:
        raise EngineLoadError(
            f"load_vllm must export {model_dir / 'vllm'} on first use, but {model_dir} is read-only"
        )


def model_fingerprint(model_dir: Path, family: str) -> str:
    """`<family>-<12 hex>` over the config's bytes and the weight files' sizes: it changes
    when the model does, without hashing gigabytes at every start. Files the engine writes
    itself (TensorRT plans, the vLLM export) are not part of it."""
    digest = hashlib.sha256()
    config, tokenizer = FAMILIES[family]
    digest.update((model_dir / config).read_bytes())
    for name in (*REQUIRED_FILES, tokenizer, "CosyVoice-BlankEN/model.safetensors"):
        path = model_dir / name
        size = path.stat().st_size if path.is_file() else -1
        digest.update(f"\n{name}={size}".encode())
    return f"{family}-{digest.hexdigest()[:12]}"


@contextlib.contextmanager
def root_logging_kept() -> Iterator[None]:
    """CosyVoice calls logging.basicConfig(level=DEBUG) when imported; undo that."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        root.setLevel(level)
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)


def import_automodel(*, load_vllm: bool = False) -> Callable[..., Any]:
    """The official `cosyvoice.cli.cosyvoice.AutoModel`, or EngineLoadError saying what to
    install. The CosyVoice source tree is not a pip package (docs/engines.md)."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # the model reports per-sentence progress bars
    with root_logging_kept():
        try:
            module = importlib.import_module("cosyvoice.cli.cosyvoice")
        except ImportError as exc:
            third_party = ""
            with contextlib.suppress(ImportError, ValueError):
                if importlib.util.find_spec("cosyvoice") is not None and (exc.name or "").startswith(
                    "cosyvoice"
                ):
                    third_party = (
                        " A package named 'cosyvoice' is importable but it is not the official source "
                        "tree (the PyPI package of that name is an unrelated third-party one)."
                    )
            raise EngineLoadError(
                "the cosyvoice engine needs the CosyVoice source tree (FunAudioLLM/CosyVoice and its "
                "third_party/Matcha-TTS) on PYTHONPATH and the cosyvoice extra installed: "
                f"pip install 'tts-stream[cosyvoice]'; see docs/engines.md ({exc.name or exc} could not "
                f"be imported).{third_party}"
            ) from exc
        except Exception as exc:  # a broken dependency fails at import time in many ways
            raise EngineLoadError(f"importing CosyVoice failed: {type(exc).__name__}: {exc}") from exc
        automodel = getattr(module, "AutoModel", None)
        if automodel is None:
            raise EngineLoadError(
                "this CosyVoice checkout has no AutoModel: use a commit from December 2025 or later "
                "(docs/engines.md)"
            )
        if load_vllm:
            _register_vllm_model()
    return automodel  # type: ignore[no-any-return]


def _register_vllm_model() -> None:
    try:
        model_class = importlib.import_module("cosyvoice.vllm.cosyvoice2").CosyVoice2ForCausalLM
        registry = importlib.import_module("vllm").ModelRegistry
    except (ImportError, AttributeError) as exc:
        raise EngineLoadError(
            f"load_vllm needs vLLM installed next to CosyVoice (docs/engines.md): {exc}"
        ) from exc
    registry.register_model("CosyVoice2ForCausalLM", model_class)
