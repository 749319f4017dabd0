"""A voice added with `tts-stream voices add` is usable in requests, and its cache key follows
its audio: real Kafka, Redis, S3, the CLI and a worker process (the null engine, which accepts
cloned voices; tests/e2e/test_cosyvoice_worker.py does the same on the real CosyVoice)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consumer.voices.registry import VoiceRegistry
from schemas.model import ErrorCode, PromptAudioVoice, RegisteredVoice, ResultStatus
from tests.support.kafka_io import Lanes, ResultReader, request, send_requests
from tests.support.stack import StackAddresses, unique_name
from tests.support.voices import TRANSCRIPT, add_voice, prompt_file, voices_cli
from tests.support.worker import WorkerProcess


def test_a_cli_voice_in_requests_and_its_cache_key_following_its_audio(
    stack: StackAddresses,
    kafka_config: dict[str, Any],
    lanes: Lanes,
    start_worker: Callable[..., WorkerProcess],
    registry: VoiceRegistry,
    tmp_path: Path,
) -> None:
    name, first_id = add_voice(stack, registry, tmp_path, "e2e-voice")

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
