"""The `tts-stream` command. Sub-commands are imported only when used, so the producer side
works without the worker's dependencies (and nothing here imports torch)."""

from __future__ import annotations

import importlib
from typing import Any

import click

from tts_stream import __version__
from tts_stream.logs import configure_logging

# command name -> "module:attribute" of its click command
_COMMANDS = {
    "topics": "producer.cli:topics",
    "submit": "producer.cli_submit:submit",
    "watch": "producer.cli_submit:watch",
    "backfill": "producer.cli_backfill:backfill",
    "worker": "consumer.cli:worker",
    "voices": "consumer.cli_voices:voices",
    "models": "consumer.cli_models:models",
    "dlq": "tts_stream.ops.cli:dlq",
    "results": "tts_stream.ops.cli:results",
    "cache": "tts_stream.ops.cli:cache",
    "lag": "tts_stream.ops.cli:lag",
    "console": "tts_stream.console.cli:console",
    "gateway": "tts_stream.gateway.cli:gateway",
}
_WORKER_SIDE = ("consumer.", "tts_stream.ops.", "tts_stream.console.", "tts_stream.gateway.")


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if module_name.startswith(_WORKER_SIDE) and exc.name and not exc.name.startswith("consumer"):
                return _missing_extra(cmd_name, exc.name)
            raise
        command = getattr(module, attr)
        assert isinstance(command, click.Command)
        return command


def _missing_extra(name: str, missing: str) -> click.Command:
    @click.command(name, help=f"(unavailable: needs tts-stream[worker]; {missing} is not installed)")
    def unavailable(**_: Any) -> None:
        raise click.ClickException(
            f"'tts-stream {name}' runs on the worker side and needs its dependencies: "
            f"pip install 'tts-stream[worker]' ({missing} is not installed)"
        )

    return unavailable


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tts-stream")
@click.option(
    "--log-format",
    type=click.Choice(["json", "text"]),
    default="json",
    show_default=True,
    envvar="TTS_LOG_FORMAT",
    help="JSON lines for machines, text for humans.",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    envvar="TTS_LOG_LEVEL",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def main(log_format: str, log_level: str) -> None:
    """tts-stream: a Kafka stream processor for voice-cloning text-to-speech.

    \b
    Exit codes: 0 success; 1 a request or operation failed; 2 bad usage or a timeout
    (see each command's help); 3 a service (Kafka, Redis, S3) could not be reached.
    """
    configure_logging(log_format, log_level)
