"""The batched CosyVoice path against the official one, on the real library and the tiny
random-weight models of both families.

With sampling made deterministic (the model's sampling function replaced by a greedy one, on
both paths alike), every request must get the same speech tokens from the batched path as from
the official API called one request at a time, and the same audio:

* CosyVoice 3: within 1e-5 everywhere but the last 2 ms, where the vocoder's end-of-signal
  STFT padding sees the batch's padding instead of its own (a difference of at most 0.02 there,
  only for a sequence vocoded beside a longer one);
* CosyVoice 2: within 1e-5, when the vocoder's random source is seeded alike (the official path
  draws from torch's global generator; the batched one seeds each sequence from its request).

Both paths are held to 4 speech tokens per text token (CosyVoice's own ratio bounds, which the
random weights always reach), so the tests stay short.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from consumer.engine import (
    AudioBuffer,
    EngineBatchFailed,
    EngineOutOfMemory,
    SynthesisTask,
    TaskOutcome,
)
from consumer.engines.cosyvoice import CosyVoiceEngine
from consumer.engines.cosyvoice_batched.engine import BatchedCosyVoiceEngine, BatchingOptions, segment_seed
from consumer.engines.cosyvoice_faults import AcceleratorFailed
from tests.support.cosyvoice_models import prompt_voice

FAMILIES = ("cosyvoice3", "cosyvoice2")
RATIO = 4.0  # speech tokens per text token, both paths
SAMPLES_PER_TOKEN = 960
TAIL = 48  # 2 ms at 24 kHz
LONG_TEXT = " ".join(
    [
        "This text is long enough to be cut in two before it reaches the model.",
        "Every part of it must still be spoken, in order, and nothing may be lost.",
        "The engine splits it at a sentence boundary near eighty words,",
        "so that one pass of the language model stays a sane length.",
        "Here are a few more words to make sure the split really happens today,",
        "and then a last sentence closes the paragraph for good.",
        "One more sentence pushes the word count past the limit of a single segment, for sure.",
    ]
)


def greedy(weighted_scores: torch.Tensor, decoded_tokens: list[int], sampling: int) -> int:
    """Deterministic sampling with the signature of CosyVoice's sampling functions."""
    return int(weighted_scores.argmax())


@dataclass
class Pair:
    family: str
    official: CosyVoiceEngine
    batched: BatchedCosyVoiceEngine
    library_sampling: Callable[..., int]
    official_tokens: list[list[int]] = field(default_factory=list)
    batched_tokens: dict[int, list[int]] = field(default_factory=dict)  # by segment seed

    def official_run(self, task: SynthesisTask) -> tuple[TaskOutcome, list[list[int]]]:
        """The official path on one task, its vocoder's generator seeded as the batched path
        seeds the task's first segment."""
        self.official_tokens.clear()
        torch.manual_seed(segment_seed(task.key, 0))
        (outcome,) = self.official.synthesize([task])
        return outcome, list(self.official_tokens)

    def batched_tokens_of(self, task: SynthesisTask) -> list[list[int]]:
        tokens = []
        for index in range(64):
            seed = segment_seed(task.key, index)
            if seed not in self.batched_tokens:
                break
            tokens.append(self.batched_tokens[seed])
        return tokens


def _record_official_tokens(pair: Pair) -> None:
    model = pair.official.model.model
    original = model.token2wav

    def token2wav(**kwargs: Any) -> Any:
        pair.official_tokens.append(kwargs["token"].flatten().tolist())
        return original(**kwargs)

    model.token2wav = token2wav


def _record_batched_tokens(pair: Pair) -> None:
    scheduler = pair.batched.scheduler
    assert scheduler is not None
    vocoder = scheduler._vocoder
    original = vocoder.run

    def run(items: Any) -> Any:
        for item in items:
            pair.batched_tokens[item.seed] = list(item.tokens)
        return original(items)

    vocoder.run = run  # type: ignore[method-assign]


