"""Reading backfill input: JSON Lines, CSV and Parquet, one row at a time.

Every row carries the line number a person would look for in the file: the physical line for
JSON Lines, the line where the record starts for CSV (the header is line 1; a quoted field may
span lines), and the 1-based row number for Parquet. Blank lines are not rows. Memory stays
flat: nothing is read ahead beyond one Parquet batch.
"""

from __future__ import annotations

import csv
import enum
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producer.errors import BackfillError

PARQUET_BATCH_ROWS = 8192


class SourceFormat(enum.StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"


_SUFFIXES = {
    ".jsonl": SourceFormat.JSONL,
    ".ndjson": SourceFormat.JSONL,
    ".json": SourceFormat.JSONL,
    ".csv": SourceFormat.CSV,
    ".parquet": SourceFormat.PARQUET,
    ".pq": SourceFormat.PARQUET,
}


@dataclass(frozen=True, slots=True)
class Row:
    """One record of the input. `fields` is None when the record could not be parsed."""

    ordinal: int  # 0-based position among the rows (what checkpoints count)
    line: int  # what people see: line number (JSONL, CSV) or row number (Parquet)
    fields: dict[str, Any] | None
    error: str | None = None


def detect_format(path: Path, explicit: str | None = None) -> SourceFormat:
    if explicit:
        return SourceFormat(explicit.lower())
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise BackfillError(
            f"cannot tell the format of {path.name} from its suffix; pass --input-format jsonl|csv|parquet"
        )
    return found


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_rows(path: Path, fmt: SourceFormat) -> Iterator[Row]:
    if fmt is SourceFormat.JSONL:
        return _jsonl_rows(path)
    if fmt is SourceFormat.CSV:
        return _csv_rows(path)
    return _parquet_rows(path)


def _jsonl_rows(path: Path) -> Iterator[Row]:
    ordinal = 0
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if raw.isspace():
                continue
            try:
                value = json.loads(raw)
            except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
                yield Row(ordinal, line_no, None, f"not valid JSON ({_short(exc)})")
            else:
                if isinstance(value, dict):
                    yield Row(ordinal, line_no, value)
                else:
                    yield Row(ordinal, line_no, None, f"expected a JSON object, got {type(value).__name__}")
            ordinal += 1


def _csv_rows(path: Path) -> Iterator[Row]:
    with path.open("r", encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as exc:
            raise BackfillError(f"line 1: cannot read the CSV header ({_short(exc)})") from exc
        names = [name.strip() for name in header]
        if len(set(names)) != len(names):
            raise BackfillError(f"line 1: the CSV header repeats a column: {names}")
        ordinal = 0
        previous_end = reader.line_num
        while True:
            start = previous_end + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                # Fatal, not a bad row: after a broken quote the reader cannot tell where the
                # following records start, so skipping it would silently lose rows.
                raise BackfillError(f"line {start}: not valid CSV ({_short(exc)})") from exc
            previous_end = reader.line_num
            if not record or all(not cell.strip() for cell in record):
                continue
            if len(record) != len(names):
                yield Row(ordinal, start, None, f"has {len(record)} fields; the header has {len(names)}")
            else:
                # An empty cell means "not given": the command-line default applies.
                yield Row(ordinal, start, {n: v for n, v in zip(names, record, strict=True) if v != ""})
            ordinal += 1


def _parquet_rows(path: Path) -> Iterator[Row]:
    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError as exc:
        raise BackfillError("reading Parquet needs pyarrow: pip install 'tts-stream[parquet]'") from exc
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid and friends
        raise BackfillError(f"{path.name} is not a readable Parquet file ({_short(exc)})") from exc
    ordinal = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
        for record in batch.to_pylist():
            yield Row(ordinal, ordinal + 1, {k: v for k, v in record.items() if v is not None})
            ordinal += 1


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 120 else text[:117] + "..."
