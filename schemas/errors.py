"""Errors of the event contract: one base, grouped by phase (encode, decode, validate)."""

from __future__ import annotations

import enum


class ContractError(Exception):
    """Base of every error raised by the `schemas` package."""


class EncodeError(ContractError):
    """A datum does not match its schema; the message names the offending field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DecodeReason(enum.StrEnum):
    """Why bytes could not be decoded. Stable: used as the DLQ reason header."""

    EMPTY = "EMPTY"
    BAD_MAGIC = "BAD_MAGIC"
    UNKNOWN_FINGERPRINT = "UNKNOWN_FINGERPRINT"
    UNKNOWN_SCHEMA_ID = "UNKNOWN_SCHEMA_ID"
    NO_REGISTRY = "NO_REGISTRY"
    REGISTRY_UNAVAILABLE = "REGISTRY_UNAVAILABLE"
    WRONG_RECORD_TYPE = "WRONG_RECORD_TYPE"
    TRUNCATED = "TRUNCATED"
    TRAILING_BYTES = "TRAILING_BYTES"
    INVALID_UTF8 = "INVALID_UTF8"
    BAD_LENGTH = "BAD_LENGTH"
    INVALID_DATA = "INVALID_DATA"


class DecodeError(ContractError):
    """Bytes that are not a valid event. Carries the raw bytes so they can be dead-lettered.

    `retryable` is true only when the bytes may be fine and a dependency (the schema registry)
    was not reachable: such a message must be retried, never dead-lettered.
    """

    def __init__(self, reason: DecodeReason, message: str, raw: bytes) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.detail = message
        self.raw = raw

    @property
    def retryable(self) -> bool:
        return self.reason is DecodeReason.REGISTRY_UNAVAILABLE


class ValidationError(ContractError):
    """A request that decodes but breaks a rule; `code` is the result error code to answer with."""

    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.code = code
        self.field = field
        self.detail = message
