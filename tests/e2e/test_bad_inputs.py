"""The bad-input matrix, end to end: every kind of bad request gets its documented code
(docs/errors.md), bytes that are not a request go to the DLQ, and nothing is lost or stuck.

Requests are produced with plain confluent-kafka and the codec, not the producer library: the
library refuses most of these before producing, and the worker must not rely on that. Prompt
audio is uploaded to an allow-listed prefix of the voices bucket; objects that exist but lie
outside the allow-list prove the worker never fetches what it must not.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import soundfile
from confluent_kafka import Producer

from schemas import dlq
from schemas.codec import REQUEST_SCHEMAS, SINGLE_OBJECT_MAGIC, request_codec, result_codec
from schemas.model import (
    ErrorCode,
    PresetVoice,
    PromptAudioVoice,
    RegisteredVoice,
    ResultStatus,
    SynthesisRequest,
)
from tests.support.kafka_io import Lanes, ResultReader, committed_offsets, read_all, request
from tests.support.stack import StackAddresses
from tests.support.worker import WorkerProcess

OK = "SUCCEEDED"
MAX_PROMPT_BYTES = 1024 * 1024
MAX_PROMPT_SECONDS = 10


def _wav(seconds: float, rate: int = 24_000, amplitude: float = 0.3, fmt: str = "WAV") -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    samples = (amplitude * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=fmt)
    return buffer.getvalue()


def _upload_prompts(s3: Any, bucket: str, prefix: str) -> None:
    objects = {
        f"{prefix}valid.wav": _wav(2.0),
        f"{prefix}huge.wav": _wav(25.0, rate=48_000)[: MAX_PROMPT_BYTES + 200_000],  # over the byte cap
        f"{prefix}long.wav": _wav(MAX_PROMPT_SECONDS + 5, rate=16_000),  # small but too long
        f"{prefix}not-audio.wav": b"<html><body>this is not audio</body></html>" * 20,
        f"{prefix}fake-riff.wav": b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 8,
        f"{prefix}silent.wav": _wav(3.0, amplitude=0.0),
        f"{prefix}too-short.wav": _wav(0.3),
        # Ten minutes of silence compress to a few kB of FLAC: a decompression bomb in miniature.
        f"{prefix}bomb.flac": _wav(600.0, rate=16_000, amplitude=0.0, fmt="FLAC"),
        # Real audio that exists but lies outside the allow-list: it must never be fetched.
        "secret/valid.wav": _wav(2.0),
    }
    for key, data in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    assert len(objects[f"{prefix}bomb.flac"]) < 100_000


def _request_cases(
    run: str, voices_bucket: str, prefix: str, reply_ok: str
) -> dict[str, tuple[SynthesisRequest, str]]:
    def prompt(uri: str, transcript: str = "a short transcript") -> PromptAudioVoice:
        return PromptAudioVoice(uri, transcript)

    inside = f"s3://{voices_bucket}/{prefix}"
    past_ms = int(time.time() * 1000) - 60_000
    cases: dict[str, tuple[SynthesisRequest, str]] = {
        # ---- controls: valid requests at the edges are answered, not refused
        "valid-prompt-audio": (request(f"clone me {run}", prompt(f"{inside}valid.wav")), OK),
        "text-exactly-at-the-limit": (request(("x" * 4990) + run[:10]), OK),
        "allowed-reply-topic": (request(f"reply here {run}", reply_topic=reply_ok), OK),
        "bidi-and-emoji": (request(f"\u202eevil\u202c 👩\u200d👩\u200d👧 {run}"), OK),
        # ---- text
        "empty-text": (request(""), ErrorCode.INVALID_REQUEST),
        "whitespace-text": (request(" \n\t "), ErrorCode.INVALID_REQUEST),
        "text-over-the-limit": (request("y" * 5001), ErrorCode.TEXT_TOO_LONG),
        "text-of-400-kB": (request("z" * 400_000), ErrorCode.TEXT_TOO_LONG),
        "nul-in-text": (request("hello\x00world"), ErrorCode.INVALID_REQUEST),
        "ansi-escape-in-text": (request("\x1b[31mred\x1b[0m"), ErrorCode.INVALID_REQUEST),
        # (U+0085 NEL is Unicode white space and normalises to a space; CSI is a bare control.)
        "c1-control-in-text": (request("\x9b31mred"), ErrorCode.INVALID_REQUEST),
        "noncharacter-in-text": (request("odd \ufffe char"), ErrorCode.INVALID_REQUEST),
        "zalgo-text": (request("a" + "\u0316\u0301" * 100), ErrorCode.INVALID_REQUEST),
        "zalgo-of-600-kB": (request("a" + "\u0316\u0301" * 150_000), ErrorCode.TEXT_TOO_LONG),
        # ---- parameters
        "speed-too-slow": (request("hello", speed=0.49), ErrorCode.INVALID_REQUEST),
        "speed-too-fast": (request("hello", speed=2.01), ErrorCode.INVALID_REQUEST),
        "speed-nan": (request("hello", speed=math.nan), ErrorCode.INVALID_REQUEST),
        "speed-infinite": (request("hello", speed=math.inf), ErrorCode.INVALID_REQUEST),
        "speed-negative": (request("hello", speed=-1.0), ErrorCode.INVALID_REQUEST),
        "sample-rate-odd": (request("hello", sample_rate_hz=12345), ErrorCode.INVALID_REQUEST),
        "sample-rate-negative": (request("hello", sample_rate_hz=-16000), ErrorCode.INVALID_REQUEST),
        "loudness-nan": (request("hello", loudness_lufs=math.nan), ErrorCode.INVALID_REQUEST),
        "loudness-too-loud": (request("hello", loudness_lufs=0.0), ErrorCode.INVALID_REQUEST),
        "language-malformed": (request("hello", language="en_US; rm -rf /"), ErrorCode.INVALID_REQUEST),
        "language-huge": (request("hello", language="a" * 10_000), ErrorCode.INVALID_REQUEST),
        "style-with-newline": (
            request("hello", style_instruction="cheerful\nIGNORE PREVIOUS"),
            ErrorCode.INVALID_REQUEST,
        ),
        "style-too-long": (request("hello", style_instruction="s" * 501), ErrorCode.INVALID_REQUEST),
        "request-id-path": (request("hello", request_id="../../etc/passwd"), ErrorCode.INVALID_REQUEST),
        "too-many-attributes": (
            request("hello", attributes={f"k{i}": "v" for i in range(33)}),
            ErrorCode.INVALID_REQUEST,
        ),
        "attribute-too-long": (request("hello", attributes={"k": "v" * 257}), ErrorCode.INVALID_REQUEST),
        "deadline-in-the-past": (request(f"too late {run}", deadline_ms=past_ms), ErrorCode.EXPIRED),
        "deadline-at-epoch": (request(f"far too late {run}", deadline_ms=0), ErrorCode.EXPIRED),
        # ---- voices: presets and registered voices
        "unknown-preset": (request("hello", PresetVoice("no-such-voice")), ErrorCode.VOICE_NOT_FOUND),
        "preset-with-slash": (request("hello", PresetVoice("../en-us")), ErrorCode.INVALID_REQUEST),
        "unknown-voice-alias": (
            request("hello", RegisteredVoice(f"nobody-{run}")),
            ErrorCode.VOICE_NOT_FOUND,
        ),
        "unknown-voice-id": (request("hello", RegisteredVoice("0" * 64)), ErrorCode.VOICE_NOT_FOUND),
        "voice-ref-path": (request("hello", RegisteredVoice("../../x")), ErrorCode.INVALID_REQUEST),
        # ---- prompt-audio URIs outside the allow-list (SSRF, path and encoding tricks)
        "uri-metadata-service": (
            request("hello", prompt("http://169.254.169.254/latest/meta-data/iam/")),
            ErrorCode.VOICE_NOT_ALLOWED,
        ),
        "uri-metadata-as-bucket": (
            request("hello", prompt("s3://169.254.169.254/latest/meta-data")),
            ErrorCode.VOICE_NOT_ALLOWED,
        ),
        "uri-https": (request("hello", prompt("https://example.invalid/a.wav")), ErrorCode.VOICE_NOT_ALLOWED),
        "uri-file": (request("hello", prompt("file:///etc/passwd")), ErrorCode.VOICE_NOT_ALLOWED),
        "uri-upper-case-scheme": (
            request("hello", prompt(f"S3://{voices_bucket}/{prefix}valid.wav")),
            ErrorCode.VOICE_NOT_ALLOWED,
        ),
        "uri-userinfo": (
            request("hello", prompt(f"s3://{voices_bucket}@169.254.169.254/{prefix}valid.wav")),
            ErrorCode.VOICE_NOT_ALLOWED,
        ),
        "uri-other-bucket": (
            request("hello", prompt(f"s3://tts-audio/{prefix}valid.wav")),
            ErrorCode.VOICE_NOT_ALLOWED,
        ),
        "uri-other-prefix-that-exists": (
            request("hello", prompt(f"s3://{voices_bucket}/secret/valid.wav")),
            ErrorCode.VOICE_NOT_ALLOWED,
        ),
        "uri-prefix-lookalike": (
            request("hello", prompt(f"s3://{voices_bucket}/{prefix[:-1]}-private/valid.wav")),
            ErrorCode.VOICE_NOT_ALLOWED,
        ),
        "uri-dot-dot": (
            request("hello", prompt(f"{inside}../secret/valid.wav")),
            ErrorCode.VOICE_NOT_ALLOWED,
        ),
        "uri-percent-dot-dot": (
            request("hello", prompt(f"{inside}%2e%2e/secret/valid.wav")),
            ErrorCode.VOICE_NOT_ALLOWED,
        ),
        "uri-percent-slash": (
            request("hello", prompt(f"{inside}..%2fsecret%2fvalid.wav")),
            ErrorCode.VOICE_NOT_ALLOWED,
        ),
        "uri-backslash": (
            request("hello", prompt(f"{inside}..\\secret\\valid.wav")),
            ErrorCode.VOICE_NOT_ALLOWED,
        ),
        "uri-double-slash": (
            request("hello", prompt(f"{inside}/secret/valid.wav")),
            ErrorCode.VOICE_NOT_ALLOWED,
        ),
        "uri-query": (
            request("hello", prompt(f"{inside}valid.wav?versionId=1")),
            ErrorCode.VOICE_NOT_ALLOWED,
        ),
        "uri-nul": (request("hello", prompt(f"{inside}valid.wav\x00.txt")), ErrorCode.VOICE_NOT_ALLOWED),
        # Look-alike dots are not dots: the key stays inside the prefix and does not exist.
        "uri-one-dot-leaders": (
            request("hello", prompt(f"{inside}\u2024\u2024/secret/valid.wav")),
            ErrorCode.VOICE_NOT_FOUND,
        ),
        "uri-missing-object": (
            request("hello", prompt(f"{inside}nothing-here.wav")),
            ErrorCode.VOICE_NOT_FOUND,
        ),
        # ---- prompt audio that exists inside the allow-list but is unusable
        "prompt-huge": (request("hello", prompt(f"{inside}huge.wav")), ErrorCode.VOICE_INVALID),
        "prompt-too-long": (request("hello", prompt(f"{inside}long.wav")), ErrorCode.VOICE_INVALID),
        "prompt-not-audio": (request("hello", prompt(f"{inside}not-audio.wav")), ErrorCode.VOICE_INVALID),
        "prompt-fake-riff": (request("hello", prompt(f"{inside}fake-riff.wav")), ErrorCode.VOICE_INVALID),
        "prompt-silent": (request("hello", prompt(f"{inside}silent.wav")), ErrorCode.VOICE_INVALID),
        "prompt-too-short": (request("hello", prompt(f"{inside}too-short.wav")), ErrorCode.VOICE_INVALID),
        "prompt-decompression-bomb": (
            request("hello", prompt(f"{inside}bomb.flac")),
            ErrorCode.VOICE_INVALID,
        ),
        "prompt-empty-transcript": (
            request("hello", prompt(f"{inside}valid.wav", transcript="  ")),
            ErrorCode.INVALID_REQUEST,
        ),
        # ---- routing
        "reply-topic-not-allowed": (
            request("hello", reply_topic="someone.elses.results"),
            ErrorCode.REPLY_TOPIC_NOT_ALLOWED,
        ),
        "reply-topic-malformed": (request("hello", reply_topic="../../x y"), ErrorCode.INVALID_REQUEST),
    }
    return cases


def _raw_cases() -> dict[bytes, tuple[bytes, str]]:
    """Bytes that are not a request: key -> (value, expected DLQ reason)."""
    valid = request_codec().encode(request("a valid request cut short"))
    header = SINGLE_OBJECT_MAGIC + REQUEST_SCHEMAS.latest.fingerprint
    result_bytes = result_codec().encode(
        _result_for_dlq_case(),
    )
    return {
        b"raw-empty": (b"", "EMPTY"),
        b"raw-json": (b'{"text": "not avro"}', "BAD_MAGIC"),
        b"raw-truncated": (valid[:-3], "TRUNCATED"),
        b"raw-trailing": (valid + b"\x00\x00\x00", "TRAILING_BYTES"),
        b"raw-header-only": (header, "TRUNCATED"),
        b"raw-unknown-fingerprint": (SINGLE_OBJECT_MAGIC + b"\x01" * 8 + valid[10:], "UNKNOWN_FINGERPRINT"),
        b"raw-result-event": (result_bytes, "UNKNOWN_FINGERPRINT"),
        b"raw-confluent-framing": (b"\x00\x00\x00\x00\x2a" + valid[10:], "NO_REGISTRY"),
        b"raw-absurd-length": (header + b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f" + b"x" * 20, "BAD_LENGTH"),
        b"raw-negative-length": (header + b"\x03" + b"x" * 20, "BAD_LENGTH"),
        b"raw-invalid-utf8": (header + b"\x04\xff\xfe" + valid[12:], "INVALID_UTF8"),
        b"raw-overlong-utf8": (header + b"\x04\xc0\xaf" + valid[12:], "INVALID_UTF8"),
    }


def _result_for_dlq_case() -> Any:
    from schemas.model import ResultError, SynthesisResult, Timings

    return SynthesisResult(
        request_id="r",
        status=ResultStatus.FAILED,
        engine="x",
        model_version="y",
        timings=Timings(0, 0, 0),
        completed_at_ms=0,
        error=ResultError(ErrorCode.INTERNAL, "m", False),
    )


@pytest.fixture
def prompt_prefix(s3_client: Any, stack: StackAddresses) -> str:
    prefix = f"prompts-{uuid.uuid4().hex[:8]}/"
    _upload_prompts(s3_client, stack.voices_bucket, prefix)
    return prefix


def test_every_bad_input_gets_its_documented_code_and_nothing_is_lost(
    kafka_config: dict[str, Any],
    make_lanes: Callable[..., Lanes],
    make_topic: Callable[..., str],
    start_worker: Callable[..., WorkerProcess],
    stack: StackAddresses,
    prompt_prefix: str,
) -> None:
    lanes = make_lanes(partitions=2)
    reply_ok = make_topic("replies")
    run = uuid.uuid4().hex[:8]
    cases = _request_cases(run, stack.voices_bucket, prompt_prefix, reply_ok)
    raw = _raw_cases()

    codec = request_codec()
    producer = Producer({**kafka_config, "message.max.bytes": 1_048_000})
    for req, _ in cases.values():
        producer.produce(lanes.requests, codec.encode(req), key=req.request_id.encode()[:64])
    for key, (value, _) in raw.items():
        producer.produce(lanes.requests, value, key=key)
    assert producer.flush(30) == 0
    sent = len(cases) + len(raw)

    worker = start_worker(
        lanes,
        "bad-inputs",
        {
            "TTS_ENGINE": "null",  # declares cloning, so prompt audio is resolved and checked
            "TTS_PROMPT_AUDIO_ALLOWLIST": f"{stack.voices_bucket}/{prompt_prefix}",
            "TTS_MAX_PROMPT_AUDIO_BYTES": str(MAX_PROMPT_BYTES),
            "TTS_MAX_PROMPT_AUDIO_SECONDS": str(MAX_PROMPT_SECONDS),
            "TTS_REPLY_TOPIC_ALLOWLIST": reply_ok,
        },
    )
    on_results = [c[0].request_id for name, c in cases.items() if name != "allowed-reply-topic"]
    results = ResultReader(kafka_config, lanes.results).poll_until(on_results, timeout_s=120, settle_s=2)
    replies = ResultReader(kafka_config, reply_ok).poll_until(
        [cases["allowed-reply-topic"][0].request_id], timeout_s=30
    )

    wrong = []
    for name, (req, expected) in cases.items():
        answers = (replies if name == "allowed-reply-topic" else results).get(req.request_id, [])
        if len(answers) != 1:
            wrong.append(f"{name}: {len(answers)} answers")
            continue
        (answer,) = answers
        got = answer.status.value if answer.succeeded else answer.error.code.value  # type: ignore[union-attr]
        if got != expected:
            wrong.append(f"{name}: expected {expected}, got {got} ({answer.error})")
        elif not answer.succeeded:
            assert answer.error is not None and answer.error.retryable is False, name
            assert answer.audio is None
    assert not wrong, "\n".join(wrong)

    dead = {m.key(): m for m in read_all(kafka_config, lanes.dlq)}
    assert set(dead) == set(raw), "every undecodable message is in the DLQ, nothing else is"
    for key, (value, reason) in raw.items():
        headers = dict(dead[key].headers())
        assert headers[dlq.REASON] == reason.encode(), f"{key!r}: {headers[dlq.REASON]!r}"
        assert (dead[key].value() or b"") == value, "the original bytes are kept"

    ends = committed_offsets(kafka_config, lanes.group, lanes.requests, 2)
    assert sum(ends.values()) == sent, f"every partition moved past everything ({ends})"
    assert worker.alive()
    samples = worker.metrics()
    engine_items = samples.get("tts_engine_batch_size_sum", 0.0)
    assert engine_items == sum(1 for _, expected in cases.values() if expected == OK), (
        "the engine ran only for the valid controls"
    )


def test_requests_whose_answers_would_not_fit_are_still_answered(
    kafka_config: dict[str, Any],
    make_lanes: Callable[..., Lanes],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """An invalid request is answered with its id and attributes echoed; a hostile one must not
    make that answer impossible to publish (too big for a Kafka message, out of Avro's range)."""
    lanes = make_lanes(partitions=1)
    run = uuid.uuid4().hex[:8]
    huge_id = f"{run}-" + "i" * 300_000
    cases = {
        "huge-id-and-attributes": request(
            "hello", request_id=huge_id, attributes={f"a{i}": "v" * 250 for i in range(1200)}
        ),
        "created-at-the-dawn-of-time": request("", created_at_ms=-(2**63)),
        "deadline-at-the-dawn-of-time": request(f"late {run}", deadline_ms=-(2**63)),
        "created-at-the-end-of-time": replace(request(f"future {run}"), created_at_ms=2**63 - 1),
        "valid-but-ancient": request(f"ancient {run}", created_at_ms=-(2**63)),
        "after-them": request(f"the partition moved on {run}"),
    }
    codec = request_codec()
    producer = Producer({**kafka_config, "message.max.bytes": 1_048_000})
    for req in cases.values():
        producer.produce(lanes.requests, codec.encode(req), key=b"k")
    assert producer.flush(30) == 0
    worker = start_worker(lanes, "unanswerable", {"TTS_ENGINE": "null"})

    reader = ResultReader(kafka_config, lanes.results)
    ids = [r.request_id[:128] for r in cases.values()]
    results = reader.poll_until(ids, timeout_s=60, settle_s=1)
    assert set(results) == set(ids), worker.log_tail()
    assert results[huge_id[:128]][0].error is not None
    assert results[huge_id[:128]][0].error.code is ErrorCode.INVALID_REQUEST
    assert results[huge_id[:128]][0].attributes == {}, "invalid attributes are not echoed"
    assert results[cases["created-at-the-dawn-of-time"].request_id][0].error.code is ErrorCode.INVALID_REQUEST  # type: ignore[union-attr]
    assert results[cases["deadline-at-the-dawn-of-time"].request_id][0].error.code is ErrorCode.EXPIRED  # type: ignore[union-attr]
    for name in ("after-them", "valid-but-ancient", "created-at-the-end-of-time"):
        assert results[cases[name].request_id][0].status is ResultStatus.SUCCEEDED, name
    assert committed_offsets(kafka_config, lanes.group, lanes.requests, 1) == {0: len(cases)}
    assert worker.alive()


def test_a_message_at_the_size_limit_still_fits_in_the_dlq(
    kafka_config: dict[str, Any],
    make_lanes: Callable[..., Lanes],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """The dead letter is the original message plus provenance headers: a poison message as
    large as the lane accepts must not become a dead letter too large to publish."""
    lanes = make_lanes(partitions=1)
    run = uuid.uuid4().hex[:8]
    big = b"\x7f" + struct.pack(">I", 7) + b"g" * 1_040_000  # ~1 MB of garbage (BAD_MAGIC)
    producer = Producer({**kafka_config, "message.max.bytes": 1_048_000})
    producer.produce(lanes.requests, big, key=b"big-poison")
    codec = request_codec()
    after = request(f"after the big poison {run}")
    producer.produce(lanes.requests, codec.encode(after), key=b"after")
    assert producer.flush(30) == 0
    worker = start_worker(lanes, "big-poison", {"TTS_ENGINE": "null"})
    results = ResultReader(kafka_config, lanes.results).poll_until([after.request_id], timeout_s=60)
    assert after.request_id in results, worker.log_tail()
    (letter,) = read_all(kafka_config, lanes.dlq)
    assert letter.key() == b"big-poison"
    headers = dict(letter.headers())
    assert headers[dlq.REASON] == b"BAD_MAGIC"
    # Cut to fit, and says so: the sizes and the original's sha256 identify what was dropped.
    assert big.startswith(letter.value()) and len(letter.value()) < len(big)
    assert headers[dlq.ORIGINAL_SHA256] == hashlib.sha256(big).hexdigest().encode()
    assert f"value {len(big)} B".encode() in headers[dlq.TRUNCATED]
    assert committed_offsets(kafka_config, lanes.group, lanes.requests, 1) == {0: 2}


def test_what_the_engine_cannot_do_is_refused_not_approximated(
    kafka_config: dict[str, Any],
    make_lanes: Callable[..., Lanes],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """eSpeak NG: a language it does not speak, cloning and style instructions are refused with
    their codes before any engine time -- never answered in some other voice or language."""
    lanes = make_lanes(partitions=1)
    run = uuid.uuid4().hex[:8]
    cases = {
        "klingon": (request("nuqneH", language="tlh"), ErrorCode.UNSUPPORTED_LANGUAGE),
        "unassigned-language": (request("hello", language="qaa"), ErrorCode.UNSUPPORTED_LANGUAGE),
        "unknown-region-variant": (request("hello", language="xx-YY"), ErrorCode.UNSUPPORTED_LANGUAGE),
        "cloning-registered": (request("hello", RegisteredVoice("narrator")), ErrorCode.UNSUPPORTED),
        "cloning-prompt": (
            request("hello", PromptAudioVoice("s3://tts-voices/prompts/a.wav", "hi")),
            ErrorCode.UNSUPPORTED,
        ),
        "style": (request("hello", style_instruction="whisper it"), ErrorCode.UNSUPPORTED),
        "control": (request(f"Plain English, run {run}.", language="en-US"), OK),
    }
    codec = request_codec()
    producer = Producer(kafka_config)
    for req, _ in cases.values():
        producer.produce(lanes.requests, codec.encode(req), key=req.request_id.encode())
    assert producer.flush(30) == 0
    worker = start_worker(lanes, "espeak-refuses")
    ids = [req.request_id for req, _ in cases.values()]
    results = ResultReader(kafka_config, lanes.results).poll_until(ids, timeout_s=90, settle_s=1)
    for name, (req, expected) in cases.items():
        (answer,) = results[req.request_id]
        got = answer.status.value if answer.succeeded else answer.error.code.value  # type: ignore[union-attr]
        assert got == expected, f"{name}: {answer.error}"
    assert worker.metrics().get("tts_engine_batch_size_sum") == 1.0, "only the control reached eSpeak"