def _hold_to_ratio(engine: CosyVoiceEngine) -> None:
    llm = engine.model.model.llm
    llm.inference = functools.partial(llm.inference, max_token_text_ratio=RATIO, min_token_text_ratio=2.0)


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    model_dir = Path(request.getfixturevalue(f"{request.param}_tiny"))
    official = CosyVoiceEngine(model_dir)
    batched = BatchedCosyVoiceEngine(
        model_dir, batching=BatchingOptions(max_sequences=8, max_token_text_ratio=RATIO)
    )
    official.load()
    batched.load()
    library_sampling = batched.model.model.llm.sampling  # ras_sampling, as the yaml names it
    for engine in (official, batched):
        engine.model.model.llm.sampling = greedy
    _hold_to_ratio(official)
    made = Pair(request.param, official, batched, library_sampling)
    _record_official_tokens(made)
    _record_batched_tokens(made)
    yield made
    batched.close()
    official.close()


def audio(outcome: object) -> AudioBuffer:
    assert isinstance(outcome, AudioBuffer), outcome
    return outcome


def assert_same_audio(
    official: AudioBuffer, batched: AudioBuffer, *, exact_to_the_end: bool, segment_ends: Sequence[int] = ()
) -> None:
    """Equal within float rounding, except (unless `exact_to_the_end`) the last TAIL samples of
    each segment (`segment_ends`: where each but the last ends in the task's audio)."""
    assert len(official.samples) == len(batched.samples)
    difference = np.abs(official.samples - batched.samples)
    body = difference.copy()
    if not exact_to_the_end:
        for end in (*segment_ends, len(body)):
            body[max(0, end - TAIL) : end] = 0.0
    assert body.max(initial=0.0) <= 1e-5, f"differs by {body.max()} at sample {body.argmax()}"
    assert difference.max(initial=0.0) <= 0.02


def segment_ends(tokens: list[list[int]], speed: float) -> list[int]:
    """Where each segment's audio ends (the last excluded): 2 mel frames a token, stretched by
    the speed change, 480 samples a frame."""
    lengths = [int(2 * len(t) / speed) * 480 for t in tokens]
    return list(itertools.accumulate(lengths))[:-1]


def mixed_tasks() -> list[SynthesisTask]:
    return [
        SynthesisTask(key="short", text="Hello there.", prompt=prompt_voice(seed=0)),
        SynthesisTask(
            key="faster",
            text="The quick brown fox jumps over the lazy dog.",
            prompt=prompt_voice(seed=1),
            speed=1.25,
        ),
        SynthesisTask(
            key="zh",
            text="今天的天气非常好，我们一起去公园散步吧。",
            language="zh",
            prompt=prompt_voice(seed=0),
        ),
        SynthesisTask(
            key="instruct",
            text="Please read this line with a smile.",
            style_instruction="cheerful and warm",
            prompt=prompt_voice(seed=2),
        ),
        SynthesisTask(key="long", text=LONG_TEXT, prompt=prompt_voice(seed=1)),
    ]


# ---------------------------------------------------------------------------- equivalence --


def test_every_request_gets_the_official_tokens_and_audio(pair: Pair) -> None:
    tasks = mixed_tasks()
    batched = pair.batched.synthesize(tasks)
    assert pair.batched.scheduler is not None and pair.batched.scheduler.stats.peak_active > 1, (
        "decoded together"
    )
    for task, outcome in zip(tasks, batched, strict=True):
        official, official_tokens = pair.official_run(task)
        tokens = pair.batched_tokens_of(task)
        assert tokens == official_tokens, f"{task.key}: the speech tokens differ"
        if task.key == "long":
            assert len(tokens) >= 2, "the long text was spoken in several segments"
        single_segment = len(tokens) == 1
        if pair.family == "cosyvoice3" or single_segment:
            assert_same_audio(
                audio(official),
                audio(outcome),
                exact_to_the_end=pair.family == "cosyvoice2",
                segment_ends=segment_ends(tokens, task.speed),
            )
        else:  # CosyVoice 2's official vocoder draws its noise segment after segment
            assert len(audio(official).samples) == len(audio(outcome).samples)


