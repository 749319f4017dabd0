"""Voices for end-to-end tests: the `tts-stream voices` CLI as a user runs it, unique prompts,
and a registry fixture body that removes what a test registered."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.speech import speech, wav_bytes
from tests.support.stack import ROOT, StackAddresses, unique_name

TRANSCRIPT = "The quick brown fox jumps over the lazy dog, and then it runs far away into the forest."


def voices_cli(stack: StackAddresses, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tts_stream", "voices", *args],
        cwd=ROOT,
        env={**os.environ, **stack.worker_env(), "TTS_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def prompt_file(directory: Path) -> Path:
    """Real speech with inaudible noise unique to this run: a voice id no other test shares."""
    audio = speech()
    noise = np.random.default_rng(uuid.uuid4().int % 2**32).standard_normal(len(audio.samples))
    path = directory / f"{uuid.uuid4().hex}.wav"
    path.write_bytes(wav_bytes(replace(audio, samples=(audio.samples + 1e-3 * noise).astype(np.float32))))
    return path


def add_voice(stack: StackAddresses, registry: Any, directory: Path, prefix: str) -> tuple[str, str]:
    """`tts-stream voices add` a unique voice; (name, voice id), noted for the registry fixture
    to remove."""
    name = unique_name(prefix)
    added = voices_cli(stack, "add", name, "--audio", str(prompt_file(directory)), "--text", TRANSCRIPT)
    assert added.returncode == 0, added.stderr
    voice_id = registry.voice_id_of(name)
    assert voice_id is not None
    registry.created.append(voice_id)
    return name, voice_id
