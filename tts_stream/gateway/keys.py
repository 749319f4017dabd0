"""API keys: stored as SHA-256 hashes in a file (a mounted Kubernetes Secret), never in clear.

A key is 32 random bytes, so a fast hash is the right one: nothing can be guessed, and a slow
password hash (bcrypt, argon2) would cost milliseconds on every request. The file has one key a
line, `NAME SHA256 [rate=R] [burst=B] [scopes=tts,voices]`; `#` starts a comment. Kubernetes
updates a mounted Secret in place, so the file is re-read when its modification time changes.

Framework-free; the web layer calls `KeyFile.authenticate` with the presented key.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

KEY_PREFIX = "tts_"
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
SCOPES = frozenset({"tts", "voices"})
DEFAULT_SCOPES = frozenset({"tts"})


class KeyFileError(ValueError):
    """The key file cannot be used; the message names the line."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str  # for logs, metrics and Redis keys: never the key itself
    rate_per_s: float
    burst: int
    scopes: frozenset[str]


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _option(line_no: int, token: str) -> tuple[str, str]:
    name, sep, value = token.partition("=")
    if not sep or name not in ("rate", "burst", "scopes"):
        raise KeyFileError(f"line {line_no}: unknown option {name!r} (rate=, burst=, scopes=)")
    return name, value


def parse_keys(text: str, *, rate_per_s: float, burst: int) -> dict[str, ApiKey]:
    """hash -> key, from the file's text; the defaults apply where a line sets nothing."""
    keys: dict[str, ApiKey] = {}
    names: set[str] = set()
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) < 2:
            raise KeyFileError(f"line {line_no}: expected NAME SHA256 [options]")
        name, digest, *options = fields
        if not NAME.fullmatch(name):
            raise KeyFileError(f"line {line_no}: name must be 1-64 of a-z 0-9 . _ - (starting alphanumeric)")
        if not SHA256_HEX.fullmatch(digest):
            raise KeyFileError(f"line {line_no}: the second field must be the key's sha256 (64 hex digits)")
        if name in names or digest in keys:
            raise KeyFileError(f"line {line_no}: name or key listed twice")
        values = dict(_option(line_no, token) for token in options)
        try:
            rate = float(values.get("rate", rate_per_s))
            limit = int(values.get("burst", burst))
        except ValueError as exc:
            raise KeyFileError(f"line {line_no}: rate and burst must be numbers") from exc
        if not (rate > 0 and limit >= 1):
            raise KeyFileError(f"line {line_no}: rate must be > 0 and burst >= 1")
        scopes = frozenset(s for s in values.get("scopes", ",".join(DEFAULT_SCOPES)).split(",") if s)
        if not scopes <= SCOPES:
            raise KeyFileError(f"line {line_no}: scopes are {', '.join(sorted(SCOPES))}")
        keys[digest] = ApiKey(name, rate, limit, scopes)
        names.add(name)
    return keys


def key_line(name: str, key: str, *, rate_per_s: float | None = None, burst: int | None = None) -> str:
    """The key file's line for `key` (what `tts-stream gateway new-key` prints)."""
    parts = [name, hash_key(key)]
    if rate_per_s is not None:
        parts.append(f"rate={rate_per_s:g}")
    if burst is not None:
        parts.append(f"burst={burst}")
    return " ".join(parts)


class KeyFile:
    """The key file, re-read at most every `check_every_s` when its modification time changed.
    A file that turns bad keeps the last good keys (and logs why) instead of locking everyone out."""

    def __init__(self, path: Path, *, rate_per_s: float, burst: int, check_every_s: float = 5.0) -> None:
        self.path = path
        self._defaults = (rate_per_s, burst)
        self._check_every_s = check_every_s
        self._lock = threading.Lock()
        self._mtime_ns = -1
        self._checked = 0.0
        self._keys: Mapping[str, ApiKey] = {}
        self._load(first=True)

    def _load(self, *, first: bool = False) -> None:
        try:
            stat = self.path.stat()
            if stat.st_mtime_ns == self._mtime_ns:
                return
            keys = parse_keys(
                self.path.read_text("utf-8"), rate_per_s=self._defaults[0], burst=self._defaults[1]
            )
        except (OSError, KeyFileError, UnicodeDecodeError) as exc:
            if first:
                raise KeyFileError(f"{self.path}: {exc}") from exc
            log.error("API key file not reloaded, keeping the previous keys: %s", exc)
            return
        self._keys, self._mtime_ns = keys, stat.st_mtime_ns
        log.info("API keys loaded", extra={"keys": len(keys)})

    def authenticate(self, presented: str) -> ApiKey | None:
        now = time.monotonic()
        if now - self._checked >= self._check_every_s:
            with self._lock:
                if now - self._checked >= self._check_every_s:
                    self._checked = now
                    self._load()
        return self._keys.get(hash_key(presented))

    def __len__(self) -> int:
        return len(self._keys)
