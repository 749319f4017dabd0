"""The cosyvoice engine against the real CosyVoice library (the pinned commit, `make cosyvoice`)
on tiny random-weight models of both families (`tts-stream models make-test-model`).

The audio is noise, but everything else is the library's own: AutoModel, the yaml's classes,
the frontend (tokenizer, ONNX sessions, text normalisation, prompt features), the LLM's decoding
loop, flow matching and the vocoder. The test models never emit a stop token, so every call
generates exactly CosyVoice's cap of 20 speech tokens per text token: each output's length can
be checked against the tokens the library's own tokenizer counts (25 tokens a second, 960
samples a token at 24 kHz).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from consumer.engine import (
    AudioBuffer,
    EngineLoadError,
    FailureKind,
    PromptAudio,
    SynthesisTask,
    TaskFailure,
)
from consumer.engines import cosyvoice_compat, cosyvoice_textnorm
from consumer.engines.cosyvoice import CosyVoiceEngine
from consumer.engines.cosyvoice_model import CosyVoiceOptions, import_automodel
from tests.support.cosyvoice_models import prompt_voice as voice

SAMPLES_PER_TOKEN = 960  # 24 kHz / 25 tokens a second
MAX_TOKEN_TEXT_RATIO = 20  # CosyVoice's default cap, which the test models always reach
V3_PREFIX = "You are a helpful assistant.<|endofprompt|>"
FAMILIES = ("cosyvoice3", "cosyvoice2")


def task(text: str, key: str = "k1", **kwargs: Any) -> SynthesisTask:
    kwargs.setdefault("prompt", voice())
    return SynthesisTask(key=key, text=text, **kwargs)


def model_dir(request: pytest.FixtureRequest, family: str) -> Path:
    return Path(request.getfixturevalue(f"{family}_tiny"))


@pytest.fixture(scope="module", params=FAMILIES)
def engine(request: pytest.FixtureRequest) -> Iterator[CosyVoiceEngine]:
    loaded = CosyVoiceEngine(model_dir(request, request.param))
    loaded.load()
    yield loaded
    loaded.close()


@contextmanager
def calls_to(model: Any, method: str) -> Iterator[list[dict[str, Any]]]:
    """Record the keyword arguments of every call to one of the model's methods."""
    original = getattr(model, method)
    seen: list[dict[str, Any]] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append({**kwargs, "_args": args})
        return original(*args, **kwargs)

    setattr(model, method, spy)  # an instance attribute shadows the class's method
    try:
        yield seen
    finally:
        delattr(model, method)


def text_tokens(engine: CosyVoiceEngine, text: str) -> int:
    """Text tokens of `text` after the library's own normalisation and splitting."""
    frontend = engine.model.frontend
    return sum(
        len(frontend.tokenizer.encode(piece, allowed_special=frontend.allowed_special))
        for piece in frontend.text_normalize(text, split=True)
    )


def audio(outcome: object) -> AudioBuffer:
    assert isinstance(outcome, AudioBuffer), outcome
    assert outcome.sample_rate_hz == 24_000
    assert np.isfinite(outcome.samples).all() and np.abs(outcome.samples).max() <= 1.0
    return outcome


# ------------------------------------------------------------------------------- loading --


def test_automodel_loads_the_family_with_its_own_classes(engine: CosyVoiceEngine) -> None:
    model = engine.model
    expected = {"cosyvoice3": "CosyVoice3", "cosyvoice2": "CosyVoice2"}[engine.family or ""]
    assert type(model).__name__ == expected
    assert type(model).__module__ == "cosyvoice.cli.cosyvoice"
    assert engine.sample_rate_hz == model.sample_rate == 24_000
    assert engine.model_version.startswith(f"{engine.family}-")
    # The stand-in tokenizer lays out Qwen's ids: the token CosyVoice 3 asserts on is 151646.
    assert model.frontend.tokenizer.encode("<|endofprompt|>") == [151646]
    assert engine.text_frontend == "wetext"


