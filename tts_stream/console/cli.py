"""`tts-stream console`: serve the web console (docs/console.md)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from tts_stream.console.auth import ExposedWithoutToken, check_binding, generate_token, is_loopback

log = logging.getLogger(__name__)


def _read_token(token_file: Path | None) -> str | None:
    import os

    if token_file is not None:
        try:
            token = token_file.read_text("utf-8").strip()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {token_file}: {exc}", param_hint="--token-file") from exc
        if not token:
            raise click.BadParameter(f"{token_file} is empty", param_hint="--token-file")
        return token
    return os.environ.get("TTS_CONSOLE_TOKEN") or None


@click.command("console")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="TTS_CONSOLE_HOST",
    help="Address to listen on. Anything but loopback requires a token.",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8765, show_default=True, envvar="TTS_CONSOLE_PORT"
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Read the login token from this file (e.g. a mounted Secret). [default: TTS_CONSOLE_TOKEN]",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Host names the browser may use (repeatable); on loopback, 127.0.0.1, localhost and ::1.",
)
@click.option("--no-auth", is_flag=True, help="No login at all (loopback only).")
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Serve HTTPS with this PEM certificate (chain); cookies are then marked Secure.",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The private key of --tls-cert.",
)
@click.option(
    "--values",
    "values_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Helm values of the install, for the KEDA replica estimate (default: chart defaults).",
)
def console(
    host: str,
    port: int,
    token_file: Path | None,
    allowed_hosts: tuple[str, ...],
    no_auth: bool,
    tls_cert: Path | None,
    tls_key: Path | None,
    values_file: Path | None,
) -> None:
    """Serve the operator console: lanes and lag, recent results with audio, dead letters with
    replay, and a form for test requests.

    Off unless started; binds 127.0.0.1 by default. Without TTS_CONSOLE_TOKEN it makes a token
    and prints a login link (loopback only); on any other address it refuses to start without one.
    """
    try:
        import uvicorn

        from tts_stream.console.app import create_app
    except ModuleNotFoundError as exc:
        raise click.ClickException(
            f"the console needs its extra: pip install 'tts-stream[worker,console]' ({exc.name} is missing)"
        ) from exc
    from tts_stream.console.auth import Auth
    from tts_stream.console.backend import LiveBackend
    from tts_stream.ops.errors import OpsError
    from tts_stream.ops.keda import load_chart_scaling
    from tts_stream.ops.settings import ops_settings

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    token = None if no_auth else _read_token(token_file)
    generated = False
    if not no_auth and token is None and is_loopback(host):
        token, generated = generate_token(), True
    try:
        check_binding(host, token, no_auth)
    except ExposedWithoutToken as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    try:
        chart = load_chart_scaling(values_file)
        settings = ops_settings(None)
    except OpsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    allowed = {h.lower() for h in allowed_hosts}
    if is_loopback(host):
        allowed |= {"127.0.0.1", "localhost", "::1", host.strip("[]").lower()}
    backend = LiveBackend(settings, chart)
    app = create_app(backend, Auth(token), allowed_hosts=frozenset(allowed))
    shown = f"[{host}]" if ":" in host else host
    url = f"{'https' if tls_cert else 'http'}://{shown}:{port}/"
    if generated:
        # The operator's terminal, not the log: the link carries the secret.
        click.echo(f"tts-stream console: {url}login?token={token}")
    else:
        click.echo(
            f"tts-stream console: {url}" + ("" if token is None else " (log in with TTS_CONSOLE_TOKEN)")
        )
    if no_auth:
        log.warning("console running without authentication (loopback only)")
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # our handlers (configured by the CLI)
        access_log=False,  # an access log would record the login link's token
        proxy_headers=False,
        server_header=False,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )
    try:
        uvicorn.Server(config).run()
    finally:
        backend.close()
