"""Backfill input: formats, line numbers, columns, rates and request ids."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from producer.backfill.job import BACKFILL_NAMESPACE, RequestIds
from producer.backfill.rate import TokenBucket, parse_rate
from producer.backfill.rows import RowDefaults, row_to_request
from producer.backfill.sources import SourceFormat, detect_format, read_rows
from producer.errors import BackfillError, InvalidRequest
from schemas.model import AudioFormat, PresetVoice, PromptAudioVoice

# ------------------------------------------------------------------------------------------- sources


def test_jsonl_rows_carry_physical_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a"}\n\n   \n{"text": "b"}\n[1, 2]\n{broken\n{"text": "c"}')
    rows = list(read_rows(path, SourceFormat.JSONL))
    assert [(r.ordinal, r.line) for r in rows] == [(0, 1), (1, 4), (2, 5), (3, 6), (4, 7)]
    assert rows[1].fields == {"text": "b"}
    assert rows[2].error == "expected a JSON object, got list"
    assert rows[3].error is not None
    assert rows[3].error.startswith("not valid JSON")
    assert rows[4].fields == {"text": "c"}


def test_jsonl_with_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe"}\n')
    rows = list(read_rows(path, SourceFormat.JSONL))
    assert rows[0].fields == {"text": "ok"}
    assert rows[1].error is not None
    assert rows[1].line == 2


def test_csv_rows_start_where_the_record_starts(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(
        "\ufefftext,voice,speed\n"
        "one,preset:en-us,1.0\n"
        '"two\nlines",preset:en-us,\n'
        "\n"
        "three,preset:en-us\n"
        "four,preset:en-us,1.5\n",
        encoding="utf-8",
    )
    rows = list(read_rows(path, SourceFormat.CSV))
    assert [r.line for r in rows] == [2, 3, 6, 7]
    assert rows[1].fields == {"text": "two\nlines", "voice": "preset:en-us"}, "empty cells are absent"
    assert rows[2].error == "has 2 fields; the header has 3"
    assert rows[3].fields == {"text": "four", "voice": "preset:en-us", "speed": "1.5"}


def test_csv_with_a_broken_quote_is_fatal_not_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('text\n"unterminated\n')
    with pytest.raises(BackfillError, match="line 2"):
        list(read_rows(path, SourceFormat.CSV))


def test_csv_header_may_not_repeat_a_column(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("text,text\na,b\n")
    with pytest.raises(BackfillError, match="repeats"):
        list(read_rows(path, SourceFormat.CSV))


def test_parquet_rows_are_numbered_from_one(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    table = pa.table(
        {
            "text": ["a", "b", "c"],
            "speed": [1.0, None, 1.5],
            "attributes": pa.array([[("k", "v")], None, []], type=pa.map_(pa.string(), pa.string())),
        }
    )
    pq.write_table(table, path, row_group_size=2)
    rows = list(read_rows(path, SourceFormat.PARQUET))
    assert [(r.ordinal, r.line) for r in rows] == [(0, 1), (1, 2), (2, 3)]
    assert rows[1].fields == {"text": "b"}
    request = row_to_request(
        rows[0].fields or {}, RowDefaults(voice="preset:en-us"), request_id="r", created_at_ms=0
    )
    assert request.attributes == {"k": "v"}


def test_format_from_suffix_or_option(tmp_path: Path) -> None:
    assert detect_format(Path("x.NDJSON")) is SourceFormat.JSONL
    assert detect_format(Path("x.csv")) is SourceFormat.CSV
    assert detect_format(Path("x.txt"), "csv") is SourceFormat.CSV
    with pytest.raises(BackfillError, match="--input-format"):
        detect_format(Path("x.txt"))


# ---------------------------------------------------------------------------------------------- rows


def _request(fields: dict[str, Any], defaults: RowDefaults | None = None) -> Any:
    return row_to_request(fields, defaults or RowDefaults(), request_id="r-1", created_at_ms=5)


def test_defaults_fill_what_a_row_leaves_out() -> None:
    defaults = RowDefaults(voice="preset:en-gb", language="en-GB", speed=1.1, output_format="flac",
                           attributes={"batch": "7"})  # fmt: skip
    request = _request({"text": "Hi", "attr.tenant": "acme"}, defaults)
    assert request.voice == PresetVoice("en-gb")
    assert (request.language, request.speed, request.output_format) == ("en-GB", 1.1, AudioFormat.FLAC)
    assert request.attributes == {"batch": "7", "tenant": "acme"}


def test_csv_strings_become_numbers_and_aliases_work() -> None:
    request = _request(
        {"text": "Hi", "voice": "preset:en-us", "speed": "1.5", "sample_rate": "24000", "format": "MP3",
         "style": "calmly", "loudness_lufs": "-20"}
    )  # fmt: skip
    assert (request.speed, request.sample_rate_hz, request.loudness_lufs) == (1.5, 24000, -20.0)
    assert request.output_format is AudioFormat.MP3
    assert request.style_instruction == "calmly"


@pytest.mark.parametrize(
    ("fields", "column"),
    [
        ({"voice": "preset:en-us"}, "text"),
        ({"text": "Hi"}, "voice"),
        ({"text": "Hi", "voice": "preset:en-us", "speed": "fast"}, "speed"),
        ({"text": "Hi", "voice": "preset:en-us", "speed": "nan"}, "speed"),
        ({"text": "Hi", "voice": "preset:en-us", "sample_rate_hz": "24k"}, "sample_rate_hz"),
        ({"text": "Hi", "voice": "preset:en-us", "langauge": "en"}, "langauge"),
        ({"text": 42, "voice": "preset:en-us"}, "text"),
        ({"text": "Hi", "voice": "preset:en-us", "attributes": "{nope"}, "attributes"),
        ({"text": "Hi", "voice": "preset:en-us", "attributes": {"n": 1}}, "attributes.n"),
    ],
)
def test_bad_columns_are_named(fields: dict[str, Any], column: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        _request(fields)
    assert caught.value.field == column


def test_prompt_voices_take_the_default_transcript_and_presets_ignore_it() -> None:
    defaults = RowDefaults(prompt_text="Hello, I am Alice.")
    prompt = _request({"text": "Hi", "voice": "prompt:s3://tts-voices/alice.wav"}, defaults)
    assert prompt.voice == PromptAudioVoice("s3://tts-voices/alice.wav", "Hello, I am Alice.")
    preset = _request({"text": "Hi", "voice": "preset:en-us"}, defaults)
    assert preset.voice == PresetVoice("en-us")


def test_job_attributes_are_added_for_result_matching() -> None:
    request = row_to_request(
        {"text": "Hi", "voice": "preset:en-us"},
        RowDefaults(),
        request_id="r",
        created_at_ms=0,
        job_attributes={"tts.backfill.job": "bf-1", "tts.backfill.line": "12"},
    )
    assert request.attributes == {"tts.backfill.job": "bf-1", "tts.backfill.line": "12"}


def test_defaults_fingerprint_changes_with_any_default() -> None:
    assert RowDefaults().fingerprint() != RowDefaults(speed=1.2).fingerprint()
    assert (
        RowDefaults(attributes={"a": "1", "b": "2"}).fingerprint()
        == RowDefaults(attributes={"b": "2", "a": "1"}).fingerprint()
    )


# ---------------------------------------------------------------------------------- ids and pacing


@pytest.mark.parametrize("line", [1, 2, 99, 1_000_000])
def test_request_ids_are_uuid5_of_job_and_line(line: int) -> None:
    expected = uuid.uuid5(BACKFILL_NAMESPACE, f"bf-0123456789abcdef:{line}")
    assert RequestIds("bf-0123456789abcdef")(line) == str(expected)


def test_request_ids_differ_per_job_and_line() -> None:
    ids = {RequestIds(job)(line) for job in ("a", "b") for line in range(100)}
    assert len(ids) == 200


@pytest.mark.parametrize(
    ("text", "per_s"),
    [("500/s", 500.0), ("500", 500.0), ("30000/m", 500.0), ("1800000/h", 500.0), (" 2.5 / sec ", 2.5)],
)
def test_rates(text: str, per_s: float) -> None:
    assert parse_rate(text) == pytest.approx(per_s)


@pytest.mark.parametrize("text", ["fast", "0/s", "-5/s", "5/day", ""])
def test_bad_rates(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


def test_token_bucket_paces_to_the_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(100.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(1010):
        bucket.acquire()
    # A burst of 10 (a tenth of a second) is free; the other 1000 take ten seconds.
    assert sum(slept) == pytest.approx(10.0, rel=1e-6)
    assert now[0] == pytest.approx(10.0, rel=1e-6)


def test_token_bucket_does_not_bank_idle_time_beyond_the_burst() -> None:
    now = [0.0]
    slept: list[float] = []
    bucket = TokenBucket(10.0, burst=5, clock=lambda: now[0], sleep=slept.append)
    now[0] = 3600.0  # an hour idle
    for _ in range(5):
        bucket.acquire()
    assert slept == []
    bucket.acquire()
    assert slept == [pytest.approx(0.1)]


def test_json_numbers_and_strings_are_both_accepted() -> None:
    row = json.loads('{"text": "Hi", "voice": "preset:en-us", "speed": 1, "sample_rate_hz": 22050.0}')
    request = _request(row)
    assert (request.speed, request.sample_rate_hz) == (1.0, 22050)
