"""W3C Trace Context: the `traceparent` header carried from a request to its result.

The worker's processing of a request is one span: its result carries a traceparent with the
request's trace id and a new span id, so a subscriber can join the result to the caller's trace.
Spans are exported through OpenTelemetry only when an exporter is configured (consumer/telemetry).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_INVALID_TRACE = "0" * 32
_INVALID_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class SpanContext:
    trace_id: str
    span_id: str
    flags: str = "01"

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def parse_traceparent(value: bytes | str | None) -> SpanContext | None:
    """The caller's span, or None when the header is absent or malformed (never an error)."""
    if value is None:
        return None
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    match = _TRACEPARENT.fullmatch(text.strip().lower())
    if match is None or match.group(1) == _INVALID_TRACE or match.group(2) == _INVALID_SPAN:
        return None
    return SpanContext(match.group(1), match.group(2), match.group(3))


def child_span(parent: SpanContext | None) -> SpanContext:
    """A new span under `parent` (or the root of a new trace)."""
    span_id = secrets.token_hex(8)
    if parent is None:
        return SpanContext(secrets.token_hex(16), span_id)
    return SpanContext(parent.trace_id, span_id, parent.flags)


class Span(Protocol):
    """One request's processing in this worker."""

    @property
    def context(self) -> SpanContext: ...

    def end(self, outcome: str, attributes: Mapping[str, str | int | bool]) -> None: ...


class Tracer(Protocol):
    def start(self, parent: SpanContext | None, attributes: Mapping[str, str | int]) -> Span: ...


@dataclass(frozen=True, slots=True)
class _LocalSpan:
    context: SpanContext

    def end(self, outcome: str, attributes: Mapping[str, str | int | bool]) -> None:
        return None


class LocalTracer:
    """No exporter configured: spans are only ids, so results still carry a valid traceparent
    that joins the caller's trace, at the cost of generating 8 random bytes."""

    def start(self, parent: SpanContext | None, attributes: Mapping[str, str | int]) -> Span:
        return _LocalSpan(child_span(parent))
