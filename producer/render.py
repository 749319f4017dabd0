"""Results for people and for scripts: one readable line, or a JSON object (docs/producer.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.model import SynthesisResult


def result_to_json(result: SynthesisResult) -> dict[str, Any]:
    """The result as plain JSON types, with the model's field names (times in epoch ms)."""
    audio = result.audio
    error = result.error
    return {
        "request_id": result.request_id,
        "status": result.status.value,
        "audio": None
        if audio is None
        else {
            "uri": audio.uri,
            "content_type": audio.content_type,
            "size_bytes": audio.size_bytes,
            "duration_seconds": audio.duration_seconds,
            "sample_rate_hz": audio.sample_rate_hz,
            "sha256": audio.sha256,
            "presigned_url": audio.presigned_url,
            "presigned_url_expires_at_ms": audio.presigned_url_expires_at_ms,
        },
        "error": None
        if error is None
        else {"code": error.code.value, "message": error.message, "retryable": error.retryable},
        "cache_key": result.cache_key,
        "cache_hit": result.cache_hit,
        "engine": result.engine,
        "model_version": result.model_version,
        "timings": {
            "queued_ms": result.timings.queued_ms,
            "synthesis_ms": result.timings.synthesis_ms,
            "total_ms": result.timings.total_ms,
        },
        "completed_at_ms": result.completed_at_ms,
        "attributes": dict(result.attributes),
        "traceparent": result.traceparent,
        "worker_id": result.worker_id,
    }


def _clock(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
    except (OverflowError, OSError, ValueError):
        return "??:??:??"


def result_line(result: SynthesisResult) -> str:
    """One line for a terminal: time, status, request id, then what happened."""
    head = f"{_clock(result.completed_at_ms)}  {result.status.value:9}  {result.request_id}"
    if result.audio is not None:
        audio = result.audio
        hit = "  cache hit" if result.cache_hit else ""
        return (
            f"{head}  {audio.uri}  {audio.duration_seconds:.2f} s audio{hit}"
            f"  total {result.timings.total_ms} ms  {result.engine}/{result.model_version}"
        )
    if result.error is not None:
        retry = " (retryable)" if result.error.retryable else ""
        return f"{head}  {result.error.code.value}{retry}: {result.error.message}"
    return head
