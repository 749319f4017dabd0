"""Voice errors: permanent, each carrying the ErrorCode the failed result reports.

They are `consumer.errors.VoiceResolutionError`s, which is what the pipeline catches around
`VoiceResolver.resolve` (`.code`, `.message`).
"""

from __future__ import annotations

from typing import ClassVar

from consumer.errors import VoiceResolutionError
from schemas.model import ErrorCode


class VoiceError(VoiceResolutionError):
    """The request's voice cannot be used."""

    default_code: ClassVar[ErrorCode] = ErrorCode.VOICE_INVALID

    def __init__(self, message: str) -> None:
        super().__init__(self.default_code, message)


class VoiceNotFound(VoiceError):
    """No registered voice, alias or prompt object by that reference."""

    default_code = ErrorCode.VOICE_NOT_FOUND


class VoiceNotAllowed(VoiceError):
    """The prompt-audio URI is outside the allow-list (or not an s3:// URI at all)."""

    default_code = ErrorCode.VOICE_NOT_ALLOWED


class VoiceInvalid(VoiceError):
    """The audio or transcript is unusable as a cloning prompt."""

    default_code = ErrorCode.VOICE_INVALID
