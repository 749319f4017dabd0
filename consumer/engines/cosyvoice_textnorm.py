"""Which text normaliser CosyVoice's frontend uses: an explicit choice, never a download.

Left to itself, CosyVoice's frontend tries `ttsfrd` (resources at a path fixed relative to its
source tree), then `wetext` -- whose `Normalizer()` fetches its FSTs from ModelScope at start-up,
a network call at run time -- and silently falls back to its built-in rules when both fail. The
engine takes that choice away from the library: while the model is built, both imports are made
to fail, and afterwards the frontend gets the normaliser chosen by `TTS_COSYVOICE_TEXT_FRONTEND`:

* `wetext`: wetext's runtime over the FSTs that the WeTextProcessing wheel ships (`tn/`), read
  locally, for Chinese and English (numbers, dates, units, money).
* `ttsfrd`: the ttsfrd engine with `TTS_COSYVOICE_TTSFRD_RESOURCE_DIR` (ttsfrd is not on PyPI;
  install the wheel CosyVoice's README points to).
* `basic`: CosyVoice's own rules only (English numbers spelled out by inflect; Chinese
  punctuation and brackets); Chinese digits stay digits.
* `auto` (default): ttsfrd when it is importable and has a resource directory, else wetext when
  installed, else basic. The log line "cosyvoice text frontend" says which.

Choosing `wetext` or `ttsfrd` when it is not installed is a load error, not a silent fallback.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from consumer.engine import EngineLoadError

CHOICES = ("auto", "wetext", "ttsfrd", "basic")
_LIBRARY_PICKS = ("ttsfrd", "wetext")
_WETEXT_FSTS = ("zh_tn_tagger.fst", "zh_tn_verbalizer.fst", "en_tn_tagger.fst", "en_tn_verbalizer.fst")


@contextlib.contextmanager
def library_choice_blocked() -> Iterator[None]:
    """Make `import ttsfrd` and `import wetext` fail while the frontend is built (a None entry
    in sys.modules raises ImportError), so it neither downloads nor picks for us."""
    saved = {name: sys.modules.get(name) for name in _LIBRARY_PICKS}
    for name in _LIBRARY_PICKS:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def wetext_fst_dir() -> Path | None:
    """The directory of WeTextProcessing's text-normalisation FSTs, if installed."""
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec("tn")
        if spec is not None and spec.origin:
            directory = Path(spec.origin).parent
            if all((directory / name).is_file() for name in _WETEXT_FSTS):
                return directory
    return None


def _available(name: str) -> bool:
    with contextlib.suppress(ImportError, ValueError):
        return importlib.util.find_spec(name) is not None
    return False


def resolve(choice: str, ttsfrd_resource: Path | None) -> str:
    """The normaliser `choice` means on this installation (auto resolved), or EngineLoadError."""
    if choice not in CHOICES:
        raise EngineLoadError(f"TTS_COSYVOICE_TEXT_FRONTEND={choice!r}: one of {', '.join(CHOICES)}")
    if choice == "auto":
        if _available("ttsfrd") and ttsfrd_resource is not None:
            return "ttsfrd"
        return "wetext" if _available("wetext") and wetext_fst_dir() is not None else "basic"
    if choice == "ttsfrd":
        if not _available("ttsfrd"):
            raise EngineLoadError("TTS_COSYVOICE_TEXT_FRONTEND=ttsfrd but ttsfrd is not installed")
        if ttsfrd_resource is None or not ttsfrd_resource.is_dir():
            raise EngineLoadError(
                "TTS_COSYVOICE_TEXT_FRONTEND=ttsfrd needs TTS_COSYVOICE_TTSFRD_RESOURCE_DIR, the "
                "CosyVoice-ttsfrd resource directory"
            )
    if choice == "wetext" and (not _available("wetext") or wetext_fst_dir() is None):
        raise EngineLoadError(
            "TTS_COSYVOICE_TEXT_FRONTEND=wetext needs wetext and WeTextProcessing installed "
            "(both are in the cosyvoice extra)"
        )
    return choice


def install(frontend: Any, name: str, ttsfrd_resource: Path | None) -> None:
    """Give CosyVoice's frontend object the normaliser `name` (a value from `resolve`)."""
    if name == "basic":
        frontend.text_frontend = ""
        return
    if name == "wetext":
        normalizer = importlib.import_module("wetext").Normalizer
        fsts = wetext_fst_dir()
        assert fsts is not None  # resolve() checked
        frontend.zh_tn_model = normalizer(
            tagger_path=str(fsts / "zh_tn_tagger.fst"),
            verbalizer_path=str(fsts / "zh_tn_verbalizer.fst"),
            lang="zh",
        )
        frontend.en_tn_model = normalizer(
            tagger_path=str(fsts / "en_tn_tagger.fst"),
            verbalizer_path=str(fsts / "en_tn_verbalizer.fst"),
            lang="en",
        )
        frontend.text_frontend = "wetext"
        return
    engine = importlib.import_module("ttsfrd").TtsFrontendEngine()
    if engine.initialize(str(ttsfrd_resource)) is not True:
        raise EngineLoadError(f"ttsfrd could not initialise from {ttsfrd_resource}")
    engine.set_lang_type("pinyinvg")
    frontend.frd = engine
    frontend.text_frontend = "ttsfrd"
