"""`tts-stream voices`: the voice registry from the command line (docs/voices.md).

Reads the same TTS_S3_* and TTS_MAX_PROMPT_AUDIO_* settings as the worker. Exit codes: 0 done,
1 the voice or its audio was refused / not found, 2 bad usage or settings, 3 storage unreachable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from consumer.cli_settings import EXIT_FAILED, EXIT_SERVICE_UNAVAILABLE, settings_or_exit
from consumer.errors import RetryableError
from consumer.voices.errors import VoiceError
from consumer.voices.registry import VoiceRecord, VoiceRegistry

F = TypeVar("F", bound=Callable[..., Any])


def _registry() -> VoiceRegistry:
    from consumer.adapters.s3 import S3ObjectStore
    from consumer.audio.prompt import PromptLimits

    settings = settings_or_exit()
    store = S3ObjectStore.from_settings(settings)
    limits = PromptLimits(
        max_bytes=settings.max_prompt_audio_bytes, max_seconds=settings.max_prompt_audio_seconds
    )
    return VoiceRegistry(store, settings.s3_voices_bucket, root=settings.s3_voices_prefix, limits=limits)


def _reported(command: F) -> F:
    """Turn the registry's errors into a one-line message and an exit code."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except VoiceError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(EXIT_FAILED)
        except RetryableError as exc:
            click.echo(f"error: object storage is unavailable: {exc}", err=True)
            sys.exit(EXIT_SERVICE_UNAVAILABLE)

    return run  # type: ignore[return-value]


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _record_dict(record: VoiceRecord, aliases: list[str]) -> dict[str, Any]:
    return {
        "voice_id": record.voice_id,
        "aliases": aliases,
        "transcript": record.transcript,
        "duration_seconds": record.duration_seconds,
        "sample_rate_hz": record.sample_rate_hz,
        "created_at": _when(record.created_at_ms),
        "updated_at": _when(record.updated_at_ms),
        "source": {"name": record.source_name, **asdict(record.source)},
    }


@click.group()
def voices() -> None:
    """Register, list, show and remove cloning voices (prompt audio in object storage)."""


@voices.command("add")
@click.argument("name")
@click.option(
    "--audio",
    "audio_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path),
    help="Prompt audio: WAV, FLAC, Ogg or MP3; 1 s to TTS_MAX_PROMPT_AUDIO_SECONDS of clean speech.",
)
@click.option("--text", "transcript", required=True, help="Exactly what is said in the audio.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_reported
def add(name: str, audio_path: Path, transcript: str, as_json: bool) -> None:
    """Register prompt audio under NAME (an alias; re-adding NAME points it at the new audio).

    The voice id printed is the sha256 of the canonical audio: requests may use it or NAME.
    """
    registry = _registry()
    with audio_path.open("rb") as handle:
        data = handle.read(registry.limits.max_bytes + 1)  # never more than the limit allows
    outcome = registry.add(name, data, transcript, source_name=audio_path.name)
    record = outcome.record
    if as_json:
        body = _record_dict(record, [name])
        body.update(
            new_voice=outcome.new_voice,
            transcript_changed=outcome.transcript_changed,
            previous_voice_id=outcome.previous_voice_id,
        )
        click.echo(json.dumps(body, ensure_ascii=False, indent=2))
        return
    state = "new voice" if outcome.new_voice else "already registered"
    if outcome.transcript_changed:
        state = "already registered; transcript updated"
    click.echo(f"voice id  {record.voice_id}  ({state})")
    moved = f" (was {outcome.previous_voice_id})" if outcome.previous_voice_id else ""
    click.echo(f"name      {name}{moved}")
    source = record.source
    click.echo(
        f"audio     {record.duration_seconds:.2f} s at {record.sample_rate_hz} Hz mono "
        f"(from {source.format}, {source.sample_rate_hz} Hz, {source.channels} ch, {source.size_bytes} bytes)"
    )


@voices.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the voices as JSON.")
@_reported
def list_voices(as_json: bool) -> None:
    """Every registered voice with its names, newest first."""
    found = _registry().voices()
    if as_json:
        click.echo(json.dumps([_record_dict(r, a) for r, a in found], ensure_ascii=False, indent=2))
        return
    if not found:
        click.echo("no voices registered")
        return
    click.echo(f"{'VOICE ID':64}  {'SECONDS':>7}  {'CREATED':25}  NAMES")
    for record, aliases in found:
        names = ", ".join(aliases) or "-"
        click.echo(
            f"{record.voice_id:64}  {record.duration_seconds:7.2f}  {_when(record.created_at_ms):25}  {names}"
        )


@voices.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print the voice as JSON.")
@_reported
def show(ref: str, as_json: bool) -> None:
    """One voice, by name or id."""
    registry = _registry()
    voice_id = registry.voice_id_of(ref)
    record = registry.record(voice_id) if voice_id else None
    if record is None:
        click.echo(f"error: no voice {ref!r}", err=True)
        sys.exit(EXIT_FAILED)
    aliases = sorted(alias for alias, target in registry.aliases().items() if target == record.voice_id)
    body = _record_dict(record, aliases)
    if as_json:
        click.echo(json.dumps(body, ensure_ascii=False, indent=2))
        return
    for key in ("voice_id", "aliases", "transcript", "duration_seconds", "sample_rate_hz", "created_at"):
        value = body[key]
        click.echo(f"{key:17} {', '.join(value) if isinstance(value, list) else value}")
    click.echo(f"{'source':17} {json.dumps(body['source'], ensure_ascii=False)}")


@voices.command("remove")
@click.argument("ref")
@click.option(
    "--purge",
    is_flag=True,
    help="With a name: also delete the voice's audio and every other name pointing at it.",
)
@_reported
def remove(ref: str, purge: bool) -> None:
    """Remove a name (the audio stays, by id); or, given an id, the voice and all its names.

    Workers notice within their cache TTL (30 s by default; docs/voices.md).
    """
    outcome = _registry().remove(ref, purge=purge)
    if outcome.aliases:
        click.echo(f"removed names: {', '.join(outcome.aliases)}")
    if outcome.voice_id:
        click.echo(f"removed voice: {outcome.voice_id}")
