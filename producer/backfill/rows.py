"""From an input row to a `SynthesisRequest`: the columns a backfill file may have.

| column | meaning | default |
|---|---|---|
| text | what to say (required) | |
| voice | preset:NAME, registered:ID_OR_ALIAS or prompt:s3://BUCKET/KEY | --voice |
| prompt_text | transcript of the prompt audio (prompt: voices) | --prompt-text |
| language | BCP-47 tag | --language |
| style_instruction (or style) | natural-language style | --style |
| speed | 0.5-2.0 | --speed |
| output_format (or format) | wav, flac, ogg_opus, mp3 | --format |
| sample_rate_hz (or sample_rate) | Hz | --sample-rate |
| loudness_lufs | LUFS target | --loudness-lufs |
| reply_topic | topic for this row's result | none |
| attributes | JSON object of strings (CSV: a JSON string) | none |
| attr.KEY | one attribute (CSV and Parquet friendly) | none |

CSV cells are strings; numbers are parsed here, and a cell that is not a number is reported
against its column. An unknown column is an error (a typo like "langauge" must not be ignored).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from producer.errors import InvalidRequest
from producer.requests import build_request
from schemas.model import SynthesisRequest

ATTRIBUTE_PREFIX = "attr."
JOB_ATTRIBUTE = "tts.backfill.job"
LINE_ATTRIBUTE = "tts.backfill.line"

_ALIASES = {
    "style": "style_instruction",
    "format": "output_format",
    "sample_rate": "sample_rate_hz",
}
KNOWN_COLUMNS = frozenset(
    {
        "text",
        "voice",
        "prompt_text",
        "language",
        "style_instruction",
        "speed",
        "output_format",
        "sample_rate_hz",
        "loudness_lufs",
        "reply_topic",
        "attributes",
        *_ALIASES,
    }
)


@dataclass(frozen=True, slots=True)
class RowDefaults:
    """Values for columns a row leaves out (the command line's --voice, --language, ...)."""

    voice: str | None = None
    prompt_text: str | None = None
    language: str | None = None
    style_instruction: str | None = None
    speed: float = 1.0
    output_format: str = "wav"
    sample_rate_hz: int | None = None
    loudness_lufs: float | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """What a job's identity depends on besides the file: different defaults, other audio."""
        return json.dumps(
            {
                "voice": self.voice,
                "prompt_text": self.prompt_text,
                "language": self.language,
                "style_instruction": self.style_instruction,
                "speed": self.speed,
                "output_format": self.output_format,
                "sample_rate_hz": self.sample_rate_hz,
                "loudness_lufs": self.loudness_lufs,
                "attributes": dict(sorted(self.attributes.items())),
            },
            sort_keys=True,
        )


def _float(column: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise InvalidRequest.one(column, f"{value[:40]!r} is not a number") from None
        if not math.isfinite(number):
            raise InvalidRequest.one(column, f"{value!r} is not a finite number")
        return number
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest.one(column, f"must be a number, not {type(value).__name__}")
    return float(value)


def _int(column: str, value: Any) -> int:
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise InvalidRequest.one(column, f"{value[:40]!r} is not a whole number") from None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest.one(column, f"must be a whole number, not {value!r}"[:100])
    return value


def _string(column: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidRequest.one(column, f"must be a string, not {type(value).__name__}")
    return value


def _attributes(fields: Mapping[str, Any], defaults: RowDefaults) -> dict[str, str]:
    attributes = dict(defaults.attributes)
    given = fields.get("attributes")
    if isinstance(given, str):  # CSV: a JSON object in one cell
        try:
            given = json.loads(given)
        except ValueError:
            raise InvalidRequest.one("attributes", "is not a JSON object") from None
    if given is not None:
        if isinstance(given, list):  # Parquet map columns arrive as (key, value) pairs
            given = dict(given)
        if not isinstance(given, Mapping):
            raise InvalidRequest.one("attributes", f"must be an object, not {type(given).__name__}")
        for key, value in given.items():
            attributes[str(key)] = _string(f"attributes.{key}", value)
    for column, value in fields.items():
        if column.startswith(ATTRIBUTE_PREFIX):
            attributes[column[len(ATTRIBUTE_PREFIX) :]] = _string(column, value)
    return attributes


def row_to_request(
    fields: Mapping[str, Any],
    defaults: RowDefaults,
    *,
    request_id: str,
    created_at_ms: int,
    job_attributes: Mapping[str, str] | None = None,
) -> SynthesisRequest:
    """Build the request of one row; `InvalidRequest` names the column on a bad value."""
    unknown = [c for c in fields if c not in KNOWN_COLUMNS and not c.startswith(ATTRIBUTE_PREFIX)]
    if unknown:
        raise InvalidRequest.one(unknown[0], "is not a known column (see docs/producer.md)")
    values = {_ALIASES.get(k, k): v for k, v in fields.items()}
    if "text" not in values:
        raise InvalidRequest.one("text", "is missing")
    voice = values.get("voice", defaults.voice)
    if voice is None:
        raise InvalidRequest.one("voice", "is missing (give a voice column or --voice)")
    prompt_text = values.get("prompt_text", defaults.prompt_text)
    if prompt_text is not None and not _string("voice", voice).lower().startswith("prompt:"):
        prompt_text = None  # a default transcript applies to prompt voices only
    attributes = _attributes(fields, defaults)
    if job_attributes:
        attributes.update(job_attributes)
    sample_rate = values.get("sample_rate_hz", defaults.sample_rate_hz)
    loudness = values.get("loudness_lufs", defaults.loudness_lufs)
    language = values.get("language", defaults.language)
    style = values.get("style_instruction", defaults.style_instruction)
    reply_topic = values.get("reply_topic")
    return build_request(
        _string("text", values["text"]),
        _string("voice", voice),
        prompt_text=None if prompt_text is None else _string("prompt_text", prompt_text),
        request_id=request_id,
        language=None if language is None else _string("language", language),
        style_instruction=None if style is None else _string("style_instruction", style),
        speed=_float("speed", values.get("speed", defaults.speed)),
        output_format=_string("output_format", values.get("output_format", defaults.output_format)),
        sample_rate_hz=None if sample_rate is None else _int("sample_rate_hz", sample_rate),
        loudness_lufs=None if loudness is None else _float("loudness_lufs", loudness),
        reply_topic=None if reply_topic is None else _string("reply_topic", reply_topic),
        attributes=attributes,
        created_at_ms=created_at_ms,
    )
