"""What the worker-side commands (`worker`, `voices`, `models`) share: their exit statuses and
reading the worker's settings, where a malformed TTS_* value ends the command with status 2."""

from __future__ import annotations

import sys
from typing import Any

import click
from pydantic import ValidationError

from consumer.settings import WorkerSettings

EXIT_FAILED = 1  # the work failed (the worker: a fatal error)
EXIT_CONFIG = 2
EXIT_SERVICE_UNAVAILABLE = 3


def settings_or_exit(**overrides: Any) -> WorkerSettings:
    """The settings from the TTS_* environment, `overrides` (command-line flags) winning."""
    try:
        return WorkerSettings(**overrides)
    except ValidationError as exc:
        click.echo(f"error: invalid TTS_* settings:\n{exc}", err=True)
        sys.exit(EXIT_CONFIG)
