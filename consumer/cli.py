"""`tts-stream worker`: run a worker from TTS_* settings (flags override them)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from consumer.app import RunLimits, WorkerApp
from consumer.cli_settings import EXIT_CONFIG, EXIT_FAILED, EXIT_SERVICE_UNAVAILABLE, settings_or_exit
from consumer.engine import EngineLoadError
from consumer.errors import ConfigurationError, FatalError, RetryableError

log = logging.getLogger(__name__)


@click.command()
@click.option("--engine", help="espeak (default), cosyvoice or null. Overrides TTS_ENGINE.")
@click.option(
    "--guarantee", type=click.Choice(["exactly_once", "at_least_once"]), help="Overrides TTS_GUARANTEE."
)
@click.option("--group-id", help="Consumer group. Overrides TTS_GROUP_ID.")
@click.option(
    "--instance-id", help="Static member id and transactional id suffix. Overrides TTS_INSTANCE_ID."
)
@click.option("--http-port", type=int, help="Health and metrics port (0: none). Overrides TTS_HTTP_PORT.")
@click.option(
    "--max-messages", type=click.IntRange(1), help="Run mode: stop after answering this many requests."
)
@click.option("--idle-exit", type=click.FloatRange(0.1), help="Run mode: stop after this many idle seconds.")
def worker(
    engine: str | None,
    guarantee: str | None,
    group_id: str | None,
    instance_id: str | None,
    http_port: int | None,
    max_messages: int | None,
    idle_exit: float | None,
) -> None:
    """Consume both request lanes, synthesise, store, publish results.

    \b
    Stops on SIGTERM/SIGINT after draining in-flight work (TTS_DRAIN_TIMEOUT_S).
    Exit codes: 0 stopped cleanly; 1 fatal error (fenced, engine crashed);
    2 bad configuration; 3 a dependency could not be reached at start-up.
    """
    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "engine": engine,
            "guarantee": guarantee,
            "group_id": group_id,
            "instance_id": instance_id,
            "http_port": http_port,
        }.items()
        if value is not None
    }
    settings = settings_or_exit(**overrides)
    app = WorkerApp(settings, limits=RunLimits(max_messages=max_messages, idle_exit_s=idle_exit))
    app.install_signal_handlers()
    try:
        app.run()
    except EngineLoadError as exc:
        log.critical("the engine cannot start: %s", exc)
        sys.exit(EXIT_CONFIG)
    except RetryableError as exc:
        log.critical("a dependency is unreachable: %s", exc)
        sys.exit(EXIT_SERVICE_UNAVAILABLE)
    except ConfigurationError as exc:
        log.critical("bad configuration: %s", exc)
        sys.exit(EXIT_CONFIG)
    except FatalError as exc:
        log.critical("fatal: %s", exc)
        sys.exit(EXIT_FAILED)