def test_generation_length_follows_the_token_text_ratio(pair: Pair) -> None:
    """The random weights never stop by themselves: each sequence ends at RATIO tokens per text
    token, the bound benchmarks use to force a realistic length."""
    task = SynthesisTask(
        key="ratio", text="Counting the tokens of this sentence.", prompt=prompt_voice(seed=0)
    )
    (outcome,) = pair.batched.synthesize([task])
    frontend = pair.batched.model.frontend
    text_tokens = sum(
        len(frontend.tokenizer.encode(piece, allowed_special=frontend.allowed_special))
        for piece in frontend.text_normalize(task.text, split=True)
    )
    assert len(audio(outcome).samples) == int(text_tokens * RATIO) * SAMPLES_PER_TOKEN


def test_a_request_that_ends_early_leaves_the_batch_while_the_others_go_on(pair: Pair) -> None:
    """A real stop token: the end-of-speech row of `llm_decoder` is made to win wherever one
    token of the first request's greedy output would, on both models; that request stops at
    its own step, the longer ones keep decoding, and the tokens still agree."""
    tasks = [
        SynthesisTask(key="early", text="Stop me early, please.", prompt=prompt_voice(seed=0)),
        SynthesisTask(
            key="later",
            text="A much longer sentence that goes on and on for a while.",
            prompt=prompt_voice(seed=1),
        ),
        SynthesisTask(
            key="other", text="Another sentence of a middling length here.", prompt=prompt_voice(seed=2)
        ),
    ]
    _, (first,) = pair.official_run(tasks[0])
    stop_at = first[(len(first) * 3) // 4]  # past min_len: where the official loop may stop
    with stopping_on(pair, stop_at):
        outcomes = pair.batched.synthesize(tasks)
        official = [pair.official_run(task) for task in tasks]
    for task, outcome, (official_outcome, official_tokens) in zip(tasks, outcomes, official, strict=True):
        assert pair.batched_tokens_of(task) == official_tokens, f"{task.key}: the speech tokens differ"
        assert len(audio(outcome).samples) == len(audio(official_outcome).samples)
    (early,) = pair.batched_tokens_of(tasks[0])
    (later,) = pair.batched_tokens_of(tasks[1])
    assert len(early) < len(first), "the first request stopped on the end-of-speech token"
    assert len(later) > len(early), "the others decoded on after it left the batch"


@contextmanager
def stopping_on(pair: Pair, token: int) -> Iterator[None]:
    saved = []
    for engine in (pair.official, pair.batched):
        llm = engine.model.model.llm
        decoder, eos = llm.llm_decoder, llm.eos_token
        saved.append(
            (
                decoder,
                eos,
                decoder.weight[eos].clone(),
                None if decoder.bias is None else decoder.bias[eos].clone(),
            )
        )
        with torch.no_grad():
            decoder.weight[eos] = decoder.weight[token] * 1.001
            if decoder.bias is not None:
                decoder.bias[eos] = decoder.bias[token] + 1e-3
    try:
        yield
    finally:
        with torch.no_grad():
            for decoder, eos, weight, bias in saved:
                decoder.weight[eos] = weight
                if bias is not None:
                    decoder.bias[eos] = bias


def test_requests_that_join_mid_decode_get_what_they_get_alone(pair: Pair) -> None:
    """CosyVoice's own sampling (repetition-aware, random): each sequence draws from a generator
    seeded from its request, so a request's audio does not depend on what it was batched with or
    when it joined."""
    llm = pair.batched.model.model.llm
    scheduler = pair.batched.scheduler
    assert scheduler is not None
    tasks = [
        SynthesisTask(key=f"join-{i}", text=text, prompt=prompt_voice(seed=i % 3))
        for i, text in enumerate(
            [
                "One more thing.",
                "The rain in Spain stays mainly in the plain.",
                "Good morning to you all.",
                "Numbers, letters and words.",
                "A second wave of requests arrives now.",
                "Last one in.",
            ]
        )
    ]
    llm.sampling = pair.library_sampling
    try:
        alone = [audio(pair.batched.synthesize([task])[0]) for task in tasks]
        steps = scheduler.stats.steps
        first = pair.batched.submit(tasks[:3])
        wait_until(lambda: scheduler.stats.steps >= steps + 3, "the first requests to be decoding")
        later = pair.batched.submit(tasks[3:])
        together = [audio(future.result(timeout=300)) for future in [*first, *later]]
    finally:
        llm.sampling = greedy
    for task, one, crowd in zip(tasks, alone, together, strict=True):
        assert len(one.samples) == len(crowd.samples), task.key
        assert_same_audio(one, crowd, exact_to_the_end=pair.family == "cosyvoice2")


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    done = threading.Event()
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        done.wait(0.01)


# ------------------------------------------------------------------------------- failures --


@pytest.fixture
def engine(cosyvoice3_tiny: Path) -> Iterator[BatchedCosyVoiceEngine]:
    loaded = BatchedCosyVoiceEngine(
        cosyvoice3_tiny, batching=BatchingOptions(max_sequences=4, max_token_text_ratio=RATIO)
    )
    loaded.load()
    yield loaded
    loaded.close()


def tasks_for(prefix: str, count: int) -> list[SynthesisTask]:
    return [
        SynthesisTask(
            key=f"{prefix}-{i}", text=f"Sentence number {i} of this batch.", prompt=prompt_voice(seed=i % 2)
        )
        for i in range(count)
    ]


def fail_a_decoding_step(engine: BatchedCosyVoiceEngine, error: Exception) -> None:
    """The third backbone call from now raises `error`: a step with every sequence inside."""
    decoder = engine.decoder
    assert decoder is not None
    original, calls = decoder._forward, itertools.count()

    def forward(*args: Any) -> Any:
        if next(calls) == 2:
            raise error
        return original(*args)

    decoder._forward = forward  # type: ignore[method-assign]


def test_out_of_memory_in_a_step_fails_its_sequences_and_shrinks_the_budget(
    engine: BatchedCosyVoiceEngine,
) -> None:
    scheduler = engine.scheduler
    assert scheduler is not None
    fail_a_decoding_step(
        engine, torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    )
    futures = engine.submit(tasks_for("oom", 3))
    for future in futures:
        with pytest.raises(EngineOutOfMemory):
            future.result(timeout=120)
    assert scheduler._token_budget < scheduler.limits.max_tokens, "the next batch reserves less"
    (outcome,) = engine.synthesize(tasks_for("after-oom", 1))
    audio(outcome)


def test_a_failed_step_sends_its_sequences_back_to_run_alone(engine: BatchedCosyVoiceEngine) -> None:
    fail_a_decoding_step(engine, RuntimeError("an error no sequence can be blamed for"))
    for future in engine.submit(tasks_for("batch-failed", 3)):
        with pytest.raises(EngineBatchFailed):
            future.result(timeout=120)
    audio(engine.synthesize(tasks_for("after-failure", 1))[0])


def test_a_broken_gpu_fails_everything_and_takes_nothing_more(engine: BatchedCosyVoiceEngine) -> None:
    fail_a_decoding_step(engine, RuntimeError("CUDA error: an illegal memory access was encountered"))
    for future in engine.submit(tasks_for("broken", 3)):
        with pytest.raises(AcceleratorFailed):
            future.result(timeout=120)
    with pytest.raises(AcceleratorFailed, match="must restart"):
        engine.submit(tasks_for("refused", 1))


def test_room_is_what_the_scheduler_can_start(engine: BatchedCosyVoiceEngine) -> None:
    scheduler = engine.scheduler
    assert scheduler is not None
    assert engine.room().max_items == engine.limits.max_items == 4
    futures = engine.submit(tasks_for("room", 6))
    assert engine.room().max_items == 0, "six sequences pending for four places"
    for future in futures:
        audio(future.result(timeout=300))
    assert scheduler.stats.peak_active == 4, "never more than max_sequences decoding at once"
    assert engine.room().max_items == 4