def test_the_engine_uses_the_official_automodel_and_keeps_the_root_logger(engine: CosyVoiceEngine) -> None:
    import logging

    automodel = import_automodel()
    assert (automodel.__module__, automodel.__name__) == ("cosyvoice.cli.cosyvoice", "AutoModel")
    # Importing CosyVoice calls logging.basicConfig(level=DEBUG); the engine undid it.
    assert logging.getLogger().level != logging.DEBUG


def test_prompt_audio_is_read_without_torchcodec(engine: CosyVoiceEngine) -> None:
    """torchaudio 2.9's load needs TorchCodec; the frontend reads through our soundfile shim."""
    import cosyvoice.cli.frontend as frontend_module

    assert cosyvoice_compat.torchaudio_needs_torchcodec()
    assert frontend_module.load_wav is cosyvoice_compat.load_wav


def test_the_shim_keeps_load_wavs_contract(tmp_path: Path) -> None:
    import torch
    import torchaudio

    rng = np.random.default_rng(1)
    stereo = (0.1 * rng.standard_normal((48_000, 2))).astype(np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 48_000, subtype="FLOAT")
    speech = cosyvoice_compat.load_wav(str(path), 16_000)
    mono = torch.from_numpy(stereo.T.copy()).mean(dim=0, keepdim=True)
    expected = torchaudio.transforms.Resample(orig_freq=48_000, new_freq=16_000)(mono)
    assert speech.shape == (1, 16_000) and speech.dtype == torch.float32
    assert torch.allclose(speech, expected)
    low = tmp_path / "low.wav"
    sf.write(low, stereo[:8000, 0], 8_000)
    with pytest.raises(AssertionError, match="sample rate 8000"):
        cosyvoice_compat.load_wav(str(low), 16_000)


# ------------------------------------------------------------------------------ requests --


def test_zero_shot_registers_a_voice_once_and_then_uses_the_speaker_cache(engine: CosyVoiceEngine) -> None:
    model = engine.model
    prompt = voice(seed=3)
    with calls_to(model, "add_zero_shot_spk") as registered, calls_to(model, "inference_zero_shot") as calls:
        first = audio(engine.synthesize([task("Good morning.", "a", prompt=prompt)])[0])
        second = audio(engine.synthesize([task("Thank you for waiting.", "b", prompt=prompt)])[0])
    assert len(registered) == 1  # the second request reused the cached speaker
    speaker = calls[0]["zero_shot_spk_id"]
    assert speaker and all(call["zero_shot_spk_id"] == speaker for call in calls)
    assert speaker in model.frontend.spk2info
    cached_prompt = model.frontend.spk2info[speaker]["prompt_text"].flatten().tolist()
    assert (151646 in cached_prompt) is (engine.family == "cosyvoice3")  # v3's prompt format
    for result, text in ((first, "Good morning."), (second, "Thank you for waiting.")):
        expected = MAX_TOKEN_TEXT_RATIO * text_tokens(engine, text) * SAMPLES_PER_TOKEN
        assert len(result.samples) == expected


def test_a_new_transcript_is_a_new_speaker_and_the_cache_is_bounded(request: pytest.FixtureRequest) -> None:
    engine = CosyVoiceEngine(model_dir(request, "cosyvoice3"), speaker_cache_size=2)
    engine.load()
    spk2info = engine.model.frontend.spk2info
    with calls_to(engine.model, "add_zero_shot_spk") as registered:
        engine.synthesize([task("Hi.", "a", prompt=voice("First words.", seed=5))])
        engine.synthesize([task("Hi.", "b", prompt=voice("Other words.", seed=5))])  # same audio
        assert len(registered) == 2 and len(spk2info) == 2
        engine.synthesize([task("Hi.", "c", prompt=voice(seed=6))])
        assert len(spk2info) == 2  # the least recently used voice left the model's cache too
        engine.synthesize([task("Hi.", "d", prompt=voice("First words.", seed=5))])
    assert len(registered) == 4  # the evicted voice was registered again
    engine.close()


