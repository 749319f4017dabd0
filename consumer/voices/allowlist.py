"""Which object URIs a request may name as prompt audio (`TTS_PROMPT_AUDIO_ALLOWLIST`).

Only `s3://bucket/key` URIs whose bucket and key prefix match an entry are fetched; everything
else is VOICE_NOT_ALLOWED, so a request can never make the worker fetch a URL of its choosing
(no SSRF: no http(s), no file://, no metadata-service addresses, no other buckets). Keys that
only a path-normalising layer would read differently (`..`, `.`, `//`, `%`-escapes,
backslashes, control characters) are refused outright rather than interpreted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from consumer.errors import ConfigurationError
from consumer.voices.errors import VoiceNotAllowed

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_FORBIDDEN_KEY_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f%\\?#]")
MAX_KEY_BYTES = 1024


@dataclass(frozen=True, slots=True)
class AllowEntry:
    bucket: str
    prefix: str  # "" (the whole bucket) or ending in "/"

    def covers(self, bucket: str, key: str) -> bool:
        return bucket == self.bucket and key.startswith(self.prefix)


def _key_problem(key: str) -> str | None:
    checks = (
        (not key, "names no object"),
        (len(key.encode("utf-8")) > MAX_KEY_BYTES, "has a key longer than 1024 bytes"),
        (
            _FORBIDDEN_KEY_CHARACTERS.search(key) is not None,
            "contains a character that is never allowed in a prompt key (%, \\, ?, #, controls)",
        ),
        (key.startswith("/") or "//" in key, "contains an empty path segment"),
        (any(segment in (".", "..") for segment in key.split("/")), "contains a '.' or '..' path segment"),
        (key.endswith("/"), "names a folder, not an object"),
    )
    return next((problem for failed, problem in checks if failed), None)


def parse_entry(entry: str) -> AllowEntry:
    bucket, slash, prefix = entry.strip().partition("/")
    if not slash or not _BUCKET.fullmatch(bucket):
        raise ConfigurationError(f"prompt_audio_allowlist entry {entry!r} must look like 'bucket/prefix/'")
    if prefix:
        if not prefix.endswith("/"):
            prefix += "/"  # "bucket/prompts" must not also allow "bucket/prompts-private/..."
        if (problem := _key_problem(prefix[:-1])) is not None:
            raise ConfigurationError(f"prompt_audio_allowlist entry {entry!r} {problem}")
    return AllowEntry(bucket, prefix)


class PromptAllowList:
    """Parsed allow-list; `check` is the only way a prompt URI becomes a (bucket, key)."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.entries = tuple(parse_entry(entry) for entry in entries)

    def check(self, uri: str) -> tuple[str, str]:
        """(bucket, key) of an allowed URI; raises VoiceNotAllowed otherwise."""
        if not self.entries:
            raise VoiceNotAllowed("prompt audio URIs are not enabled on this deployment")
        if not uri.startswith("s3://"):
            raise VoiceNotAllowed("prompt audio must be an s3:// URI inside an allow-listed prefix")
        bucket, slash, key = uri[len("s3://") :].partition("/")
        if not slash or not _BUCKET.fullmatch(bucket):
            raise VoiceNotAllowed("prompt audio URI has no valid bucket")
        if (problem := _key_problem(key)) is not None:
            raise VoiceNotAllowed(f"prompt audio URI {problem}")
        if not any(entry.covers(bucket, key) for entry in self.entries):
            raise VoiceNotAllowed("prompt audio URI is outside the allow-listed buckets and prefixes")
        return bucket, key
