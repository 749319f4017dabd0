"""Intake: turn a consumed message into work, or answer it at once.

In order, each step cheap and local (no I/O): decode (undecodable → dead letter), validate
(invalid → failed result, no retry), check the deployment's allow-lists and the engine's
capabilities (UNSUPPORTED, VOICE_NOT_FOUND, ...), check the deadline (EXPIRED before any engine
time is spent). What survives goes to the pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from consumer.core.messages import DeadLetter, InboundMessage, Job
from consumer.core.results import ResultFactory
from consumer.core.tracing import LocalTracer, Tracer, parse_traceparent
from consumer.engine import EngineCapabilities
from schemas import headers
from schemas.errors import DecodeError, DecodeReason
from schemas.model import ErrorCode, PresetVoice, SynthesisRequest
from schemas.topics import Lane
from schemas.validation import RequestLimits, request_problems

TRACEPARENT_HEADER = headers.TRACEPARENT


class DecodeRetryLater(Exception):
    """The bytes may be fine but a dependency (the schema registry) is down: retry the offset."""

    def __init__(self, error: DecodeError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True, slots=True)
class IntakePolicy:
    limits: RequestLimits
    capabilities: EngineCapabilities
    reply_topic_allowlist: frozenset[str]


class Intake:
    def __init__(
        self,
        decode: Callable[[bytes], SynthesisRequest],
        results: ResultFactory,
        policy: IntakePolicy,
        *,
        tracer: Tracer | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._tracer: Tracer = tracer or LocalTracer()
        self._decode = decode
        self._results = results
        self._policy = policy
        self._clock_ms = clock_ms

    def take(self, message: InboundMessage, lane: Lane) -> Job:
        """A job: either answered already (job.done) or ready for the pipeline."""
        job = Job(message, lane)
        job.span = self._tracer.start(
            parse_traceparent(message.header(TRACEPARENT_HEADER)),
            {
                "messaging.destination.name": message.topic,
                "messaging.kafka.partition": message.partition,
                "messaging.kafka.offset": message.offset,
                "tts.lane": lane.value,
            },
        )
        job.traceparent = job.span.context.traceparent
        if message.value is None:
            job.answer(DeadLetter(DecodeReason.EMPTY.value, "message has no value (tombstone)"))
            return job
        try:
            job.request = self._decode(message.value)
        except DecodeError as exc:
            if exc.retryable:
                raise DecodeRetryLater(exc) from exc
            job.answer(DeadLetter(exc.reason.value, exc.detail))
            return job
        self._check(job)
        return job

    def _check(self, job: Job) -> None:
        request = job.request
        assert request is not None
        problems = request_problems(request, self._policy.limits)
        if problems:
            first = problems[0]
            detail = "; ".join(str(p) for p in problems)
            job.answer(self._results.failure(job, ErrorCode(first.code), detail, allow_reply_topic=False))
            return
        if request.reply_topic and request.reply_topic not in self._policy.reply_topic_allowlist:
            job.answer(
                self._results.failure(
                    job,
                    ErrorCode.REPLY_TOPIC_NOT_ALLOWED,
                    f"reply_topic {request.reply_topic!r} is not on this deployment's allow-list",
                    allow_reply_topic=False,
                )
            )
            return
        unsupported = self.capability_problem(request)
        if unsupported is not None:
            job.answer(self._results.failure(job, unsupported[0], unsupported[1]))
            return
        if self.expired(request):
            job.answer(
                self._results.failure(
                    job, ErrorCode.EXPIRED, "the request's deadline passed before it was taken"
                )
            )

    def expired(self, request: SynthesisRequest) -> bool:
        return request.deadline_ms is not None and request.deadline_ms <= self._clock_ms()

    def capability_problem(self, request: SynthesisRequest) -> tuple[ErrorCode, str] | None:
        caps = self._policy.capabilities
        voice = request.voice
        if isinstance(voice, PresetVoice):
            base = voice.name.split("+", 1)[0].lower()
            if caps.presets and base not in caps.presets:
                return ErrorCode.VOICE_NOT_FOUND, f"this engine has no preset voice {voice.name!r}"
        elif not caps.cloning:
            return ErrorCode.UNSUPPORTED, "this engine cannot clone voices; use a preset voice"
        if request.style_instruction is not None and not caps.instruct:
            return ErrorCode.UNSUPPORTED, "this engine does not follow style instructions"
        if request.language is not None and caps.languages and not caps.supports_language(request.language):
            return ErrorCode.UNSUPPORTED_LANGUAGE, f"this engine does not speak {request.language!r}"
        if len(request.text) > caps.max_text_chars:
            return ErrorCode.TEXT_TOO_LONG, f"this engine takes at most {caps.max_text_chars} characters"
        return None
