"""Text handling for the CosyVoice engine: prompt formats, special tokens, splitting, scripts.

Pure functions (no torch, no model) so they are tested on their own.

* CosyVoice 3 needs its system prompt and `<|endofprompt|>` in every LLM input: the zero-shot
  prompt transcript, the instruct text, or -- in cross-lingual mode, where there is no prompt
  transcript -- the text itself. CosyVoice 2 takes the bare transcript and `<instruction><|endofprompt|>`.
* `<|...|>` sequences are the model's control tokens. Request text and instructions are user
  input, so they are removed from both; the model's inline tags ([breath], <strong>...</strong>)
  pass through.
* Whenever a text contains `<|` and `|>` the CosyVoice frontend skips normalisation and its
  own sentence splitting, so the engine always splits long texts itself first.
"""

from __future__ import annotations

import re
import unicodedata

V3_SYSTEM_PROMPT = "You are a helpful assistant."
END_OF_PROMPT = "<|endofprompt|>"

_SPECIAL_TOKEN = re.compile(r"<\|[A-Za-z0-9_.-]{1,64}\|>")
# Sentence ends (kept with their sentence), then clause boundaries for over-long sentences.
# Latin marks only count before whitespace ("3.14", "1,000" and "..." stay whole); CJK marks
# count anywhere except inside a run of marks or before a closing quote.
_SENTENCE_END = re.compile(r"(?<=[.!?;…])\s+|(?<=[。！？；])(?![。！？；”」』])\s*|\n+")
_CLAUSE_END = re.compile(r"(?<=[,:])\s+|(?<=[，、：])\s*")
_CJK_RANGES = (
    (0x3040, 0x30FF),  # kana
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7AF),  # hangul
    (0xF900, 0xFAFF),
)
# Budget per segment in "units": a CJK character or a word of an alphabetic script. It matches
# the frontend's own split target (60-80 tokens), so a segment is one LLM pass of sane length.
SEGMENT_UNITS = 80


def strip_special_tokens(text: str) -> str:
    text = _SPECIAL_TOKEN.sub("", text)
    while "<|" in text or "|>" in text:  # "||>" needs two passes
        text = text.replace("<|", "<").replace("|>", ">")
    return text


def zero_shot_prompt_text(transcript: str, *, v3: bool) -> str:
    return f"{V3_SYSTEM_PROMPT}{END_OF_PROMPT}{transcript}" if v3 else transcript


def instruct_text(instruction: str, *, v3: bool) -> str:
    instruction = strip_special_tokens(instruction).strip()
    return f"{V3_SYSTEM_PROMPT} {instruction}{END_OF_PROMPT}" if v3 else f"{instruction}{END_OF_PROMPT}"


def cross_lingual_text(segment: str, *, v3: bool) -> str:
    return f"{V3_SYSTEM_PROMPT}{END_OF_PROMPT}{segment}" if v3 else segment


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return any(low <= code <= high for low, high in _CJK_RANGES)


def units(text: str) -> int:
    """CJK characters plus words of other scripts."""
    cjk = sum(1 for ch in text if _is_cjk(ch))
    other = "".join(" " if _is_cjk(ch) else ch for ch in text)
    return cjk + len(other.split())


def speakable(text: str) -> bool:
    """Has at least one letter or digit (the frontend drops punctuation-only segments)."""
    return any(unicodedata.category(ch)[0] in "LN" for ch in text)


def _pieces(text: str, pattern: re.Pattern[str]) -> list[str]:
    return [piece for piece in pattern.split(text) if piece.strip()]


def _hard_split(text: str, budget: int) -> list[str]:
    """Last resort for a clause over budget: at spaces, or every `budget` CJK characters."""
    words = text.split(" ") if " " in text.strip() else list(text)
    joiner = " " if " " in text.strip() else ""
    out: list[str] = []
    current: list[str] = []
    for word in words:
        if current and units(joiner.join([*current, word])) > budget:
            out.append(joiner.join(current))
            current = []
        current.append(word)
    if current:
        out.append(joiner.join(current))
    return [piece.strip() for piece in out if piece.strip()]


def split_text(text: str, budget: int = SEGMENT_UNITS) -> list[str]:
    """Split at sentence ends, then clause marks, then spaces; then pack neighbours greedily up
    to `budget` units (short sentences alone make the model speak worse). Drops segments with
    nothing speakable."""
    atoms: list[str] = []
    for sentence in _pieces(text, _SENTENCE_END):
        if units(sentence) <= budget:
            atoms.append(sentence.strip())
            continue
        for clause in _pieces(sentence, _CLAUSE_END):
            atoms.extend([clause.strip()] if units(clause) <= budget else _hard_split(clause, budget))
    segments: list[str] = []
    for atom in atoms:
        if segments and units(segments[-1]) + units(atom) <= budget:
            joiner = "" if _is_cjk(segments[-1][-1]) or _is_cjk(atom[0]) else " "
            segments[-1] = f"{segments[-1]}{joiner}{atom}"
        else:
            segments.append(atom)
    return [segment for segment in segments if speakable(segment)]


# ------------------------------------------------------------------------------- scripts --

_LANGUAGE_SCRIPTS = {
    "zh": "han",
    "cmn": "han",
    "yue": "han",
    "ja": "kana",
    "ko": "hangul",
    "ru": "cyrillic",
    "uk": "cyrillic",
}


def script_of(text: str) -> str | None:
    """The dominant writing system of `text`: han, kana (Japanese), hangul, cyrillic, latin."""
    counts: dict[str, int] = {}
    for ch in text:
        code = ord(ch)
        if 0x3040 <= code <= 0x30FF:
            script = "kana"
        elif 0xAC00 <= code <= 0xD7AF:
            script = "hangul"
        elif _is_cjk(ch):
            script = "han"
        elif 0x0400 <= code <= 0x04FF:
            script = "cyrillic"
        elif ch.isalpha() and code < 0x0250:
            script = "latin"
        else:
            continue
        counts[script] = counts.get(script, 0) + 1
    if not counts:
        return None
    if counts.get("kana"):  # Japanese mixes kanji and kana; any kana makes it Japanese
        return "kana"
    return max(counts, key=lambda s: counts[s])


def language_script(language: str | None) -> str | None:
    if not language:
        return None
    return _LANGUAGE_SCRIPTS.get(language.lower().split("-", 1)[0], "latin")


def is_cross_lingual(text: str, language: str | None, transcript: str) -> bool:
    """Speak in another language than the prompt's? Judged by writing system: the requested
    language's (or else the text's) against the transcript's. Same-script language pairs
    (English and German) stay zero-shot, which the model handles from the text alone."""
    prompt_script = script_of(transcript)
    target = language_script(language) or script_of(text)
    return prompt_script is not None and target is not None and target != prompt_script
