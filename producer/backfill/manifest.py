"""The manifest: one JSON object per input row, saying what became of it.

    {"line": 12, "request_id": "5f0c...", "status": "submitted"}
    {"line": 13, "status": "invalid", "error": "speed: must be between 0.5 and 2.0"}

After `--wait`, submitted rows become "succeeded" (with "audio_uri", "duration_seconds",
"cache_hit"), "failed" (with "error_code", "error", "retryable") or "pending" (no result in
time). Request ids are derived from the job id and the line, so the manifest of a resumed job
lists every row, including those submitted by earlier runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from schemas.model import SynthesisResult


@dataclass(frozen=True, slots=True)
class RowOutcome:
    """What `--wait` learnt about one row: the parts of its result the manifest keeps."""

    succeeded: bool
    audio_uri: str | None
    duration_seconds: float | None
    cache_hit: bool
    error_code: str | None
    error: str | None
    retryable: bool

    @classmethod
    def of(cls, result: SynthesisResult) -> RowOutcome:
        audio, error = result.audio, result.error
        return cls(
            succeeded=result.succeeded,
            audio_uri=None if audio is None else audio.uri,
            duration_seconds=None if audio is None else audio.duration_seconds,
            cache_hit=result.cache_hit,
            error_code=None if error is None else error.code.value,
            error=None if error is None else error.message,
            retryable=False if error is None else error.retryable,
        )


class ManifestWriter:
    """Streams manifest lines to `<manifest>.tmp`; `finish()` moves it into place."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tmp = path.with_name(path.name + ".tmp")
        self._file: IO[str] = self._tmp.open("w", encoding="utf-8", buffering=1 << 20)

    def submitted(self, line: int, request_id: str) -> None:
        # Formatted by hand: ids are UUIDs and lines integers, so no escaping is needed, and this
        # runs once per row.
        self._file.write(f'{{"line": {line}, "request_id": "{request_id}", "status": "submitted"}}\n')

    def invalid(self, line: int, error: str) -> None:
        self._file.write(json.dumps({"line": line, "status": "invalid", "error": error}) + "\n")

    def finish(self) -> None:
        self._file.close()
        self._tmp.replace(self.path)

    def discard(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


def merge_outcomes(path: Path, outcomes: Mapping[int, RowOutcome]) -> None:
    """Rewrite the manifest with what the results said, row by row (flat memory)."""
    tmp = path.with_name(path.name + ".tmp")
    with path.open(encoding="utf-8") as source, tmp.open("w", encoding="utf-8") as target:
        for text in source:
            entry = json.loads(text)
            if entry.get("status") in ("submitted", "pending", "succeeded", "failed"):
                outcome = outcomes.get(entry["line"])
                entry = {"line": entry["line"], "request_id": entry["request_id"]}
                if outcome is None:
                    entry["status"] = "pending"
                elif outcome.succeeded:
                    entry.update(
                        status="succeeded",
                        audio_uri=outcome.audio_uri,
                        duration_seconds=outcome.duration_seconds,
                        cache_hit=outcome.cache_hit,
                    )
                else:
                    entry.update(
                        status="failed",
                        error_code=outcome.error_code,
                        error=outcome.error,
                        retryable=outcome.retryable,
                    )
            target.write(json.dumps(entry, ensure_ascii=False) + "\n")
    tmp.replace(path)
