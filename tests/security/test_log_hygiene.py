"""Logs never carry secrets or request text, even at DEBUG.

A worker and the producer CLI run with known secrets -- SASL passwords, the Redis password, the
S3 secret key (handed to the worker only through the AWS default credential chain, as a pod
identity would) -- and with request texts, style instructions and prompt transcripts that carry
unique markers, through every path: success, validation failure, voice failure, dead letter.
Then every line they wrote, and what the health endpoints show, is searched for all of them.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from confluent_kafka import Producer

from schemas.codec import REQUEST_SCHEMAS, SINGLE_OBJECT_MAGIC, request_codec
from schemas.model import ErrorCode, PromptAudioVoice, ResultStatus
from tests.security.secure_stack import SecureKafka, SecureRedis
from tests.support.kafka_io import Lanes, ResultReader, create_lanes, read_all, request
from tests.support.stack import ROOT, StackAddresses
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.timeout(300)


@dataclass(frozen=True)
class PodIdentityStack(StackAddresses):
    """The stack, but S3 credentials reach the worker only through boto's default chain
    (AWS_* variables here; IRSA or workload identity files in a cluster), never TTS_S3_*."""

    def worker_env(self) -> dict[str, str]:
        env = {k: v for k, v in super().worker_env().items() if not k.startswith("TTS_S3_") or "KEY" not in k}
        return {
            **env,
            "AWS_ACCESS_KEY_ID": self.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret_key,
        }


def _tone() -> bytes:
    t = np.arange(48_000) / 24_000
    buffer = io.BytesIO()
    soundfile.write(buffer, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 24_000, format="WAV")
    return buffer.getvalue()


def test_no_secret_and_no_request_text_reaches_any_log(
    secure_kafka: SecureKafka,
    secure_redis: SecureRedis,
    stack: StackAddresses,
    s3_client: Any,
    tmp_path: Path,
) -> None:
    mark = uuid.uuid4().hex[:10]
    texts = {
        "text": f"TextMarker{mark} please read this aloud",
        "style": f"StyleMarker{mark} whisper",
        "transcript": f"TranscriptMarker{mark} said here",
        "invalid": f"InvalidMarker{mark}\x00",
        "bytes": f"BytesMarker{mark}",
        "cli": f"CliMarker{mark} from the command line",
        "cli-invalid": f"CliInvalidMarker{mark}\x07",
    }
    secrets_ = {
        "worker SASL password": secure_kafka.worker.password,
        "producer SASL password": secure_kafka.producer.password,
        "Redis password": secure_redis.password,
        "S3 secret key": stack.s3_secret_key,
    }
    admin = secure_kafka.client_config(secure_kafka.admin)
    lanes: Lanes = create_lanes(admin, partitions=1)
    prefix = f"hygiene-{mark}/"
    s3_client.put_object(Bucket=stack.voices_bucket, Key=f"{prefix}voice.wav", Body=_tone())

    identity = PodIdentityStack(**{f: getattr(stack, f) for f in stack.__dataclass_fields__})
    worker = WorkerProcess(
        identity,
        {
            **lanes.env(),
            **secure_kafka.env(secure_kafka.worker),
            "TTS_REDIS_URL": secure_redis.url(),
            "TTS_REDIS_PASSWORD": secure_redis.password,
            "TTS_ENGINE": "null",
            "TTS_PROMPT_AUDIO_ALLOWLIST": f"{stack.voices_bucket}/{prefix}",
            "TTS_LOG_LEVEL": "DEBUG",
        },
        tmp_path,
        instance_id="hygiene",
    )
    assert "TTS_S3_SECRET_ACCESS_KEY" not in worker._env and "TTS_S3_ACCESS_KEY_ID" not in worker._env
    cli_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TTS_", "AWS_"))},
        **secure_kafka.env(secure_kafka.producer),
        "TTS_TOPICS_REQUESTS": lanes.requests,
        "TTS_TOPICS_RESULTS": lanes.results,
    }
    try:
        worker.start().wait_ready(90)
        sent = _send_through_every_path(admin, lanes, texts, f"s3://{stack.voices_bucket}/{prefix}")
        cli = subprocess.run(
            [sys.executable, "-m", "tts_stream", "--log-level", "DEBUG", "submit", texts["cli"],
             "--voice", "preset:en-us", "--style", texts["style"], "--wait", "--timeout", "90s"],
            cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=150, check=False,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        cli_invalid = subprocess.run(
            [sys.executable, "-m", "tts_stream", "--log-level", "DEBUG", "submit", texts["cli-invalid"],
             "--voice", "preset:en-us"],
            cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert cli_invalid.returncode == 2 and "control character" in cli_invalid.stderr

        results = ResultReader(admin, lanes.results).poll_until(list(sent), timeout_s=90)
        outcomes = {name: results[rid][0] for rid, name in sent.items()}
        assert outcomes["text"].status is ResultStatus.SUCCEEDED
        assert outcomes["transcript"].status is ResultStatus.SUCCEEDED, outcomes["transcript"].error
        assert outcomes["invalid"].error is not None
        assert outcomes["invalid"].error.code is ErrorCode.INVALID_REQUEST
        assert outcomes["missing-voice"].error is not None
        assert outcomes["missing-voice"].error.code is ErrorCode.VOICE_NOT_FOUND
        assert len(read_all(admin, lanes.dlq)) == 1
        endpoints = "".join(worker.get(path)[1].decode() for path in ("/metrics", "/readyz", "/livez"))
    finally:
        worker.stop(30)

    worker_log = worker.log_path.read_text()
    assert any(rid in worker_log for rid in sent), "DEBUG logs name the requests they handle"
    outputs = {
        "worker log": worker_log,
        "worker endpoints": endpoints,
        "CLI submit": cli.stdout + cli.stderr,
        "CLI invalid submit": cli_invalid.stdout + cli_invalid.stderr,
    }
    leaks = [
        f"{what} in the {where}"
        for where, output in outputs.items()
        for what, needle in {**secrets_, **{f"{k} marker": f"Marker{mark}" for k in ("any",)}}.items()
        if needle in output
    ]
    assert not leaks, "\n".join(leaks)


def _send_through_every_path(
    kafka: dict[str, Any], lanes: Lanes, texts: dict[str, str], prompt_prefix: str
) -> dict[str, str]:
    """Produce one request per path through the worker; returns request id -> path name."""
    codec = request_codec()
    reqs = {
        "text": request(texts["text"], style_instruction=texts["style"]),
        "transcript": request("clone me", PromptAudioVoice(f"{prompt_prefix}voice.wav", texts["transcript"])),
        "missing-voice": request(
            "no such voice", PromptAudioVoice(f"{prompt_prefix}missing.wav", texts["transcript"])
        ),
        "invalid": request(texts["invalid"], style_instruction=texts["style"]),
    }
    producer = Producer(kafka)
    for req in reqs.values():
        producer.produce(lanes.requests, codec.encode(req), key=req.request_id.encode())
    # Not a request: a broken body around the marker, for the DLQ path.
    header = SINGLE_OBJECT_MAGIC + REQUEST_SCHEMAS.latest.fingerprint
    producer.produce(lanes.requests, header + b"\x06abc" + texts["bytes"].encode() + b"\xff\xfe", key=b"junk")
    assert producer.flush(30) == 0
    return {req.request_id: name for name, req in reqs.items()}
