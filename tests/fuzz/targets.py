"""Fuzz targets: the worker's entry points for untrusted input, with the invariants every input
must satisfy. Shared by the hypothesis tests, the atheris harness and the corpus replay.

`IntakeTarget(value)` runs a Kafka message value (plus key and traceparent header) through the
worker's own intake -- decode, validate, allow-lists, capabilities, deadline -- and then through
what the worker does next with it:

* dead-lettered: the dead letter is built and fits in a Kafka message;
* answered with a failure: the result event encodes, fits in a message, and reads back;
* accepted: routing and cache keys compute, the request survives an encode/decode round trip,
  and the answer to it would encode too.

Anything else -- any exception escaping, any answer that cannot be published -- is a bug: in the
worker it would crash the process or stall a partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consumer.core.checkpoint import Checkpointer
from consumer.core.intake import Intake, IntakePolicy
from consumer.core.messages import Answer, DeadLetter, InboundMessage
from consumer.core.results import ResultFactory
from consumer.engine import EngineCapabilities
from consumer.metrics import Metrics
from consumer.ports import CachedAudio
from consumer.settings import Guarantee
from consumer.voices.allowlist import MAX_KEY_BYTES, PromptAllowList
from consumer.voices.errors import VoiceNotAllowed
from schemas.codec import request_codec, result_codec
from schemas.errors import DecodeReason
from schemas.keys import CacheKeyInputs, ResolvedVoice, cache_key, routing_key
from schemas.model import ErrorCode, PresetVoice, SynthesisRequest
from schemas.topics import Lane
from schemas.validation import RequestLimits

KAFKA_MESSAGE_BYTES = 1_000_000  # librdkafka's default message.max.bytes
DECODE_REASONS = frozenset(r.value for r in DecodeReason)
ERROR_CODES = frozenset(c.value for c in ErrorCode)
REPLY_TOPIC = "replies"
ALLOWED_PROMPTS = ("tts-voices/prompts/", "team-audio/")


@dataclass(frozen=True)
class Outcome:
    kind: str  # "dlq", "failed" or "accepted"
    detail: str = ""  # the DLQ reason or the error code

    def __str__(self) -> str:
        return f"{self.kind}:{self.detail}" if self.detail else self.kind

    @classmethod
    def parse(cls, text: str) -> Outcome:
        kind, _, detail = text.partition(":")
        return cls(kind, detail)


class _Unused:
    """Producer and consumer ports: building records needs neither."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the fuzz target must not touch Kafka ({name})")


class IntakeTarget:
    def __init__(self, now_ms: int | None = None) -> None:
        self.requests = request_codec()
        self.results = result_codec()
        self.factory = ResultFactory(
            engine="fuzz", model_version="1", worker_id="fuzz-worker", results_topic="results"
        )
        policy = IntakePolicy(
            limits=RequestLimits(),
            capabilities=EngineCapabilities(
                presets=frozenset({"en-us", "cmn"}),
                languages=frozenset({"en", "zh", "cmn"}),
                cloning=True,
                instruct=True,
            ),
            reply_topic_allowlist=frozenset({REPLY_TOPIC}),
        )
        kwargs: dict[str, Any] = {} if now_ms is None else {"clock_ms": lambda: now_ms}
        self.intake = Intake(self.requests.decode, self.factory, policy, **kwargs)
        self.checkpointer = Checkpointer(
            _Unused(),  # type: ignore[arg-type]
            _Unused(),  # type: ignore[arg-type]
            guarantee=Guarantee.EXACTLY_ONCE,
            encode_result=lambda result, _topic: self.results.encode(result),
            dlq_topic="dlq",
            worker_id="fuzz-worker",
            metrics=Metrics(),
        )

    def __call__(
        self, value: bytes | None, *, key: bytes | None = None, traceparent: bytes | None = None
    ) -> Outcome:
        headers = [] if traceparent is None else [("traceparent", traceparent)]
        message = InboundMessage("requests", 3, 1234, key, value, headers=headers)
        job = self.intake.take(message, Lane.INTERACTIVE)
        outcome = job.outcome
        if outcome is None:
            assert job.request is not None
            self._check_accepted(job.request)
            job.answer(self.factory.success(job, _AUDIO, cache_hit=False, synthesis_ms=12))
            self._check_publishable(self.checkpointer.record_for(job).value, job.request.request_id)
            return Outcome("accepted")
        record = self.checkpointer.record_for(job)
        size = len(record.key or b"") + len(record.value) + sum(len(k) + len(v) for k, v in record.headers)
        assert size < KAFKA_MESSAGE_BYTES, f"a {size}-byte record cannot be published"
        if isinstance(outcome, DeadLetter):
            assert outcome.reason in DECODE_REASONS, outcome.reason
            return Outcome("dlq", outcome.reason)
        assert isinstance(outcome, Answer)
        error = outcome.result.error
        assert error is not None and error.code.value in ERROR_CODES
        assert not error.retryable, "a bad request is never worth retrying"
        self._check_publishable(record.value, outcome.result.request_id)
        return Outcome("failed", error.code.value)

    def _check_accepted(self, request: SynthesisRequest) -> None:
        assert self.requests.decode(self.requests.encode(request)) == request
        key = routing_key(request)
        assert len(key) == 32 and key == routing_key(request)
        voice = (
            ResolvedVoice(preset=request.voice.name)
            if isinstance(request.voice, PresetVoice)
            else (ResolvedVoice(content_id="0" * 64, transcript=getattr(request.voice, "transcript", "")))
        )
        inputs = CacheKeyInputs.for_request(
            request, engine="fuzz", model_version="1", voice=voice, postprocess="lufs=-16.0;tp=-1.0"
        )
        digest = cache_key(inputs)
        assert len(digest) == 64 and digest == cache_key(inputs)

    def _check_publishable(self, value: bytes, request_id: str) -> None:
        assert len(value) < KAFKA_MESSAGE_BYTES
        assert self.results.decode(value).request_id == request_id


_AUDIO = CachedAudio(
    uri="s3://tts-audio/audio/sha256/00/" + "0" * 64 + ".wav",
    content_type="audio/wav",
    size_bytes=1000,
    duration_seconds=1.0,
    sample_rate_hz=24000,
    sha256="0" * 64,
    created_at_ms=1_700_000_000_000,
)


class AllowListTarget:
    """`PromptAllowList.check(uri)`: either VoiceNotAllowed, or a bucket and key that a plain
    (non-normalising) S3 GET reads inside an allow-listed prefix."""

    def __init__(self) -> None:
        self.allowlist = PromptAllowList(ALLOWED_PROMPTS)

    def __call__(self, uri: str) -> Outcome:
        try:
            bucket, key = self.allowlist.check(uri)
        except VoiceNotAllowed:
            return Outcome("failed", ErrorCode.VOICE_NOT_ALLOWED.value)
        assert uri == f"s3://{bucket}/{key}", "what is fetched is exactly what was named"
        assert any(f"{bucket}/{key}".startswith(entry) for entry in ALLOWED_PROMPTS)
        segments = key.split("/")
        assert "" not in segments and "." not in segments and ".." not in segments
        assert not any(ch in key for ch in "%\\?#")
        assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in key)
        assert len(key.encode("utf-8")) <= MAX_KEY_BYTES
        return Outcome("accepted")