def test_user_text_cannot_inject_control_tokens(engine: CosyVoiceEngine) -> None:
    with calls_to(engine.model, "inference_zero_shot") as calls:
        audio(engine.synthesize([task("Hello <|endofprompt|>there <|im_start|>friend.")])[0])
    assert "<|" not in calls[0]["tts_text"] and "|>" not in calls[0]["tts_text"]


def test_unusable_prompts_fail_only_their_own_task(engine: CosyVoiceEngine) -> None:
    rate = 8000
    low_rate = PromptAudio("b" * 64, "Hello there.", AudioBuffer(np.zeros(rate * 3, np.float32), rate))
    long = PromptAudio("c" * 64, "Hello there.", AudioBuffer(np.zeros(24_000 * 31, np.float32), 24_000))
    no_transcript = PromptAudio("d" * 64, " ... ", voice().audio)
    tasks = [task("Hi.", "rate", prompt=low_rate), task("Hi.", "long", prompt=long)]
    outcomes = engine.synthesize([*tasks, task("Hi.", "empty", prompt=no_transcript), task("Fine.", "ok")])
    for outcome in outcomes[:3]:
        assert isinstance(outcome, TaskFailure)
        assert (outcome.kind, outcome.code) == (FailureKind.INVALID, "VOICE_INVALID")
    audio(outcomes[3])


def test_text_in_another_script_goes_cross_lingual(engine: CosyVoiceEngine) -> None:
    with calls_to(engine.model, "inference_cross_lingual") as calls:
        result = audio(engine.synthesize([task("你好，欢迎使用语音合成服务。", "zh")])[0])
    (call,) = calls
    assert call["zero_shot_spk_id"] and call["prompt_wav"] == ""
    assert call["tts_text"].startswith(V3_PREFIX) is (engine.family == "cosyvoice3")
    tokens = len(engine.model.frontend.tokenizer.encode(call["tts_text"]))
    assert len(result.samples) == MAX_TOKEN_TEXT_RATIO * tokens * SAMPLES_PER_TOKEN


def test_a_style_instruction_runs_instruct2_from_the_prompt_file(engine: CosyVoiceEngine) -> None:
    seen_files: list[bool] = []
    model = engine.model
    original = model.frontend.frontend_instruct2

    def frontend_instruct2(*args: Any) -> Any:  # the prompt file must exist while it is read
        seen_files.append(Path(args[2]).is_file())
        return original(*args)

    model.frontend.frontend_instruct2 = frontend_instruct2
    try:
        with calls_to(model, "inference_instruct2") as calls:
            outcome = engine.synthesize([task("Say it cheerfully.", "i", style_instruction="cheerfully")])[0]
    finally:
        del model.frontend.frontend_instruct2
    audio(outcome)
    (call,) = calls
    assert call["zero_shot_spk_id"] == ""  # never the cached speaker (upstream #1400)
    assert call["instruct_text"].endswith("<|endofprompt|>")
    assert call["instruct_text"].startswith("You are a helpful assistant.") is (engine.family == "cosyvoice3")
    assert seen_files == [True]


def test_long_text_is_split_and_every_segment_is_spoken(request: pytest.FixtureRequest) -> None:
    engine = CosyVoiceEngine(model_dir(request, "cosyvoice3"), segment_units=4)
    engine.load()
    text = "One two three. Four five six. Seven eight nine."
    with calls_to(engine.model, "inference_zero_shot") as calls:
        result = audio(engine.synthesize([task(text)])[0])
    segments = [call["tts_text"] for call in calls]
    assert segments == ["One two three.", "Four five six.", "Seven eight nine."]
    tokens = sum(text_tokens(engine, segment) for segment in segments)
    assert len(result.samples) == MAX_TOKEN_TEXT_RATIO * tokens * SAMPLES_PER_TOKEN
    engine.close()


