"""Gateway settings: `TTS_GATEWAY_*` variables, read once at start-up and passed down.

The services the gateway talks to (Kafka, topics, the workers' group, Redis, S3, request and
prompt limits) are the worker's `TTS_*` settings, read as `WorkerSettings` the way the operator
tools read them, so one set of variables points every part of a deployment at the same place.
docs/gateway.md lists every field.
"""

from __future__ import annotations

import enum
import os
import socket
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class AudioDelivery(enum.StrEnum):
    PRESIGNED = "presigned"  # a presigned S3 URL: clients fetch from object storage directly
    PROXY = "proxy"  # a gateway URL that streams the object (same API key; S3 stays private)


def _default_instance_id() -> str:
    return os.environ.get("POD_NAME") or socket.gethostname()


def _split(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TTS_GATEWAY_", frozen=True, extra="ignore")

    host: str = Field(default="127.0.0.1", description="Bind address (the chart sets 0.0.0.0).")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port.")
    instance_id: str = Field(
        default_factory=_default_instance_id, description="This replica's name in logs and metrics."
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="File of API keys, one `NAME SHA256 [rate=R] [burst=B] [scopes=tts,voices]` a line "
        "(a mounted Kubernetes Secret; re-read when it changes). Required.",
    )
    rate_per_s: float = Field(default=10.0, gt=0, description="Default per-key request rate.")
    burst: int = Field(default=20, ge=1, description="Default per-key burst (requests at once).")
    max_waiters: int = Field(
        default=2000,
        ge=1,
        description="Requests this replica may have waiting for results (or broker acks) before it "
        "answers 429 OVERLOADED.",
    )
    max_lane_lag: int = Field(
        default=5000,
        ge=0,
        description="Interactive-lane lag of the workers' group above which new requests get 429 "
        "OVERLOADED; 0: not checked.",
    )
    lag_check_interval_s: float = Field(default=2.0, gt=0, description="How often the lag is read.")
    default_timeout_s: float = Field(
        default=30.0, gt=0, description="How long a synchronous call waits when the client names no timeout."
    )
    max_timeout_s: float = Field(
        default=120.0, gt=0, description="The longest wait a client may ask for (longer asks are cut)."
    )
    max_body_bytes: int = Field(
        default=256 * 1024, ge=1024, description="Largest JSON body accepted (413 PAYLOAD_TOO_LARGE)."
    )
    audio_delivery: AudioDelivery = Field(
        default=AudioDelivery.PROXY,
        description="How results name their audio: `proxy` (a gateway URL, same API key) or "
        "`presigned` (an S3 URL valid presign_expiry_s).",
    )
    presign_expiry_s: int = Field(default=900, ge=1, le=7 * 24 * 3600, description="Presigned URL lifetime.")
    public_base_url: str | None = Field(
        default=None,
        description="External base URL (behind an Ingress) for Location headers and audio URLs; "
        "unset: taken from each request.",
    )
    request_record_ttl_s: int = Field(
        default=24 * 3600,
        ge=60,
        description="How long GET /v1/tts/{id} knows a request (keep it within the workers' "
        "TTS_RESULT_INDEX_TTL_S).",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated origins allowed by CORS; empty: CORS off."
    )
    openai_voices: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated `NAME=VOICE` entries mapping OpenAI voice names to ours, e.g. "
        "`alloy=preset:en-us`; other bare names are registered voices.",
    )
    linger_ms: int = Field(
        default=1, ge=0, le=100, description="Producer linger: latency traded for batching under load."
    )
    access_log: bool = Field(default=True, description="One INFO line per request (never text or keys).")

    @field_validator("cors_origins", "openai_voices", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return _split(value)

    @model_validator(mode="after")
    def _check(self) -> GatewaySettings:
        if self.default_timeout_s > self.max_timeout_s:
            raise ValueError("default_timeout_s must not exceed max_timeout_s")
        for entry in self.openai_voices:
            name, sep, voice = entry.partition("=")
            if not sep or not name.strip() or not voice.strip():
                raise ValueError(f"openai_voices entry {entry!r} must look like NAME=VOICE")
        if "*" in self.cors_origins and len(self.cors_origins) > 1:
            raise ValueError("cors_origins: '*' stands alone")
        return self

    @property
    def openai_voice_map(self) -> dict[str, str]:
        return {
            name.strip(): voice.strip()
            for name, _, voice in (entry.partition("=") for entry in self.openai_voices)
        }
