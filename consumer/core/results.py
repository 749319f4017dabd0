"""Building result events: every way a job can be answered goes through here."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from consumer.core.messages import Answer, Job
from consumer.ports import CachedAudio
from schemas.model import AudioDescriptor, ErrorCode, ResultError, ResultStatus, SynthesisResult, Timings

Presigner = Callable[[str], tuple[str, int] | None]  # object URI -> (url, expires_at_ms)

# Every result must be publishable whatever the request held: echoes of an invalid request are
# bounded (valid ids and attributes always fit), timings stay inside Avro's long.
MAX_ECHOED_ID_CHARS = 128
MAX_ECHOED_ATTRIBUTES = 64
MAX_ECHOED_ATTRIBUTE_CHARS = 64 * 1024
LONG_MAX = 2**63 - 1


def _echoed_id(request_id: str) -> str:
    return request_id[:MAX_ECHOED_ID_CHARS]


def _echoed_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    """The request's attributes, or none when they are beyond any valid request's (a hostile
    request must not make its own answer too large for a Kafka message)."""
    if len(attributes) > MAX_ECHOED_ATTRIBUTES:
        return {}
    if sum(len(k) + len(v) for k, v in attributes.items()) > MAX_ECHOED_ATTRIBUTE_CHARS:
        return {}
    return dict(attributes)


def _ms(value: int) -> int:
    return min(max(0, value), LONG_MAX)


class ResultFactory:
    def __init__(
        self,
        *,
        engine: str,
        model_version: str,
        worker_id: str,
        results_topic: str,
        presigner: Presigner | None = None,
    ) -> None:
        self._engine = engine
        self._model_version = model_version
        self._worker_id = worker_id
        self._results_topic = results_topic
        self._presigner = presigner

    def _topic_for(self, job: Job, *, allow_reply_topic: bool = True) -> str:
        request = job.request
        if allow_reply_topic and request is not None and request.reply_topic:
            return request.reply_topic
        return self._results_topic

    def _timings(self, job: Job, synthesis_ms: int, now_ms: int) -> Timings:
        created = job.request.created_at_ms if job.request is not None else job.taken_at_ms
        return Timings(
            queued_ms=_ms(job.taken_at_ms - created),
            synthesis_ms=_ms(synthesis_ms),
            total_ms=_ms(now_ms - created),
        )

    def failure(
        self,
        job: Job,
        code: ErrorCode,
        message: str,
        *,
        retryable: bool = False,
        allow_reply_topic: bool = True,
    ) -> Answer:
        now_ms = int(time.time() * 1000)
        request = job.request
        result = SynthesisResult(
            request_id=_echoed_id(request.request_id)
            if request is not None
            else f"unknown@{job.tp.topic}/{job.tp.partition}/{job.offset}",
            status=ResultStatus.FAILED,
            engine=self._engine,
            model_version=self._model_version,
            timings=self._timings(job, 0, now_ms),
            completed_at_ms=now_ms,
            cache_key=job.cache_key,
            error=ResultError(code, message, retryable),
            attributes=_echoed_attributes(request.attributes) if request is not None else {},
            traceparent=job.traceparent,
            worker_id=self._worker_id,
        )
        return Answer(result, self._topic_for(job, allow_reply_topic=allow_reply_topic))

    def success(self, job: Job, audio: CachedAudio, *, cache_hit: bool, synthesis_ms: int) -> Answer:
        now_ms = int(time.time() * 1000)
        request = job.request
        assert request is not None, "only decoded requests can succeed"
        presigned = self._presigner(audio.uri) if self._presigner is not None else None
        result = SynthesisResult(
            request_id=request.request_id,
            status=ResultStatus.SUCCEEDED,
            engine=self._engine,
            model_version=self._model_version,
            timings=self._timings(job, synthesis_ms, now_ms),
            completed_at_ms=now_ms,
            cache_key=job.cache_key,
            audio=AudioDescriptor(
                uri=audio.uri,
                content_type=audio.content_type,
                size_bytes=audio.size_bytes,
                duration_seconds=audio.duration_seconds,
                sample_rate_hz=audio.sample_rate_hz,
                sha256=audio.sha256,
                presigned_url=presigned[0] if presigned else None,
                presigned_url_expires_at_ms=presigned[1] if presigned else None,
            ),
            cache_hit=cache_hit,
            attributes=dict(request.attributes),
            traceparent=job.traceparent,
            worker_id=self._worker_id,
        )
        return Answer(result, self._topic_for(job))
