"""What the console shows and does, over tts_stream.ops and the clients the worker uses.

Every method blocks (Kafka, Redis, S3); the web layer calls them from worker threads.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from consumer.settings import WorkerSettings
from schemas.model import SynthesisResult
from tts_stream.ops import dlq as dlq_ops
from tts_stream.ops.errors import BadArgument, NotFound, OpsError, ServiceUnavailable
from tts_stream.ops.kafka_read import TopicReader
from tts_stream.ops.keda import ChartScaling
from tts_stream.ops.lag import LagReader, LagReport, Snapshot, report
from tts_stream.ops.results import check_request_id
from tts_stream.ops.settings import kafka_config, redis_client, s3_client

if TYPE_CHECKING:
    from producer.client import TtsProducer

log = logging.getLogger(__name__)

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_RATE_WINDOW_S = (5.0, 600.0)  # compare with a reading at least 5 s and at most 10 min old
AUDIO_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class AudioStream:
    status: int  # 200 or 206
    content_type: str
    length: int
    total: int
    content_range: str | None
    chunks: Iterator[bytes]


@dataclass(frozen=True)
class Submitted:
    request_id: str
    topic: str


class Backend(Protocol):
    """The console's view of the deployment (a fake in unit tests)."""

    def lanes(self) -> LagReport: ...

    def recent_results(self, limit: int) -> list[SynthesisResult]: ...

    def result(self, request_id: str) -> SynthesisResult | None: ...

    def audio(self, request_id: str, range_header: str | None) -> AudioStream: ...

    def dead_letters(self, flt: dlq_ops.DlqFilter, limit: int) -> dlq_ops.Listing: ...

    def dead_letter(self, letter_id: str) -> tuple[dlq_ops.DeadLetter, dlq_ops.Decoded]: ...

    def replay(self, letter_id: str) -> dlq_ops.PlannedReplay: ...

    def submit(
        self, text: str, voice: str, language: str | None, output_format: str, lane: str
    ) -> Submitted: ...


