"""The cosyvoice engine against a double of CosyVoice's API, kept only for what the real library
cannot be made to do on a CPU test machine: CUDA-only options (fp16, JIT, TensorRT, vLLM and
its threads), CUDA out-of-memory and a broken CUDA context, injected model exceptions, a model
that rejects a prompt, and SFT preset speakers (CosyVoice 2/3 ship none). Everything else --
loading, registration, modes, prompt formats, splitting, the speaker cache, warm-up, broken
model directories -- runs against the real library in tests/integration/test_cosyvoice_real.py."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from consumer.engine import (
    AudioBuffer,
    ContinuousEngine,
    Engine,
    EngineError,
    EngineLoadError,
    EngineOutOfMemory,
    FailureKind,
    PromptAudio,
    SynthesisTask,
    TaskFailure,
)
from consumer.engines.cosyvoice import (
    AcceleratorFailed,
    CosyVoiceEngine,
    CosyVoiceOptions,
    create_engine,
    import_automodel,
)
from consumer.errors import FatalError
from consumer.settings import WorkerSettings
from tests.unit.cosyvoice_double import SAMPLES_PER_CHAR, FakeAutoModel, make_model_dir

V3_PREFIX = "You are a helpful assistant.<|endofprompt|>"


def prompt(
    transcript: str = "Hello there, this is my voice.", *, seed: int = 0, seconds: float = 3.0
) -> PromptAudio:
    rng = np.random.default_rng(seed)
    samples = (0.1 * rng.standard_normal(int(24_000 * seconds))).astype(np.float32)
    return PromptAudio(content_id=f"{seed:064x}", transcript=transcript, audio=AudioBuffer(samples, 24_000))


def task(text: str = "Good morning.", key: str = "k1", **kwargs: object) -> SynthesisTask:
    kwargs.setdefault("prompt", prompt())
    return SynthesisTask(key=key, text=text, **kwargs)  # type: ignore[arg-type]


def loaded(
    tmp_path: Path, family: str = "cosyvoice3", **options: object
) -> tuple[CosyVoiceEngine, FakeAutoModel]:
    factory = FakeAutoModel()
    options.setdefault("text_frontend", "basic")  # the double has no real frontend to normalise
    engine = CosyVoiceEngine(
        make_model_dir(tmp_path, family),
        options=CosyVoiceOptions(**options),  # type: ignore[arg-type]
        model_factory=factory,
    )
    engine.load()
    return engine, factory


# ------------------------------------------------------------------------------- loading --


def test_loads_v3_through_automodel_with_keywords_only_and_no_load_jit(tmp_path: Path) -> None:
    engine, factory = loaded(
        tmp_path, "cosyvoice3", fp16=True, load_trt=False, trt_concurrent=3, load_jit=True
    )
    assert factory.kwargs == [
        {
            "model_dir": str(tmp_path / "cosyvoice3"),
            "load_trt": False,
            "load_vllm": False,
            "fp16": True,
            "trt_concurrent": 3,
        }
    ]
    assert isinstance(engine, Engine)
    assert engine.family == "cosyvoice3"
    assert engine.sample_rate_hz == 24_000
    caps = engine.capabilities
    assert caps.cloning and caps.instruct and caps.cross_lingual
    assert caps.presets == frozenset()
    assert caps.supports_language("de-DE") and caps.supports_language("zh")
    assert engine.model_version.startswith("cosyvoice3-") and engine.model_version.endswith("-fp16")


def test_loads_v2_with_load_jit_passed_through(tmp_path: Path) -> None:
    make_model_dir(tmp_path, "cosyvoice2", extra=("flow.encoder.fp32.zip",))
    engine, factory = loaded(tmp_path, "cosyvoice2", load_jit=True)
    assert factory.kwargs[0]["load_jit"] is True
    assert factory.model.init_kwargs["load_jit"] is True
    assert engine.family == "cosyvoice2"
    assert not engine.capabilities.supports_language("de")


def test_model_version_follows_the_weights_and_can_be_overridden(tmp_path: Path) -> None:
    directory = make_model_dir(tmp_path)
    first = CosyVoiceEngine(directory).model_version
    assert CosyVoiceEngine(directory).model_version == first
    (directory / "llm.pt").write_bytes(b"\0" * 17)  # another checkpoint
    assert CosyVoiceEngine(directory).model_version != first
    assert CosyVoiceEngine(directory, model_version="release-7").model_version == "release-7"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("none", "set TTS_MODEL_DIR"),
        ("missing", "never downloads models"),
        ("v1", "CosyVoice 1"),
        ("empty", "neither cosyvoice3.yaml nor cosyvoice2.yaml"),
        ("no-weights", "lacks flow.pt"),
        ("trt-read-only", "read-only"),
    ],
)
def test_load_refuses_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup: str, message: str
) -> None:
    options = CosyVoiceOptions()
    model_dir: Path | None = tmp_path / "model"
    assert model_dir is not None
    if setup == "none":
        model_dir = None
    elif setup == "v1":
        model_dir.mkdir()
        (model_dir / "cosyvoice.yaml").write_text("")
    elif setup == "empty":
        model_dir.mkdir()
    elif setup == "no-weights":
        model_dir = make_model_dir(tmp_path)
        (model_dir / "flow.pt").unlink()
    elif setup == "trt-read-only":
        model_dir = make_model_dir(tmp_path, extra=("flow.decoder.estimator.fp32.onnx",))
        options = CosyVoiceOptions(load_trt=True)
        # A read-only volume (chmod does not stop root, so ask the engine's own check).
        monkeypatch.setattr("consumer.engines.cosyvoice_model.os.access", lambda *_: False)
    factory = FakeAutoModel()
    with pytest.raises(EngineLoadError, match=message):
        CosyVoiceEngine(model_dir, options=options, model_factory=factory).load()
    assert factory.kwargs == []  # refused before spending minutes loading


def test_a_failing_or_out_of_memory_load_is_an_engine_load_error(tmp_path: Path) -> None:
    def broken(**_: object) -> object:
        raise RuntimeError("yaml: unknown tag")

    def oom(**_: object) -> object:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    directory = make_model_dir(tmp_path)
    with pytest.raises(EngineLoadError, match="unknown tag"):
        CosyVoiceEngine(directory, model_factory=broken).load()
    with pytest.raises(EngineLoadError, match="out of GPU memory"):
        CosyVoiceEngine(directory, model_factory=oom).load()


def test_create_engine_maps_the_settings(tmp_path: Path) -> None:
    settings = WorkerSettings(
        engine="cosyvoice",
        model_dir=make_model_dir(tmp_path),
        cosyvoice_fp16=True,
        cosyvoice_load_vllm=True,
        cosyvoice_trt_concurrent=4,
    )
    engine = create_engine(settings)
    assert type(engine) is CosyVoiceEngine, "vLLM batches the LLM itself: the official path"
    assert engine.limits.max_items == 4  # vLLM batches the decoding of concurrent requests
    assert engine._options.text_frontend == "auto"
    official = create_engine(WorkerSettings(engine="cosyvoice", cosyvoice_batching="off"))
    assert type(official) is CosyVoiceEngine and official.limits.max_items == 1
    batched = create_engine(WorkerSettings(engine="cosyvoice", cosyvoice_batch_max_sequences=8))
    assert isinstance(batched, ContinuousEngine), "batching is on by default"
    assert batched.limits.max_items == 8


def test_a_missing_cosyvoice_package_is_a_load_error_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_import = importlib.import_module

    def absent(name: str) -> object:
        if name.startswith("cosyvoice"):
            raise ModuleNotFoundError("No module named 'cosyvoice'", name="cosyvoice")
        return real_import(name)

    monkeypatch.setattr("consumer.engines.cosyvoice_model.importlib.import_module", absent)
    monkeypatch.setattr(importlib.util, "find_spec", lambda _: None)
    with pytest.raises(EngineLoadError, match=r"CosyVoice source tree .* on PYTHONPATH") as caught:
        import_automodel()
    assert "make cosyvoice" in str(caught.value)
    assert isinstance(caught.value.__cause__, ImportError)


# --------------------------------------------------------------------- request -> calls --


def test_presets_only_when_the_model_has_sft_speakers(tmp_path: Path) -> None:
    engine, _ = loaded(tmp_path)
    (missing,) = engine.synthesize([task(prompt=None, preset="中文女")])
    assert isinstance(missing, TaskFailure)
    assert (missing.kind, missing.code) == (FailureKind.INVALID, "VOICE_NOT_FOUND")

    factory2 = FakeAutoModel()
    directory = make_model_dir(tmp_path / "sft")
    engine2 = CosyVoiceEngine(directory, model_factory=factory2)
    original = FakeAutoModel.__call__

    def with_speaker(self: FakeAutoModel, **kwargs: object) -> object:
        model = original(self, **kwargs)
        model.frontend.spk2info["narrator"] = {"prompt_text": V3_PREFIX + "x"}
        return model

    factory2.__class__ = type("SftAutoModel", (FakeAutoModel,), {"__call__": with_speaker})
    engine2.load()
    assert engine2.capabilities.presets == frozenset({"narrator"})
    (ok,) = engine2.synthesize([task(prompt=None, preset="narrator")])
    assert isinstance(ok, AudioBuffer)
    assert factory2.model.calls[0][0] == "inference_sft"
    (styled,) = engine2.synthesize([task(prompt=None, preset="narrator", style_instruction="Whisper.")])
    assert isinstance(styled, TaskFailure)
    assert styled.code == "UNSUPPORTED"


def test_a_prompt_the_model_rejects_is_voice_invalid(tmp_path: Path) -> None:
    engine, factory = loaded(tmp_path)
    factory.model.registration_failures.append(AssertionError("speech token length is zero"))
    bad, good = engine.synthesize(
        [task(key="bad", prompt=prompt(seed=1)), task(key="good", prompt=prompt(seed=2))]
    )
    assert isinstance(bad, TaskFailure)
    assert (bad.kind, bad.code) == (FailureKind.INVALID, "VOICE_INVALID")
    assert isinstance(good, AudioBuffer)


# ---------------------------------------------------------------------- error mapping --


def test_out_of_memory_raises_for_a_smaller_batch_and_keeps_finished_work(tmp_path: Path) -> None:
    engine, factory = loaded(tmp_path)
    model = factory.model
    model.failures = [None, torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")]
    tasks = [task("One.", key="a"), task("Two.", key="b"), task("Three.", key="c")]
    with pytest.raises(EngineOutOfMemory):
        engine.synthesize(tasks)
    assert [kw["tts_text"] for _, kw in model.calls] == ["One.", "Two.", "Three."]
    # The pipeline retries in smaller batches; finished work is not synthesised again.
    retried = engine.synthesize(tasks[:1]) + engine.synthesize(tasks[1:2]) + engine.synthesize(tasks[2:])
    assert all(isinstance(o, AudioBuffer) for o in retried)
    assert [kw["tts_text"] for _, kw in model.calls[3:]] == ["Two."]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (AssertionError("<|endofprompt|> not detected"), FailureKind.INVALID),
        (ValueError("bad"), FailureKind.INVALID),
        (OSError("temporary failure"), FailureKind.TRANSIENT),
        (RuntimeError("onnxruntime session failed"), FailureKind.TRANSIENT),
    ],
)
def test_model_exceptions_become_task_failures(tmp_path: Path, error: Exception, kind: FailureKind) -> None:
    engine, factory = loaded(tmp_path)
    factory.model.failures.append(error)
    failed, fine = engine.synthesize([task(key="a"), task("Fine.", key="b")])
    assert isinstance(failed, TaskFailure)
    assert failed.kind is kind
    assert "Good morning" not in failed.message  # no request text in messages
    assert isinstance(fine, AudioBuffer)


def test_a_broken_cuda_context_is_fatal(tmp_path: Path) -> None:
    engine, factory = loaded(tmp_path)
    factory.model.failures.append(RuntimeError("CUDA error: an illegal memory access was encountered"))
    with pytest.raises(AcceleratorFailed) as caught:
        engine.synthesize([task()])
    assert isinstance(caught.value, FatalError)
    calls = len(factory.model.calls)
    with pytest.raises(AcceleratorFailed, match="must restart"):
        engine.synthesize([task("Again.", key="k2")])
    assert len(factory.model.calls) == calls  # the broken context is not touched again


def test_synthesize_before_load_is_an_engine_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="not loaded"):
        CosyVoiceEngine(make_model_dir(tmp_path)).synthesize([task()])


# ---------------------------------------------------------------- speaker cache, threads --


def test_vllm_runs_a_batch_on_concurrent_threads(tmp_path: Path) -> None:
    engine, factory = loaded(tmp_path, load_vllm=True, trt_concurrent=3)
    outcomes = engine.synthesize([task(f"Sentence {i}.", key=str(i)) for i in range(6)])
    assert all(isinstance(o, AudioBuffer) for o in outcomes)
    assert [len(o.samples) for o in outcomes if isinstance(o, AudioBuffer)] == [
        SAMPLES_PER_CHAR * len(f"Sentence {i}.") for i in range(6)
    ]
    assert all(name.startswith("cosyvoice") for name in factory.model.threads)
    engine.close()


def test_warm_up_failure_stops_the_start(tmp_path: Path) -> None:
    engine, factory = loaded(tmp_path)
    factory.model.failures.append(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(EngineLoadError, match="warm-up"):
        engine.warm_up()
