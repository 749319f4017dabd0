"""`tts-stream gateway`: serve the HTTP gateway; `tts-stream gateway new-key`: make an API key."""

from __future__ import annotations

import sys

import click

EXIT_BAD_SETTINGS = 2


@click.group("gateway", invoke_without_command=True)
@click.pass_context
def gateway(ctx: click.Context) -> None:
    """Serve the HTTP gateway (TTS_GATEWAY_* and the workers' TTS_* settings; docs/gateway.md).

    REST and OpenAI-compatible speech endpoints in front of the Kafka pipeline. It needs an API
    key file (TTS_GATEWAY_API_KEYS_FILE); `tts-stream gateway new-key NAME` makes a key.
    """
    if ctx.invoked_subcommand is None:
        _serve()


def _serve() -> None:
    import uvicorn
    from pydantic import ValidationError

    from consumer.settings import WorkerSettings
    from tts_stream.gateway.app import create_app
    from tts_stream.gateway.keys import KeyFile, KeyFileError
    from tts_stream.gateway.metrics import GatewayMetrics
    from tts_stream.gateway.service import Gateway
    from tts_stream.gateway.settings import GatewaySettings

    try:
        settings = GatewaySettings()
        shared = WorkerSettings()
    except ValidationError as exc:
        click.echo(f"error: invalid TTS_* configuration: {exc}", err=True)
        sys.exit(EXIT_BAD_SETTINGS)
    if settings.api_keys_file is None:
        click.echo(
            "error: TTS_GATEWAY_API_KEYS_FILE is required (make a key: tts-stream gateway new-key)", err=True
        )
        sys.exit(EXIT_BAD_SETTINGS)
    try:
        keys = KeyFile(settings.api_keys_file, rate_per_s=settings.rate_per_s, burst=settings.burst)
    except KeyFileError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_SETTINGS)
    from tts_stream import __version__

    metrics = GatewayMetrics()
    metrics.build.info({"version": __version__, "instance": settings.instance_id})
    app = create_app(Gateway(settings, shared, metrics=metrics), keys)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="auto",  # uvloop when installed
        http="auto",  # httptools when installed
        log_config=None,  # our handlers (configured by the CLI)
        access_log=False,  # ours has the route template, never a query or a header
        server_header=False,
        # In-flight synchronous calls finish before the process exits (within the pod's grace).
        timeout_graceful_shutdown=int(settings.max_timeout_s),
    )
    uvicorn.Server(config).run()


@gateway.command("new-key")
@click.argument("name")
@click.option(
    "--rate", type=float, default=None, help="Requests per second for this key (default: the gateway's)."
)
@click.option(
    "--burst", type=int, default=None, help="Requests at once for this key (default: the gateway's)."
)
def new_key(name: str, rate: float | None, burst: int | None) -> None:
    """Make an API key for NAME: the key on stdout (give it to the client, once), the line for
    the key file (the Secret) on stderr. Only the line's hash is ever stored."""
    from tts_stream.gateway.keys import NAME, key_line
    from tts_stream.gateway.keys import new_key as make

    if not NAME.fullmatch(name):
        raise click.BadParameter("1-64 of a-z 0-9 . _ - (starting alphanumeric)", param_hint="NAME")
    key = make()
    click.echo(key)
    click.echo(f"key file line: {key_line(name, key, rate_per_s=rate, burst=burst)}", err=True)
