"""Results for people and for scripts: one readable line, or a JSON object (docs/producer.md)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from schemas.model import SynthesisResult


def result_to_json(result: SynthesisResult) -> dict[str, Any]:
    """The result as plain JSON types, with the model's field names (times in epoch ms)."""
    data = dataclasses.asdict(result)  # enums are StrEnums: they serialise as their values
    data["attributes"] = dict(result.attributes)
    return data


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
