"""Loading side of the cosyvoice engine: the model directory, the official package's import,
and the options passed through to `AutoModel` (docs/engines.md)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumer.engine import EngineLoadError
from consumer.engines import cosyvoice_compat

FAMILIES = {
    "cosyvoice3": ("cosyvoice3.yaml", "speech_tokenizer_v3.onnx"),
    "cosyvoice2": ("cosyvoice2.yaml", "speech_tokenizer_v2.onnx"),
}
REQUIRED_FILES = (
    "llm.pt",
    "flow.pt",
    "hift.pt",
    "campplus.onnx",
    "CosyVoice-BlankEN/config.json",
    "CosyVoice-BlankEN/model.safetensors",
)
_CONFIG_KEYS = ("sample_rate", "llm", "flow", "hift", "get_tokenizer", "feat_extractor", "allowed_special")
_JSON_FILES = (
    "CosyVoice-BlankEN/config.json",
    "CosyVoice-BlankEN/tokenizer.json",
    "CosyVoice-BlankEN/tokenizer_config.json",
    "CosyVoice-BlankEN/generation_config.json",
)
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
    text_frontend: str = "auto"
    ttsfrd_resource_dir: Path | None = None

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
    check_model_files(model_dir, family)
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


def check_model_files(model_dir: Path, family: str) -> None:
    """Cheap structural checks that name the broken file, where the library's own error would
    not (a truncated checkpoint is "failed finding central directory", a cut yaml a missing
    key deep in the flow's config). They read headers and small files only: never the weights.
    The ONNX files are left to onnxruntime, whose error names the file."""
    config = FAMILIES[family][0]
    problems = [f"{config}: {problem}" for problem in _config_problems(model_dir / config)]
    for name in ("llm.pt", "flow.pt", "hift.pt"):
        if not zipfile.is_zipfile(model_dir / name):
            problems.append(f"{name}: not a complete PyTorch checkpoint (truncated or corrupt)")
    for name in _JSON_FILES:
        path = model_dir / name
        if path.is_file():
            try:
                json.loads(path.read_bytes())
            except ValueError:
                problems.append(f"{name}: not valid JSON (truncated or corrupt)")
    safetensors = "CosyVoice-BlankEN/model.safetensors"
    if not _safetensors_complete(model_dir / safetensors):
        problems.append(f"{safetensors}: not a complete safetensors file (truncated or corrupt)")
    if problems:
        raise EngineLoadError(f"the model directory {model_dir} has broken files: {'; '.join(problems)}")


def _config_problems(path: Path) -> list[str]:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        # compose() parses without building the !new:/!name: objects: a syntax check only.
        root = YAML(typ="rt").compose(path.read_text(encoding="utf-8"))
    except (YAMLError, UnicodeDecodeError) as exc:
        return [f"not valid YAML ({type(exc).__name__})"]
    keys = {key.value for key, _ in getattr(root, "value", [])} if root is not None else set()
    lacking = [key for key in _CONFIG_KEYS if key not in keys]
    return [f"lacks {', '.join(lacking)} (truncated, or not a CosyVoice config)"] if lacking else []


def _safetensors_complete(path: Path) -> bool:
    """The header's length prefix and JSON parse, and its tensors end where the file does."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            header_len = int.from_bytes(handle.read(8), "little")
            if header_len <= 0 or 8 + header_len > size:
                return False
            header = json.loads(handle.read(header_len))
    except (OSError, ValueError):
        return False
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    return 8 + header_len + max(ends, default=0) == size


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
                "`make cosyvoice` in a checkout of this project, or pip install 'tts-stream[cosyvoice]' "
                f"plus the pinned source; see docs/engines.md ({exc.name or exc} could not "
                f"be imported).{third_party}"
            ) from exc
        except Exception as exc:  # a broken dependency fails at import time in many ways
            raise EngineLoadError(f"importing CosyVoice failed: {type(exc).__name__}: {exc}") from exc
        cosyvoice_compat.adapt(importlib.import_module("cosyvoice.cli.frontend"))
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
