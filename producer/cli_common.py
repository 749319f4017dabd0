"""What the producer-side commands share: exit codes, connection options, settings."""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from producer.settings import LIBRDKAFKA_LOGGER, ProducerSettings
from schemas.codec import Framing


class Exit(enum.IntEnum):
    """Exit statuses of the producer-side commands (docs/producer.md)."""

    OK = 0
    FAILED = 1  # a request failed, a row was invalid, a delivery failed
    USAGE = 2  # bad arguments or an invalid request; also a wait that timed out
    TIMEOUT = 2
    UNAVAILABLE = 3  # Kafka (or the schema registry) could not be reached
    INTERRUPTED = 130  # Ctrl-C / SIGTERM: stopped cleanly, rerun to resume


F = TypeVar("F", bound=Callable[..., Any])


def connection_options(command: F) -> F:
    """--bootstrap-servers, --framing and --schema-registry-url; each overrides its TTS_* variable."""
    command = click.option(
        "--schema-registry-url",
        default=None,
        metavar="URL",
        help="Confluent-compatible registry (needed for --framing confluent). [env: TTS_SCHEMA_REGISTRY_URL]",
    )(command)
    command = click.option(
        "--framing",
        type=click.Choice([f.value for f in Framing]),
        default=None,
        help="Wire framing of produced requests. [env: TTS_FRAMING; default: single-object]",
    )(command)
    return click.option(
        "--bootstrap-servers",
        default=None,
        metavar="HOST:PORT,...",
        help="Kafka brokers. [env: TTS_KAFKA_BOOTSTRAP_SERVERS; default: 127.0.0.1:9092]",
    )(command)


def load_settings(
    bootstrap_servers: str | None = None,
    framing: str | None = None,
    schema_registry_url: str | None = None,
    **overrides: Any,
) -> ProducerSettings:
    """Settings from the environment, with the command line's options on top."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # A broker that is down makes librdkafka log every reconnect attempt; the commands
        # report unreachable brokers themselves (exit 3). --log-level DEBUG shows them.
        logging.getLogger(LIBRDKAFKA_LOGGER).setLevel(logging.CRITICAL)
    settings = ProducerSettings()
    update: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if framing is not None:
        update["framing"] = Framing(framing)
    if schema_registry_url is not None:
        update["schema_registry_url"] = schema_registry_url
    if bootstrap_servers is not None:
        update["kafka"] = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers})
    return settings.model_copy(update=update) if update else settings


_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h|d)?")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration_s(text: str) -> float:
    """`90`, `90s`, `15m`, `2h`, `500ms` -> seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise click.BadParameter(f"{text!r} is not a duration such as 30s, 15m or 2h")
    return float(match["n"]) * _UNIT_S[match["unit"] or "s"]


def parse_attributes(pairs: tuple[str, ...]) -> dict[str, str]:
    """Repeated `--attr KEY=VALUE` options as a mapping."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--attr")
        out[key] = value
    return out


def fail(message: str, status: Exit) -> NoReturn:
    """Print `message` to stderr and exit with `status`."""
    click.echo(f"error: {message}", err=True)
    raise SystemExit(int(status))
