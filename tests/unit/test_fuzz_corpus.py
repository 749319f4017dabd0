"""Replay the corpus of nasty inputs (tests/fuzz/corpus, written by tests/fuzz/make_corpus.py)
through the worker's intake: each gets exactly the outcome its manifest records, fast."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.fuzz.targets import IntakeTarget

CORPUS = Path(__file__).resolve().parents[1] / "fuzz" / "corpus"
MANIFEST: dict[str, dict[str, str]] = json.loads((CORPUS / "MANIFEST.json").read_text())


@pytest.fixture(scope="module")
def target() -> IntakeTarget:
    return IntakeTarget()


def test_every_corpus_file_is_in_the_manifest_and_back() -> None:
    assert {p.stem for p in CORPUS.glob("*.bin")} == set(MANIFEST)
    assert len(MANIFEST) >= 80


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_corpus_input_gets_its_recorded_outcome(name: str, target: IntakeTarget) -> None:
    value = (CORPUS / f"{name}.bin").read_bytes()
    started = time.perf_counter()
    outcome = target(value)
    elapsed = time.perf_counter() - started
    assert str(outcome) == MANIFEST[name]["expect"], MANIFEST[name].get("why", "")
    assert elapsed < 0.5, f"{name} took {elapsed:.2f}s: the worker's poll loop would stall on it"


def test_the_generator_still_knows_every_input() -> None:
    # The files are the corpus (bytes found once stay, even if the generator changes later);
    # the generator documents how each was built and is rerun only to add inputs.
    from tests.fuzz.make_corpus import entries

    assert set(entries()) == set(MANIFEST)
