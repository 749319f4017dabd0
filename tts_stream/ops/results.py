"""Find the result of one request without reading the whole results topic.

The worker writes `tts:result-index:<request id>` -> the result event's bytes to Redis after each
commit (TTL `TTS_RESULT_INDEX_TTL_S`, one day by default): a lookup is one GET. Redis rather than
a compacted topic because a lookup must be O(1) and the index is disposable (every entry is a
copy of a record in the results topic). Older results can still be found by scanning the topic
from a given time (`scan_results`), which reads only that window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.codec import AvroCodec
from schemas.errors import DecodeError
from schemas.model import SynthesisResult
from schemas.validation import REQUEST_ID
from tts_stream.ops.dlq import ResultLookup, format_ms
from tts_stream.ops.errors import BadArgument, OpsError
from tts_stream.ops.kafka_read import TopicReader


def check_request_id(request_id: str) -> str:
    if not REQUEST_ID.fullmatch(request_id):
        raise BadArgument(
            f"{request_id[:140]!r} is not a request id: 1-128 characters of A-Z a-z 0-9 . _ : - "
            "starting with a letter or digit"
        )
    return request_id


@dataclass(frozen=True)
class Found:
    result: SynthesisResult
    source: str  # "index" or "topic"


def lookup_index(index: ResultLookup, codec: AvroCodec[SynthesisResult], request_id: str) -> Found | None:
    raw = index.get(check_request_id(request_id))
    if raw is None:
        return None
    try:
        return Found(codec.decode(raw), "index")
    except DecodeError as exc:
        raise OpsError(f"the indexed result of {request_id} cannot be decoded: {exc}") from exc


def scan_results(
    reader: TopicReader, topic: str, codec: AvroCodec[SynthesisResult], request_id: str, since_ms: int
) -> Found | None:
    """The first result for `request_id` published at or after `since_ms` (records are keyed by
    request id, so only matching records are decoded)."""
    wanted = check_request_id(request_id).encode()
    for record in reader.read(topic, since_ms=since_ms):
        if record.key != wanted:
            continue
        try:
            return Found(codec.decode(record.value), "topic")
        except DecodeError:
            continue
    return None


def describe(result: SynthesisResult) -> dict[str, Any]:
    """The fields an operator asks about, as plain values."""
    audio = result.audio
    error = result.error
    return {
        "request_id": result.request_id,
        "status": result.status.value,
        "audio_uri": audio.uri if audio else None,
        "content_type": audio.content_type if audio else None,
        "duration_seconds": audio.duration_seconds if audio else None,
        "size_bytes": audio.size_bytes if audio else None,
        "error_code": error.code.value if error else None,
        "error_message": error.message if error else None,
        "retryable": error.retryable if error else None,
        "cache_hit": result.cache_hit,
        "cache_key": result.cache_key,
        "engine": result.engine,
        "model_version": result.model_version,
        "queued_ms": result.timings.queued_ms,
        "synthesis_ms": result.timings.synthesis_ms,
        "total_ms": result.timings.total_ms,
        "completed_at": format_ms(result.completed_at_ms),
        "worker_id": result.worker_id,
    }
