"""Times on the command line: `2h` (that long ago), an ISO-8601 time, or epoch milliseconds."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from tts_stream.ops.errors import BadArgument

_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration_s(text: str) -> float:
    """`90s`, `15m`, `2h`, `7d`, `500ms` (a bare number is seconds)."""
    value = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return float(value)
    match = _DURATION.fullmatch(value)
    if match is None:
        raise BadArgument(f"{text!r} is not a duration such as 30s, 15m, 2h or 7d")
    return float(match["n"]) * _UNIT_S[match["unit"]]


def parse_time_ms(text: str, *, now: float | None = None) -> int:
    """A point in time as epoch milliseconds: `2h` means two hours ago."""
    value = text.strip()
    now_s = time.time() if now is None else now
    if _DURATION.fullmatch(value):
        return int((now_s - parse_duration_s(value)) * 1000)
    if re.fullmatch(r"\d{12,}", value):
        return int(value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadArgument(
            f"{text!r} is not a time: use a duration ago (30m, 2h, 7d), an ISO-8601 time "
            "(2026-05-01T12:00:00Z) or epoch milliseconds"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return "0s"
    s = round(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