def parse_range(header: str | None, total: int) -> tuple[int, int] | None:
    """A single `bytes=a-b` range as inclusive (first, last); None: the whole object.

    Raises BadArgument for a range that cannot be satisfied (answered 416)."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or (not match[1] and not match[2]):
        return None  # multiple or malformed ranges: serve the whole object (allowed by RFC 9110)
    if not match[1]:  # suffix: the last N bytes
        n = int(match[2])
        if n == 0:
            raise BadArgument("empty suffix range")
        return max(0, total - n), total - 1
    first = int(match[1])
    last = int(match[2]) if match[2] else total - 1
    if first >= total or last < first:
        raise BadArgument(f"range {header} outside 0-{total - 1}")
    return first, min(last, total - 1)


class LiveBackend:
    """The real thing: Kafka, Redis and S3 as configured by the worker's TTS_* settings."""

    def __init__(self, settings: WorkerSettings, chart: ChartScaling | None = None) -> None:
        from consumer.adapters.redis_store import RedisResultIndex
        from schemas.codec import request_codec, result_codec

        self._settings = settings
        self._kafka = kafka_config(settings)
        self._chart = chart or ChartScaling()
        self._redis = redis_client(settings)
        self._index = RedisResultIndex(self._redis)
        self._s3: Any = None
        self._result_codec = result_codec()
        self._request_codec = request_codec()
        self._lag_reader: LagReader | None = None
        self._history: collections.deque[Snapshot] = collections.deque(maxlen=256)
        self._seen: collections.OrderedDict[str, SynthesisResult] = collections.OrderedDict()
        self._producer: TtsProducer | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lanes

    def lanes(self) -> LagReport:
        with self._lock:
            if self._lag_reader is None:
                self._lag_reader = LagReader(self._kafka, self._settings.topics, self._settings.group_id)
            reader = self._lag_reader
        snapshot = reader.snapshot()
        with self._lock:
            previous = next(
                (
                    s
                    for s in self._history
                    if _RATE_WINDOW_S[0] <= snapshot.taken_at - s.taken_at <= _RATE_WINDOW_S[1]
                ),
                None,
            )
            while self._history and snapshot.taken_at - self._history[0].taken_at > _RATE_WINDOW_S[1]:
                self._history.popleft()
            self._history.append(snapshot)
        return report(snapshot, self._chart, previous)

    # ------------------------------------------------------------------ results

    def _remember(self, result: SynthesisResult) -> None:
        with self._lock:
            self._seen[result.request_id] = result
            self._seen.move_to_end(result.request_id)
            while len(self._seen) > 1000:
                self._seen.popitem(last=False)

    def recent_results(self, limit: int) -> list[SynthesisResult]:
        from schemas.errors import DecodeError

        topic = self._settings.topics.results
        found: list[SynthesisResult] = []
        with TopicReader(self._kafka, timeout_s=10) as reader:
            parts = reader.partitions(topic)
            ends = reader.end_offsets(topic, parts)
            starts = {p: max(low, high - limit) for p, (low, high) in ends.items()}
            for record in reader.read(topic, starts=starts, partitions=parts):
                try:
                    found.append(self._result_codec.decode(record.value))
                except DecodeError:
                    continue
        found.sort(key=lambda r: r.completed_at_ms, reverse=True)
        for result in found[:limit]:
            self._remember(result)
        return found[:limit]

    def result(self, request_id: str) -> SynthesisResult | None:
        from consumer.errors import CacheUnavailable
        from schemas.errors import DecodeError

        check_request_id(request_id)
        try:
            raw = self._index.get(request_id)
        except CacheUnavailable as exc:
            raise ServiceUnavailable(str(exc)) from exc
        if raw is not None:
            try:
                result = self._result_codec.decode(raw)
            except DecodeError as exc:
                raise OpsError(f"the indexed result of {request_id} cannot be decoded") from exc
            self._remember(result)
            return result
        with self._lock:
            return self._seen.get(request_id)

    def audio(self, request_id: str, range_header: str | None) -> AudioStream:
        """The result's audio, read from S3 through the console (the browser never sees S3)."""
        from botocore.exceptions import BotoCoreError, ClientError

        result = self.result(request_id)
        if result is None or result.audio is None:
            raise NotFound(f"no audio for request {request_id}")
        bucket, key = self._audio_location(result.audio.uri)
        if self._s3 is None:
            self._s3 = s3_client(self._settings)
        total = result.audio.size_bytes
        wanted = parse_range(range_header, total)
        try:
            if wanted is None:
                response = self._s3.get_object(Bucket=bucket, Key=key)
            else:
                response = self._s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={wanted[0]}-{wanted[1]}")
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(f"the audio object of {request_id} is gone") from exc
            raise ServiceUnavailable(f"S3 refused the audio of {request_id}: {code}") from exc
        except BotoCoreError as exc:
            raise ServiceUnavailable(f"S3 did not answer: {exc}") from exc
        body = response["Body"]
        length = int(response["ContentLength"])

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(AUDIO_CHUNK_BYTES)
            finally:
                body.close()

        content_type = result.audio.content_type or "application/octet-stream"
        if wanted is None:
            return AudioStream(200, content_type, length, total, None, chunks())
        return AudioStream(
            206, content_type, length, total, f"bytes {wanted[0]}-{wanted[0] + length - 1}/{total}", chunks()
        )

    def _audio_location(self, uri: str) -> tuple[str, str]:
        """Only objects the workers write (audio bucket and prefix) are served."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        settings = self._settings
        if not uri.startswith("s3://") or bucket != settings.s3_audio_bucket:
            raise NotFound("the result's audio is not in the audio bucket")
        if not key.startswith(settings.s3_audio_prefix) or ".." in key.split("/"):
            raise NotFound("the result's audio is outside the audio prefix")
        return bucket, key

    # ------------------------------------------------------------------ dead letters

    def dead_letters(self, flt: dlq_ops.DlqFilter, limit: int) -> dlq_ops.Listing:
        with TopicReader(self._kafka) as reader:
            return dlq_ops.list_dead_letters(reader, self._settings.topics.dlq, flt, limit)

    def dead_letter(self, letter_id: str) -> tuple[dlq_ops.DeadLetter, dlq_ops.Decoded]:
        with TopicReader(self._kafka) as reader:
            letter = dlq_ops.fetch(reader, self._settings.topics.dlq, letter_id)
        return letter, dlq_ops.decode(letter, self._request_codec)

    def replay(self, letter_id: str) -> dlq_ops.PlannedReplay:
        letter, _ = self.dead_letter(letter_id)
        replayer = dlq_ops.Replayer(
            self._kafka, self._settings.topics, self._request_codec, results=self._index
        )
        (plan,) = replayer.replay([letter])
        return plan

    # ------------------------------------------------------------------ submit

    def submit(self, text: str, voice: str, language: str | None, output_format: str, lane: str) -> Submitted:
        from producer.client import TtsProducer
        from producer.errors import InvalidRequest, ProducerError
        from producer.settings import ProducerSettings

        with self._lock:
            if self._producer is None:
                self._producer = TtsProducer(
                    ProducerSettings.from_values(kafka=self._settings.kafka, topics=self._settings.topics)
                )
            producer = self._producer
            try:
                request_id = producer.submit(
                    text,
                    voice,
                    language=language or None,
                    output_format=output_format,
                    lane=lane,
                    attributes={"submitted-by": "tts-stream-console"},
                )
                producer.flush(15)
            except InvalidRequest as exc:
                raise BadArgument(str(exc)) from exc
            except ValueError as exc:  # an unknown lane
                raise BadArgument(str(exc)) from exc
            except ProducerError as exc:
                raise ServiceUnavailable(f"the request was not delivered: {exc}") from exc
        log.info("test request submitted from the console", extra={"request_id": request_id, "lane": lane})
        return Submitted(request_id, producer.topic_for(lane))

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                try:
                    self._producer.close(5)
                except Exception as exc:  # shutting down: report, do not raise
                    log.warning("console producer did not flush on close: %s", exc)
                self._producer = None
