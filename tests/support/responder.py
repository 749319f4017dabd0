"""A stand-in worker for producer-side tests: answers every request with a result event.

It reads the request lanes with read_committed and publishes results inside Kafka transactions,
as the real worker does, but synthesises nothing, so client, subscriber and backfill tests stay
fast and do not depend on the worker's own state. Texts containing "FAIL" get a FAILED result.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Producer

from schemas.codec import request_codec, result_codec
from schemas.errors import DecodeError
from schemas.model import (
    AudioDescriptor,
    ErrorCode,
    ResultError,
    ResultStatus,
    SynthesisRequest,
    SynthesisResult,
    Timings,
    now_ms,
)
from schemas.topics import TopicNames
from tests.support.stack import unique_name


def default_answer(request: SynthesisRequest) -> SynthesisResult:
    failed = "FAIL" in request.text
    return SynthesisResult(
        request_id=request.request_id,
        status=ResultStatus.FAILED if failed else ResultStatus.SUCCEEDED,
        engine="responder",
        model_version="test",
        timings=Timings(queued_ms=1, synthesis_ms=0, total_ms=2),
        completed_at_ms=now_ms(),
        cache_key="0" * 64,
        audio=None
        if failed
        else AudioDescriptor(
            uri=f"s3://tts-audio/test/{request.request_id}.wav",
            content_type="audio/wav",
            size_bytes=44,
            duration_seconds=0.5,
            sample_rate_hz=22050,
            sha256="0" * 64,
        ),
        error=ResultError(ErrorCode.ENGINE_ERROR, "asked to fail", retryable=True) if failed else None,
        attributes=dict(request.attributes),
    )


class Responder:
    def __init__(
        self,
        kafka_config: dict[str, Any],
        request_topics: list[str],
        results_topic: str,
        answer: Callable[[SynthesisRequest], SynthesisResult] = default_answer,
    ) -> None:
        self._consumer = Consumer(
            {
                **kafka_config,
                "group.id": unique_name("responder"),
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.auto.commit": True,
            }
        )
        self._producer = Producer({**kafka_config, "transactional.id": unique_name("responder-tx")})
        self._topics = request_topics
        self._results = results_topic
        self._answer = answer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="responder")
        self.answered = 0
        self.undecodable = 0
        self.error: BaseException | None = None

    def start(self) -> Responder:
        self._producer.init_transactions(30)
        self._consumer.subscribe(self._topics)
        self._thread.start()
        return self

    def _run(self) -> None:
        codec, results = request_codec(), result_codec()
        try:
            while not self._stop.is_set():
                messages = self._consumer.consume(1000, timeout=0.2)
                answers = []
                for msg in messages:
                    if msg.error() is not None:
                        continue
                    try:
                        request = codec.decode(msg.value())
                    except DecodeError:
                        self.undecodable += 1
                        continue
                    answers.append((request.request_id.encode(), results.encode(self._answer(request))))
                if answers:
                    self._producer.begin_transaction()
                    for key, value in answers:
                        self._producer.produce(self._results, value, key)
                    self._producer.commit_transaction(30)
                    self.answered += len(answers)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self._consumer.close()
        if self.error is not None:
            raise self.error


def private_topics(make_topic: Callable[..., str], partitions: int = 3) -> TopicNames:
    """A full set of the contract's topics for one test (deleted by `make_topic` afterwards)."""
    return TopicNames(
        requests=make_topic("req", partitions),
        bulk=make_topic("bulk", partitions),
        results=make_topic("res", partitions),
        dlq=make_topic("dlq", 1),
        backfill_checkpoints=make_topic("ckpt", 1, {"cleanup.policy": "compact"}),
    )


def topics_env(topics: TopicNames) -> dict[str, str]:
    """The same topics as the TTS_* variables the CLI reads."""
    return {
        "TTS_TOPICS_REQUESTS": topics.requests,
        "TTS_TOPICS_BULK": topics.bulk,
        "TTS_TOPICS_RESULTS": topics.results,
        "TTS_TOPICS_DLQ": topics.dlq,
        "TTS_TOPICS_BACKFILL_CHECKPOINTS": topics.backfill_checkpoints,
    }
