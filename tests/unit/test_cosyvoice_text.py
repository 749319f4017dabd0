"""Prompt formats, control-token stripping, splitting and script detection of the cosyvoice engine."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.engines.cosyvoice_text import (
    SEGMENT_UNITS,
    cross_lingual_text,
    instruct_text,
    is_cross_lingual,
    script_of,
    split_text,
    strip_special_tokens,
    units,
    zero_shot_prompt_text,
)


def test_prompt_formats_of_both_families() -> None:
    assert zero_shot_prompt_text("你好。", v3=True) == "You are a helpful assistant.<|endofprompt|>你好。"
    assert zero_shot_prompt_text("你好。", v3=False) == "你好。"
    assert (
        instruct_text("请用广东话表达。", v3=True)
        == "You are a helpful assistant. 请用广东话表达。<|endofprompt|>"
    )
    assert instruct_text("用四川话说这句话", v3=False) == "用四川话说这句话<|endofprompt|>"
    assert cross_lingual_text("Hello.", v3=True) == "You are a helpful assistant.<|endofprompt|>Hello."
    assert cross_lingual_text("Hello.", v3=False) == "Hello."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain [breath] text <strong>loud</strong>", "plain [breath] text <strong>loud</strong>"),
        ("a<|endofprompt|>b", "ab"),
        ("<|zh|>你好<|en|>hi", "你好hi"),
        ("odd <| fragments |> stay readable", "odd < fragments > stay readable"),
    ],
)
def test_control_tokens_are_removed(text: str, expected: str) -> None:
    assert strip_special_tokens(text) == expected


@given(st.text(alphabet=st.sampled_from(list("<|>ab ")), max_size=40))
def test_no_control_token_survives_stripping(text: str) -> None:
    stripped = strip_special_tokens(text)
    assert "<|" not in stripped
    assert "|>" not in stripped


def test_units_count_cjk_characters_and_words() -> None:
    assert units("Hello big world") == 3
    assert units("你好世界") == 4
    assert units("我爱 Python 编程") == 5


def test_short_text_is_one_segment() -> None:
    assert split_text("Hello there. How are you?") == ["Hello there. How are you?"]


def test_chinese_splits_at_sentence_marks_and_packs_to_the_budget() -> None:
    sentence = "今天天气很好，我们去公园散步吧。"  # 15 CJK units + punctuation
    segments = split_text(sentence * 12, budget=40)
    assert all(units(s) <= 40 for s in segments)
    assert "".join(segments) == sentence * 12
    assert all(s.endswith("。") for s in segments)


def test_a_sentence_over_budget_splits_at_clauses_then_spaces() -> None:
    clause = "one two three four five six, "
    segments = split_text((clause * 6).strip(), budget=10)
    assert all(units(s) <= 10 for s in segments)
    assert " ".join(segments).split() == (clause * 6).split()
    unbroken = "word " * 25
    assert all(units(s) <= 10 for s in split_text(unbroken, budget=10))
    cjk = "字" * 95
    assert [len(s) for s in split_text(cjk, budget=40)] == [40, 40, 15]


def test_punctuation_only_segments_are_dropped() -> None:
    assert split_text("... !!! ???") == []
    assert split_text("Hi. ... Bye.") == ["Hi. ... Bye."]


@given(st.text(alphabet=st.sampled_from(list("ab 字。., !?\n")), max_size=400))
def test_splitting_keeps_every_letter_in_order_within_budget(text: str) -> None:
    segments = split_text(text, budget=12)
    assert all(units(s) <= 12 for s in segments)
    letters = [ch for ch in text if ch in "ab字"]
    assert [ch for ch in "".join(segments) if ch in "ab字"] == letters


def test_default_budget_matches_the_frontend() -> None:
    assert 60 <= SEGMENT_UNITS <= 80


@pytest.mark.parametrize(
    ("text", "script"),
    [
        ("Hello world", "latin"),
        ("Grüße aus Köln", "latin"),
        ("你好，世界", "han"),
        ("こんにちは世界", "kana"),
        ("안녕하세요", "hangul"),
        ("Привет, мир", "cyrillic"),
        ("12345 !?", None),
    ],
)
def test_script_detection(text: str, script: str | None) -> None:
    assert script_of(text) == script


def test_cross_lingual_decision() -> None:
    assert is_cross_lingual("Good morning", None, "你好，我是小明。")
    assert not is_cross_lingual("你好", None, "你好，我是小明。")
    assert not is_cross_lingual("Guten Morgen", "de", "Hello, I am Sam.")  # same script: zero-shot
    assert is_cross_lingual("ohayou", "ja", "Hello, I am Sam.")  # the language says Japanese
    assert not is_cross_lingual("12 34", None, "Hello.")  # nothing to judge by


def test_numbers_and_ellipses_are_not_split() -> None:
    text = "Pi is 3.14 and a thousand is 1,000... Really? Yes."
    segments = split_text(text, budget=6)
    assert "3.14" in " ".join(segments)
    assert "1,000..." in " ".join(segments)
    assert " ".join(segments) == text