def test_text_with_nothing_to_speak_fails_only_its_own_task(engine: CosyVoiceEngine) -> None:
    outcomes = engine.synthesize(
        [task("※ † ‡", "symbols"), task("<|endofprompt|><|im_start|>", "tokens"), task("Fine.", "ok")]
    )
    for outcome in outcomes[:2]:
        assert isinstance(outcome, TaskFailure)
        assert outcome.kind is FailureKind.INVALID and outcome.code == "INVALID_REQUEST"
    audio(outcomes[2])


def test_warm_up_leaves_no_speaker_behind(engine: CosyVoiceEngine) -> None:
    before = set(engine.model.frontend.spk2info)
    engine.warm_up()
    assert set(engine.model.frontend.spk2info) == before


# --------------------------------------------------------------------- text normalisation --


@pytest.fixture(scope="module")
def basic_engine(request: pytest.FixtureRequest) -> Iterator[CosyVoiceEngine]:
    loaded = CosyVoiceEngine(
        model_dir(request, "cosyvoice3"), options=CosyVoiceOptions(text_frontend="basic")
    )
    loaded.load()
    yield loaded
    loaded.close()


def test_wetext_normalises_chinese_and_english(engine: CosyVoiceEngine) -> None:
    normalize = engine.model.frontend.text_normalize
    assert normalize("2024年3月5日，气温25.5度", split=False).startswith("二零二四年三月五日")
    assert "five dollars" in normalize("It costs $5 today.", split=False)


def test_basic_keeps_to_cosyvoices_own_rules(basic_engine: CosyVoiceEngine) -> None:
    assert basic_engine.text_frontend == "basic"
    normalize = basic_engine.model.frontend.text_normalize
    assert "2024" in normalize("2024年3月5日，气温25.5度", split=False)  # no Chinese number rules
    english = normalize("It costs $5 today.", split=False)
    assert "five" in english and "dollars" not in english  # inflect spells the digit only
    assert not hasattr(basic_engine.model.frontend, "zh_tn_model")  # the library chose nothing


def test_a_normaliser_that_is_not_installed_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(EngineLoadError, match="ttsfrd is not installed"):
        cosyvoice_textnorm.resolve("ttsfrd", tmp_path)
    with pytest.raises(EngineLoadError, match="one of auto, wetext, ttsfrd, basic"):
        cosyvoice_textnorm.resolve("icu", None)


# ------------------------------------------------------------------ broken model directories --

REQUIRED = (
    "cosyvoice3.yaml",
    "llm.pt",
    "flow.pt",
    "hift.pt",
    "campplus.onnx",
    "speech_tokenizer_v3.onnx",
    "CosyVoice-BlankEN/config.json",
    "CosyVoice-BlankEN/model.safetensors",
)
CORRUPTIBLE = (*REQUIRED, "CosyVoice-BlankEN/tokenizer.json")


def broken_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize("name", REQUIRED)
def test_a_missing_file_is_refused_at_load_by_name(
    request: pytest.FixtureRequest, tmp_path: Path, name: str
) -> None:
    directory = broken_copy(model_dir(request, "cosyvoice3"), tmp_path / "model")
    (directory / name).unlink()
    with pytest.raises(EngineLoadError) as refused:
        CosyVoiceEngine(directory).load()
    assert name in str(refused.value)


@pytest.mark.parametrize("name", CORRUPTIBLE)
def test_a_corrupt_file_is_refused_at_load_by_name(
    request: pytest.FixtureRequest, tmp_path: Path, name: str
) -> None:
    directory = broken_copy(model_dir(request, "cosyvoice3"), tmp_path / "model")
    data = (directory / name).read_bytes()
    (directory / name).write_bytes(data[: len(data) // 2])  # a copy cut short
    with pytest.raises(EngineLoadError) as refused:
        CosyVoiceEngine(directory).load()
    assert name in str(refused.value)
