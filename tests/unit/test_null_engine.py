"""The null engine's imitation of a model load (what the startup-probe test on the cluster uses)."""

from __future__ import annotations

import time

import pytest

from consumer.engines import null
from consumer.settings import WorkerSettings


def test_load_takes_the_configured_time() -> None:
    engine = null.NullEngine(load_seconds=0.2)
    started = time.monotonic()
    engine.load()
    assert time.monotonic() - started >= 0.2


def test_the_setting_reaches_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTS_ENGINE", "null")
    monkeypatch.setenv("TTS_NULL_LOAD_SECONDS", "0.05")
    engine = null.create_engine(WorkerSettings())
    started = time.monotonic()
    engine.load()
    assert time.monotonic() - started >= 0.05


def test_no_load_time_by_default() -> None:
    assert WorkerSettings().null_load_seconds == 0
