"""`tts-stream voices` as an operator runs it, against the local stack's S3 server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from consumer.adapters.s3 import S3ObjectStore
from consumer.voices.registry import VoiceRegistry
from tests.support.speech import speech, wav_bytes
from tests.support.stack import ROOT, StackAddresses, unique_name

TRANSCRIPT = "The quick brown fox jumps over the lazy dog, and then it runs far away into the forest."


def run(
    stack: StackAddresses, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **stack.worker_env(), "TTS_LOG_LEVEL": "WARNING", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tts_stream", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def unique_prompt(path: Path, seed: str) -> Path:
    """Real speech plus inaudible noise unique to this test run, so the voice id is ours
    alone in the shared bucket."""
    audio = speech()
    noise = np.random.default_rng(uuid.UUID(seed).int % 2**32).standard_normal(len(audio.samples))
    samples = (audio.samples + 1e-3 * noise).astype(np.float32)
    path.write_bytes(wav_bytes(replace(audio, samples=samples), rate=48_000, channels=2))
    return path


@pytest.fixture
def registry(
    stack: StackAddresses, s3_client: object, object_store: S3ObjectStore
) -> Iterator[VoiceRegistry]:
    store = object_store
    registry = VoiceRegistry(store, stack.voices_bucket)
    created: list[str] = []
    registry.created = created  # type: ignore[attr-defined]
    yield registry
    for voice_id in created:  # the CLI test removes them itself; this is the safety net
        if registry.record(voice_id) is not None:
            registry.remove(voice_id)


def test_add_list_show_remove(stack: StackAddresses, registry: VoiceRegistry, tmp_path: Path) -> None:
    name = unique_name("cli-voice")
    first_file = unique_prompt(tmp_path / "first.wav", str(uuid.uuid4()))
    added = run(stack, "voices", "add", name, "--audio", str(first_file), "--text", TRANSCRIPT, "--json")
    assert added.returncode == 0, added.stderr
    body = json.loads(added.stdout)
    voice_id = body["voice_id"]
    registry.created.append(voice_id)  # type: ignore[attr-defined]
    assert body["new_voice"] is True
    assert body["aliases"] == [name]
    assert body["sample_rate_hz"] == 24_000
    assert body["source"]["channels"] == 2 and body["source"]["sample_rate_hz"] == 48_000
    assert body["duration_seconds"] == pytest.approx(speech().duration_seconds, abs=0.01)
    # What the CLI stored is what the registry reads, under the sha256 of the canonical audio.
    assert registry.voice_id_of(name) == voice_id
    registry.audio(voice_id)  # verifies the hash

    listed = run(stack, "voices", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    mine = [v for v in json.loads(listed.stdout) if v["voice_id"] == voice_id]
    assert mine and mine[0]["aliases"] == [name]
    human = run(stack, "voices", "list")
    assert voice_id in human.stdout and name in human.stdout

    shown = run(stack, "voices", "show", name)
    assert shown.returncode == 0, shown.stderr
    assert voice_id in shown.stdout and TRANSCRIPT in shown.stdout

    # Re-registering the name with other audio: a new id, the old voice kept by id.
    second_file = unique_prompt(tmp_path / "second.wav", str(uuid.uuid4()))
    moved = run(stack, "voices", "add", name, "--audio", str(second_file), "--text", TRANSCRIPT)
    assert moved.returncode == 0, moved.stderr
    new_id = registry.voice_id_of(name)
    assert new_id is not None and new_id != voice_id
    registry.created.append(new_id)  # type: ignore[attr-defined]
    assert f"(was {voice_id})" in moved.stdout

    removed = run(stack, "voices", "remove", name, "--purge")
    assert removed.returncode == 0, removed.stderr
    assert new_id in removed.stdout
    assert registry.record(new_id) is None
    assert registry.record(voice_id) is not None  # only the voice the name pointed at
    assert run(stack, "voices", "remove", voice_id).returncode == 0
    assert registry.record(voice_id) is None
    gone = run(stack, "voices", "show", name)
    assert gone.returncode == 1
    assert "no voice" in gone.stderr


def test_bad_input_and_unreachable_storage_have_their_exit_codes(
    stack: StackAddresses, registry: VoiceRegistry, tmp_path: Path
) -> None:
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("these are not the samples you are looking for")
    refused = run(stack, "voices", "add", unique_name("bad"), "--audio", str(not_audio), "--text", "Hi.")
    assert refused.returncode == 1
    assert "not a WAV, FLAC, Ogg or MP3 file" in refused.stderr

    prompt = unique_prompt(tmp_path / "ok.wav", str(uuid.uuid4()))
    bad_name = run(stack, "voices", "add", "Not A Name", "--audio", str(prompt), "--text", "Hi.")
    assert bad_name.returncode == 1
    assert "voice name" in bad_name.stderr

    missing = run(stack, "voices", "add", "x", "--audio", str(tmp_path / "nope.wav"), "--text", "Hi.")
    assert missing.returncode == 2  # click usage error

    down = run(
        stack,
        "voices",
        "list",
        env={"TTS_S3_ENDPOINT_URL": "http://127.0.0.1:9"},
    )
    assert down.returncode == 3
    assert "object storage is unavailable" in down.stderr
