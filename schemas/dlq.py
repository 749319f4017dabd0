"""The dead-letter contract: a DLQ record is the original key and value bytes, the original
headers, and these provenance headers (all values UTF-8)."""

from __future__ import annotations

import enum

SOURCE_TOPIC = "tts-dlq-source-topic"
SOURCE_PARTITION = "tts-dlq-source-partition"
SOURCE_OFFSET = "tts-dlq-source-offset"
SOURCE_TIMESTAMP = "tts-dlq-source-timestamp-ms"
REASON = "tts-dlq-reason"
ERROR = "tts-dlq-error"
FAILED_AT = "tts-dlq-failed-at-ms"
WORKER = "tts-dlq-worker"
ATTEMPTS = "tts-dlq-attempts"  # CRASH_LOOP: the crash count; decode reasons: always 1
REPLAYED_AT = "tts-dlq-replayed-at-ms"
# Set only when the original was too large to copy whole (key, value and header sizes), with the
# sha256 of the original value: the value is cut to fit and the original headers are dropped.
TRUNCATED = "tts-dlq-truncated"
ORIGINAL_SHA256 = "tts-dlq-original-sha256"
REPLAY_COUNT = "tts-dlq-replay-count"

PROVENANCE_HEADERS = (
    SOURCE_TOPIC,
    SOURCE_PARTITION,
    SOURCE_OFFSET,
    SOURCE_TIMESTAMP,
    REASON,
    ERROR,
    FAILED_AT,
    WORKER,
    ATTEMPTS,
)


class DlqReason(enum.StrEnum):
    """Why a message was dead-lettered. Decode failures use the DecodeReason value instead."""

    CRASH_LOOP = "CRASH_LOOP"  # the message was in flight during too many worker crashes
    # Reserved: nothing emits it. An oversized dead letter keeps its own reason and is cut to fit
    # (the TRUNCATED header above).
    TOO_LARGE = "TOO_LARGE"
