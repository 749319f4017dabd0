"""What `cache purge` accepts and matches (Redis itself: tests/integration/test_ops_cache.py)."""

from __future__ import annotations

import pytest

from tts_stream.ops.cache import Selector, cache_key_of, check_cache_key, voice_token
from tts_stream.ops.errors import BadArgument

VOICE_ID = "ab" * 32


def test_voice_arguments_become_the_tokens_entries_record() -> None:
    assert voice_token(VOICE_ID) == f"content:{VOICE_ID}"
    assert voice_token(f"content:{VOICE_ID}") == f"content:{VOICE_ID}"
    assert voice_token("preset:en-us") == "preset:en-us"
    for bad in ("alice", "registered:alice", "content:xyz", "preset:"):
        with pytest.raises(BadArgument, match="voice"):
            voice_token(bad)


def test_cache_keys_are_64_hex() -> None:
    assert check_cache_key("0" * 64) == "0" * 64
    with pytest.raises(BadArgument, match="64 lowercase hex"):
        check_cache_key("0" * 63)
    assert cache_key_of(b"tts:{" + b"a" * 64 + b"}:result") == "a" * 64


def test_selector_needs_a_criterion_and_refuses_ambiguous_ones() -> None:
    with pytest.raises(BadArgument, match="say what to purge"):
        Selector()
    with pytest.raises(BadArgument, match="--all"):
        Selector(everything=True, engine="espeak")
    with pytest.raises(BadArgument, match="exactly"):
        Selector(cache_keys=frozenset({"0" * 64}), engine="espeak")


def test_criteria_combine() -> None:
    entry = {"engine": "cosyvoice", "model_version": "v2", "voice": f"content:{VOICE_ID}"}
    assert Selector(engine="cosyvoice").matches(entry)
    assert Selector(engine="cosyvoice", model_version="v2").matches(entry)
    assert not Selector(engine="cosyvoice", model_version="v3").matches(entry)
    assert Selector(voices=frozenset({f"content:{VOICE_ID}"})).matches(entry)
    assert not Selector(voices=frozenset({"preset:en-us"})).matches(entry)
    assert not Selector(engine="espeak").matches({"uri": "s3://x/y"})  # old entries lack provenance
