"""HTTP errors of the gateway, with the result events' error codes (docs/errors.md).

A failure the worker reports keeps its code (VOICE_NOT_FOUND stays VOICE_NOT_FOUND); the gateway
adds codes only for what happens before a request reaches Kafka or while waiting for it
(authentication, rate limits, backpressure, sizes, timeouts). Every error body has one shape,
OpenAI's with our fields added, so the official client raises it with the message intact:

    {"error": {"code": "TEXT_TOO_LONG", "message": "...", "type": "invalid_request_error",
               "param": "text", "retryable": false}}
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from producer.errors import InvalidRequest
from schemas.model import ErrorCode, ResultError


class GatewayCode(enum.StrEnum):
    """Codes the gateway adds to the result events' ErrorCode."""

    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    RATE_LIMITED = "RATE_LIMITED"
    OVERLOADED = "OVERLOADED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    NOT_FOUND = "NOT_FOUND"
    TIMEOUT = "TIMEOUT"
    UNAVAILABLE = "UNAVAILABLE"


# What each result code means for an HTTP caller. Input errors are the caller's (400); the
# deadline passing is a gateway timeout (504); the engine or storage failing is an upstream
# failure (502).
_RESULT_STATUS = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.TEXT_TOO_LONG: 400,
    ErrorCode.UNSUPPORTED_LANGUAGE: 400,
    ErrorCode.UNSUPPORTED: 400,
    ErrorCode.VOICE_NOT_FOUND: 400,
    ErrorCode.VOICE_NOT_ALLOWED: 400,
    ErrorCode.VOICE_INVALID: 400,
    ErrorCode.REPLY_TOPIC_NOT_ALLOWED: 400,
    ErrorCode.EXPIRED: 504,
    ErrorCode.ENGINE_ERROR: 502,
    ErrorCode.INTERNAL: 502,
    ErrorCode.UNKNOWN: 502,
}

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(Exception):
    """An answer other than success: HTTP status, stable code, a message safe to show."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        retryable: bool = False,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.retryable = retryable
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "type": _TYPES.get(self.status, "api_error"),
            "param": self.param,
            "retryable": self.retryable,
        }
        return {"error": error, **self.extra}


def invalid(exc: InvalidRequest) -> ApiError:
    """A request the contract's rules refuse: the first problem's code, every problem listed."""
    first = exc.problems[0]
    return ApiError(
        400,
        first.code,
        str(exc),
        param=first.field,
        extra={"problems": [{"field": p.field, "code": p.code, "message": p.detail} for p in exc.problems]},
    )


def bad_request(param: str, message: str, code: ErrorCode = ErrorCode.INVALID_REQUEST) -> ApiError:
    return ApiError(400, code.value, f"{param}: {message}", param=param)


def from_result(error: ResultError, request_id: str) -> ApiError:
    """The worker's failure, with its code, as the HTTP answer to a synchronous call."""
    return ApiError(
        _RESULT_STATUS.get(error.code, 502),
        error.code.value,
        error.message,
        retryable=error.retryable,
        extra={"id": request_id},
    )


def too_large(what: str, limit: int, code: str = GatewayCode.PAYLOAD_TOO_LARGE.value) -> ApiError:
    return ApiError(413, code, f"{what} is larger than {limit} bytes")


def retry_later(code: GatewayCode, message: str, retry_after_s: float) -> ApiError:
    """429 with Retry-After in whole seconds (at least 1: HTTP has no finer unit)."""
    seconds = max(1, int(retry_after_s + 0.999))
    return ApiError(429, code.value, message, retryable=True, headers={"Retry-After": str(seconds)})


def unavailable(message: str) -> ApiError:
    return ApiError(503, GatewayCode.UNAVAILABLE.value, message, retryable=True, headers={"Retry-After": "1"})
