"""The voice registry (content-addressed prompt audio in object storage) and the resolver the
worker uses to turn a request's voice into a cache-key voice plus engine prompt."""

from __future__ import annotations

from consumer.ports import Resolution
from consumer.voices.errors import VoiceError, VoiceInvalid, VoiceNotAllowed, VoiceNotFound
from consumer.voices.registry import AddOutcome, AliasRecord, RemoveOutcome, VoiceRecord, VoiceRegistry
from consumer.voices.resolver import VoiceResolver

__all__ = [
    "AddOutcome",
    "AliasRecord",
    "RemoveOutcome",
    "Resolution",
    "VoiceError",
    "VoiceInvalid",
    "VoiceNotAllowed",
    "VoiceNotFound",
    "VoiceRecord",
    "VoiceRegistry",
    "VoiceResolver",
]
