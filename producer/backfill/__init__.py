"""Bulk submission from JSON Lines, CSV or Parquet files, resumable and exactly once.

`tts-stream backfill FILE` is the command; `BackfillJob` is the engine behind it.
"""

from producer.backfill.job import BackfillJob, BackfillOptions, SubmitReport, Validation, WaitReport
from producer.backfill.rows import RowDefaults
from producer.backfill.sources import SourceFormat

__all__ = [
    "BackfillJob",
    "BackfillOptions",
    "RowDefaults",
    "SourceFormat",
    "SubmitReport",
    "Validation",
    "WaitReport",
]
