"""Bad arguments to the operator commands get a clear error and exit 2 before any service is
contacted (the Kafka address below is unroutable on purpose: reaching it would hang)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tts_stream.cli import main

NOWHERE = {"TTS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "TTS_REDIS_URL": "redis://127.0.0.1:1/0"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dlq", "show", "abc"], "PARTITION:OFFSET"),
        (["dlq", "list", "--since", "yesterday"], "is not a time"),
        (["dlq", "list", "--since", "1h", "--until", "2h"], "later than"),
        (["dlq", "replay"], "pass --all"),
        (["dlq", "replay", "0:1", "--all"], "not both"),
        (["dlq", "replay", "0:1", "--reason", "BAD_MAGIC"], "select with --all"),
        (["dlq", "replay", "zero:one"], "PARTITION:OFFSET"),
        (["results", "get", "bad id!"], "not a request id"),
        (["results", "get", "r-1", "--scan-since", "a while"], "is not a time"),
        (["cache", "purge"], "say what to purge"),
        (["cache", "purge", "--voice", "alice"], "voices show"),
        (["cache", "purge", "--cache-key", "abc"], "64 lowercase hex"),
        (["cache", "purge", "--all", "--engine", "espeak"], "do not combine"),
        (["lag", "--window", "2x"], "duration"),
        (["lag", "--window", "1h"], "at most 10m"),
        (["lag", "--min-replicas", "5", "--max-replicas", "2"], "exceed"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args, env=NOWHERE)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_destructive_commands_want_confirmation_off_a_terminal() -> None:
    result = CliRunner().invoke(main, ["cache", "purge", "--engine", "espeak"], env=NOWHERE)
    assert result.exit_code == 2
    assert "add --yes" in result.output


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["console", "--host", "0.0.0.0"], {}, "without a token"),
        (["console", "--host", "0.0.0.0", "--no-auth"], {"TTS_CONSOLE_TOKEN": "x" * 32}, "loopback"),
        (["console", "--host", "10.1.2.3"], {"TTS_CONSOLE_TOKEN": "short"}, "at least 16"),
    ],
)
def test_the_console_refuses_to_start_exposed_without_authentication(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = CliRunner().invoke(main, args, env={**NOWHERE, "TTS_CONSOLE_TOKEN": "", **env})
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_every_operator_command_is_listed() -> None:
    result = CliRunner().invoke(main, ["--help"])
    for name in ("dlq", "results", "cache", "lag", "console"):
        assert name in result.output
