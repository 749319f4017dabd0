"""A test double of the documented CosyVoice 2/3 Python API (see shared reference notes).

Same class names, constructor keywords and method signatures as `cosyvoice.cli.cosyvoice`, so a
call the real API would reject with TypeError fails here too. Behaviour that matters to the
engine is imitated: generators that do no work until iterated, prompt files read three times
by the frontend, CosyVoice 3's `<|endofprompt|>` assertion, the speaker cache in
`frontend.spk2info`, and the (1, n) float tensor output at 24 kHz.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

END_OF_PROMPT = "<|endofprompt|>"
SAMPLES_PER_CHAR = 240  # 10 ms of "speech" per character of text


@dataclass
class Frontend:
    spk2info: dict[str, dict[str, Any]] = field(default_factory=dict)


class _FakeCosyVoice:
    sample_rate = 24_000
    v3 = False

    def __init__(
        self,
        model_dir: str,
        load_jit: bool = False,
        load_trt: bool = False,
        load_vllm: bool = False,
        fp16: bool = False,
        trt_concurrent: int = 1,
    ) -> None:
        self.model_dir = model_dir
        self.init_kwargs = {
            "load_jit": load_jit,
            "load_trt": load_trt,
            "load_vllm": load_vllm,
            "fp16": fp16,
            "trt_concurrent": trt_concurrent,
        }
        self.frontend = Frontend()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.registrations: list[tuple[str, str, str]] = []
        self.failures: list[BaseException | None] = []  # for the next inference calls (None: succeed)
        self.registration_failures: list[BaseException] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    # -- speaker registry
    def list_available_spks(self) -> list[str]:
        return list(self.frontend.spk2info)

    def add_zero_shot_spk(self, prompt_text: str, prompt_wav: str, zero_shot_spk_id: str) -> bool:
        assert zero_shot_spk_id != "", "do not use empty zero_shot_spk_id"
        if self.registration_failures:
            raise self.registration_failures.pop(0)
        self._read_prompt(prompt_wav)
        self.registrations.append((prompt_text, prompt_wav, zero_shot_spk_id))
        self.frontend.spk2info[zero_shot_spk_id] = {"prompt_text": prompt_text}
        return True

    @staticmethod
    def _read_prompt(prompt_wav: str) -> None:
        for _ in range(3):  # the real frontend loads the prompt three times, at two rates
            _, rate = sf.read(prompt_wav)
            assert rate >= 16_000

    # -- inference (generators, like the real ones)
    def _speak(
        self, name: str, text: str, llm_prompt: str, **kwargs: Any
    ) -> Iterator[dict[str, torch.Tensor]]:
        with self._lock:
            self.calls.append((name, {"tts_text": text, **kwargs}))
            self.threads.add(threading.current_thread().name)
            failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            raise failure
        assert kwargs.get("stream") is False, "the engine must not stream"
        if self.v3:
            assert END_OF_PROMPT in llm_prompt + text, "<|endofprompt|> not detected in prompt_text + text"
        yield {"tts_speech": torch.full((1, SAMPLES_PER_CHAR * len(text)), 0.1)}

    def _cached_prompt_text(self, zero_shot_spk_id: str, given: str) -> str:
        if zero_shot_spk_id:
            return str(self.frontend.spk2info[zero_shot_spk_id]["prompt_text"])  # KeyError if unknown
        return given

    def inference_sft(
        self, tts_text: str, spk_id: str, stream: bool = False, speed: float = 1.0, text_frontend: bool = True
    ) -> Iterator[dict[str, torch.Tensor]]:
        prompt_text = self._cached_prompt_text(spk_id, "")
        yield from self._speak(
            "inference_sft", tts_text, prompt_text, spk_id=spk_id, stream=stream, speed=speed
        )

    def inference_zero_shot(
        self,
        tts_text: str,
        prompt_text: str,
        prompt_wav: str,
        zero_shot_spk_id: str = "",
        stream: bool = False,
        speed: float = 1.0,
        text_frontend: bool = True,
    ) -> Iterator[dict[str, torch.Tensor]]:
        effective = self._cached_prompt_text(zero_shot_spk_id, prompt_text)
        if not zero_shot_spk_id:
            self._read_prompt(prompt_wav)
        yield from self._speak(
            "inference_zero_shot",
            tts_text,
            effective,
            prompt_text=prompt_text,
            prompt_wav=prompt_wav,
            zero_shot_spk_id=zero_shot_spk_id,
            stream=stream,
            speed=speed,
        )

    def inference_cross_lingual(
        self,
        tts_text: str,
        prompt_wav: str,
        zero_shot_spk_id: str = "",
        stream: bool = False,
        speed: float = 1.0,
        text_frontend: bool = True,
    ) -> Iterator[dict[str, torch.Tensor]]:
        self._cached_prompt_text(zero_shot_spk_id, "")
        if not zero_shot_spk_id:
            self._read_prompt(prompt_wav)
        # Cross-lingual drops the LLM prompt text: the marker must be in the text itself.
        yield from self._speak(
            "inference_cross_lingual",
            tts_text,
            "",
            prompt_wav=prompt_wav,
            zero_shot_spk_id=zero_shot_spk_id,
            stream=stream,
            speed=speed,
        )

    def inference_instruct2(
        self,
        tts_text: str,
        instruct_text: str,
        prompt_wav: str,
        zero_shot_spk_id: str = "",
        stream: bool = False,
        speed: float = 1.0,
        text_frontend: bool = True,
    ) -> Iterator[dict[str, torch.Tensor]]:
        if not zero_shot_spk_id:
            self._read_prompt(prompt_wav)
        yield from self._speak(
            "inference_instruct2",
            tts_text,
            instruct_text,
            instruct_text=instruct_text,
            prompt_wav=prompt_wav,
            zero_shot_spk_id=zero_shot_spk_id,
            stream=stream,
            speed=speed,
        )


class CosyVoice2(_FakeCosyVoice):
    pass


class CosyVoice3(_FakeCosyVoice):
    v3 = True

    def __init__(  # CosyVoice 3 has no load_jit: passing it is a TypeError, as upstream
        self,
        model_dir: str,
        load_trt: bool = False,
        load_vllm: bool = False,
        fp16: bool = False,
        trt_concurrent: int = 1,
    ) -> None:
        super().__init__(model_dir, False, load_trt, load_vllm, fp16, trt_concurrent)
        del self.init_kwargs["load_jit"]


class CosyVoice(_FakeCosyVoice):
    """CosyVoice 1, which the engine refuses."""


class FakeAutoModel:
    """Stands in for `AutoModel(**kwargs)`: keyword-only, dispatching on the yaml present."""

    def __init__(self, *, basic_config_debug: bool = False) -> None:
        self.instances: list[_FakeCosyVoice] = []
        self.kwargs: list[dict[str, Any]] = []
        self.basic_config_debug = basic_config_debug

    def __call__(self, **kwargs: Any) -> _FakeCosyVoice:
        self.kwargs.append(kwargs)
        if self.basic_config_debug:  # what importing the real package does to the root logger
            logging.basicConfig(level=logging.DEBUG, force=True)
        model_dir = Path(kwargs["model_dir"])
        model: _FakeCosyVoice
        if (model_dir / "cosyvoice3.yaml").exists():
            model = CosyVoice3(**kwargs)
        elif (model_dir / "cosyvoice2.yaml").exists():
            model = CosyVoice2(**kwargs)
        else:
            model = CosyVoice(**kwargs)
        self.instances.append(model)
        return model

    @property
    def model(self) -> _FakeCosyVoice:
        return self.instances[-1]


def make_model_dir(root: Path, family: str = "cosyvoice3", *, extra: tuple[str, ...] = ()) -> Path:
    """A directory that passes the engine's structural checks (a yaml with the keys the library
    reads, checkpoints that are zip archives, a well-formed safetensors header), with no real
    weights in it: only the double can "load" it."""
    directory = root / family
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = "speech_tokenizer_v3.onnx" if family == "cosyvoice3" else "speech_tokenizer_v2.onnx"
    keys = ("sample_rate: 24000", "llm: x", "flow: x", "hift: x", "get_tokenizer: x", "feat_extractor: x")
    (directory / f"{family}.yaml").write_text("\n".join([*keys, "allowed_special: all", ""]))
    for name in ("llm.pt", "flow.pt", "hift.pt"):
        torch.save({}, directory / name)
    for name in ("campplus.onnx", tokenizer, *extra):
        (directory / name).write_bytes(b"\0" * 16)
    blank = directory / "CosyVoice-BlankEN"
    blank.mkdir(exist_ok=True)
    (blank / "config.json").write_text("{}")
    (blank / "model.safetensors").write_bytes(len(b"{}").to_bytes(8, "little") + b"{}")
    return directory
