"""A voice added with `tts-stream voices add` is usable in requests, and its cache key follows
its audio: real Kafka, Redis, S3, the CLI and a worker process (the null engine, which accepts
cloned voices; the cosyvoice engine needs a GPU and weights)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from consumer.adapters.s3 import S3ObjectStore
from consumer.voices.registry import VoiceRegistry
from schemas.model import ErrorCode, PromptAudioVoice, RegisteredVoice, ResultStatus
from tests.support.kafka_io import Lanes, ResultReader, request, send_requests
from tests.support.speech import speech, wav_bytes
from tests.support.stack import ROOT, StackAddresses, unique_name
from tests.support.worker import WorkerProcess

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


@pytest.fixture
def registry(
    stack: StackAddresses, s3_client: object, object_store: S3ObjectStore
) -> Iterator[VoiceRegistry]:
    store = object_store
    registry = VoiceRegistry(store, stack.voices_bucket)
    registry.created = []  # type: ignore[attr-defined]
    yield registry
    for ref in registry.created:  # type: ignore[attr-defined]
        voice_id = registry.voice_id_of(ref)
        if voice_id and registry.record(voice_id) is not None:
            registry.remove(voice_id)


def test_a_cli_voice_in_requests_and_its_cache_key_following_its_audio(
    stack: StackAddresses,
    kafka_config: dict[str, Any],
    lanes: Lanes,
    start_worker: Callable[..., WorkerProcess],
    registry: VoiceRegistry,
    tmp_path: Path,
) -> None:
    name = unique_name("e2e-voice")
    added = voices_cli(stack, "add", name, "--audio", str(prompt_file(tmp_path)), "--text", TRANSCRIPT)
    assert added.returncode == 0, added.stderr
    first_id = registry.voice_id_of(name)
    assert first_id is not None
    registry.created.append(first_id)  # type: ignore[attr-defined]

    start_worker(lanes, "voices-w1", {"TTS_ENGINE": "null"})
    reader = ResultReader(kafka_config, lanes.results)
    text = f"Hello from a cloned voice, run {uuid.uuid4().hex[:6]}."

    by_id = request(text, RegisteredVoice(first_id))
    unknown = request(text, RegisteredVoice(unique_name("nobody")))
    not_allowed = request(text, PromptAudioVoice("s3://tts-voices/voices/x/prompt.wav", "Hi."))
    ids = send_requests(kafka_config, lanes.requests, [by_id, unknown, not_allowed])
    results = reader.poll_until(ids, timeout_s=60)
    (first,) = results[by_id.request_id]
    assert first.status is ResultStatus.SUCCEEDED, first.error
    assert first.audio is not None and first.audio.duration_seconds > 0.5
    (missing,) = results[unknown.request_id]
    assert missing.error is not None and missing.error.code is ErrorCode.VOICE_NOT_FOUND
    (refused,) = results[not_allowed.request_id]
    assert refused.error is not None and refused.error.code is ErrorCode.VOICE_NOT_ALLOWED

    # Re-register the name with other audio: the same request by name is now another voice,
    # so it gets another cache key (and is synthesised, not served from the old entry).
    moved = voices_cli(stack, "add", name, "--audio", str(prompt_file(tmp_path)), "--text", TRANSCRIPT)
    assert moved.returncode == 0, moved.stderr
    second_id = registry.voice_id_of(name)
    assert second_id is not None and second_id != first_id
    registry.created.append(second_id)  # type: ignore[attr-defined]
    by_name = request(text, RegisteredVoice(name))
    by_new_id = request(text, RegisteredVoice(second_id))
    ids = send_requests(kafka_config, lanes.requests, [by_name, by_new_id])
    results = reader.poll_until(ids, timeout_s=60)
    (named,) = results[by_name.request_id]
    (second,) = results[by_new_id.request_id]
    assert named.status is ResultStatus.SUCCEEDED, named.error
    assert named.cache_key == second.cache_key
    assert named.cache_key != first.cache_key
    assert not named.cache_hit or not second.cache_hit  # one of the two was synthesised
