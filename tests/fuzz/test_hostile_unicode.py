"""Text that is cheap to send and expensive to normalise must be refused cheaply.

Unicode normalisation (NFC) puts runs of combining marks into canonical order with an insertion
sort: quadratic in the run's length. One 800 kB request of alternating combining marks took
minutes to validate -- on the worker's poll loop, where it stalled the loop until the liveness
probe restarted the pod, which then took the same message again. Nothing about it ever reached
the engine, so crash-loop detection could not catch it.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from schemas.model import ErrorCode, PresetVoice, PromptAudioVoice, SynthesisRequest
from schemas.validation import RequestLimits, request_problems

BASE = SynthesisRequest("hostile-1", "Hello there.", PresetVoice("en-us"), 1_700_000_000_000)
# Combining classes 220 and 230 alternating in the "wrong" order: every pair gets reordered.
ZALGO_RUN = "\u0316\u0301"


def _with(field: str, value: str) -> SynthesisRequest:
    if field == "text":
        return replace(BASE, text=value)
    if field == "style_instruction":
        return replace(BASE, style_instruction=value)
    return replace(BASE, voice=PromptAudioVoice("s3://tts-voices/prompts/a.wav", value))


def _timed_problems(request: SynthesisRequest) -> tuple[float, list[str]]:
    request_problems(replace(BASE, text="déjà vu"), RequestLimits())  # builds the lazy tables
    started = time.perf_counter()
    problems = request_problems(request, RequestLimits())
    return time.perf_counter() - started, [p.code for p in problems]


@pytest.mark.parametrize("field", ["text", "style_instruction", "voice.transcript"])
def test_a_huge_run_of_combining_marks_is_refused_in_milliseconds(field: str) -> None:
    hostile = "a" + ZALGO_RUN * 200_000  # ~800 kB of UTF-8: fits in one Kafka message
    elapsed, codes = _timed_problems(_with(field, hostile))
    assert elapsed < 0.2, f"validation took {elapsed:.2f}s"
    expected = ErrorCode.TEXT_TOO_LONG if field == "text" else ErrorCode.INVALID_REQUEST
    assert codes == [expected]


@pytest.mark.parametrize("field", ["text", "style_instruction", "voice.transcript"])
def test_zalgo_inside_the_length_limit_is_invalid(field: str) -> None:
    hostile = "Hello " + "a" + ZALGO_RUN * 200  # 400 marks on one letter: short, still absurd
    elapsed, codes = _timed_problems(_with(field, hostile))
    assert elapsed < 0.05
    assert codes == [ErrorCode.INVALID_REQUEST]


def test_real_combining_text_is_fine() -> None:
    # Vietnamese stacks two marks on a vowel; Devanagari and Thai use several in a row.
    for text in ("Tiếng Việt có dấu: ệ ậ ở", "नमस्ते दुनिया", "ภาษาไทย ที่นี่", "e\u0301\u0323\u0302"):
        assert request_problems(replace(BASE, text=text), RequestLimits()) == []


def test_a_long_text_of_mostly_whitespace_is_judged_after_normalisation() -> None:
    # The limit counts characters after normalisation; padding collapses, so this is valid...
    assert request_problems(replace(BASE, text="word " + " " * 6000 + "word"), RequestLimits()) == []
    # ... up to the cap on raw length (four times the limit), past which nothing is normalised.
    elapsed, codes = _timed_problems(replace(BASE, text="word" + " " * 30_000))
    assert codes == [ErrorCode.TEXT_TOO_LONG]
    assert elapsed < 0.05
