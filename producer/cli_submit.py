"""`tts-stream submit` and `tts-stream watch`."""

from __future__ import annotations

import json
import sys
import time

import click

from producer.cli_common import (
    Exit,
    connection_options,
    fail,
    load_settings,
    parse_attributes,
    parse_duration_s,
)
from producer.client import TtsProducer
from producer.errors import DeliveryFailed, InvalidRequest, KafkaUnavailable, ResultTimeout
from producer.render import result_line, result_to_json
from producer.requests import build_request, validate
from producer.settings import ProducerSettings
from producer.subscriber import ResultSubscriber, StartAt
from schemas.errors import ContractError
from schemas.model import SynthesisResult
from schemas.topics import Lane

_FORMATS = ["wav", "flac", "ogg_opus", "mp3"]


@click.command("submit")
@click.argument("text")
@click.option(
    "--voice",
    required=True,
    metavar="KIND:REF",
    help="preset:NAME, registered:ID_OR_ALIAS, or prompt:s3://BUCKET/KEY (with --prompt-text).",
)
@click.option("--prompt-text", default=None, help="Transcript of the prompt audio of a prompt: voice.")
@click.option("--language", default=None, metavar="BCP47", help="e.g. en-US, zh-CN. Default: the voice's.")
@click.option(
    "--style", "style_instruction", default=None, help="Style instruction, e.g. 'say it cheerfully'."
)
@click.option(
    "--speed", type=float, default=1.0, show_default=True, help="Speaking-rate multiplier, 0.5-2.0."
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(_FORMATS, case_sensitive=False),
    default="wav",
    show_default=True,
)
@click.option("--sample-rate", "sample_rate_hz", type=int, default=None, help="Hz; default: the engine's.")
@click.option("--loudness-lufs", type=float, default=None, help="Loudness target; default: the deployment's.")
@click.option(
    "--lane",
    type=click.Choice([lane.value for lane in Lane]),
    default=None,
    help="Request topic to use. [env: TTS_LANE; default: interactive]",
)
@click.option("--request-id", default=None, help="Your own id (default: a new UUID).")
@click.option("--attr", "attrs", multiple=True, metavar="KEY=VALUE", help="Attribute echoed in the result.")
@click.option("--reply-topic", default=None, help="Publish the result here (must be allow-listed).")
@click.option("--ttl", default=None, metavar="DURATION", help="Deadline from now (30s, 5m): EXPIRED after.")
@click.option("--traceparent", default=None, help="W3C traceparent to continue a trace.")
@click.option("--wait", is_flag=True, help="Wait for the result and print it as JSON.")
@click.option(
    "--timeout",
    "timeout",
    default="120s",
    show_default=True,
    metavar="DURATION",
    help="How long --wait waits.",
)
@connection_options
def submit(
    *,
    text: str,
    voice: str,
    prompt_text: str | None,
    language: str | None,
    style_instruction: str | None,
    speed: float,
    output_format: str,
    sample_rate_hz: int | None,
    loudness_lufs: float | None,
    lane: str | None,
    request_id: str | None,
    attrs: tuple[str, ...],
    reply_topic: str | None,
    ttl: str | None,
    traceparent: str | None,
    wait: bool,
    timeout: str,
    bootstrap_servers: str | None,
    framing: str | None,
    schema_registry_url: str | None,
) -> None:
    """Submit one synthesis request; print its request id.

    TEXT is the text to speak ("-" reads it from stdin). With --wait, print the result as
    JSON instead.

    \b
    Exit status: 0 submitted (with --wait: succeeded); 1 the request failed, or its
    delivery did; 2 invalid request or --wait timed out; 3 Kafka unreachable.
    """
    if text == "-":
        text = sys.stdin.read()
    settings = load_settings(bootstrap_servers, framing, schema_registry_url, lane=lane)
    try:
        request = validate(
            build_request(
                text,
                voice,
                prompt_text=prompt_text,
                request_id=request_id,
                language=language,
                style_instruction=style_instruction,
                speed=speed,
                output_format=output_format,
                sample_rate_hz=sample_rate_hz,
                loudness_lufs=loudness_lufs,
                ttl_s=None if ttl is None else parse_duration_s(ttl),
                reply_topic=reply_topic,
                attributes=parse_attributes(attrs),
            ),
            settings.limits,
        )
    except InvalidRequest as exc:
        for problem in exc.problems:
            click.echo(f"invalid request: {problem}", err=True)
        raise SystemExit(int(Exit.USAGE)) from None
    wait_s = parse_duration_s(timeout)
    try:
        subscriber = (
            ResultSubscriber(settings, topic=request.reply_topic, start=StartAt.END) if wait else None
        )
        try:
            with TtsProducer(settings) as tts:
                tts.check_connection()
                tts.submit_request(request, traceparent=traceparent)
            if subscriber is None:
                click.echo(request.request_id)
                return
            result = subscriber.wait_for([request.request_id], wait_s)[request.request_id]
        finally:
            if subscriber is not None:
                subscriber.close()
    except KafkaUnavailable as exc:
        fail(str(exc), Exit.UNAVAILABLE)
    except DeliveryFailed as exc:
        fail(f"not delivered: {exc}", Exit.FAILED)
    except ResultTimeout:
        click.echo(request.request_id)
        fail(f"no result for {request.request_id} within {timeout}", Exit.TIMEOUT)
    except ContractError as exc:  # the registry refused the schema, or similar
        fail(str(exc), Exit.FAILED)
    click.echo(json.dumps(result_to_json(result), ensure_ascii=False))
    if not result.succeeded:
        raise SystemExit(int(Exit.FAILED))


@click.command("watch")
@click.option("--request-id", "request_ids", multiple=True, help="Show only these; exit once all arrived.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of text.")
@click.option("--from-beginning", is_flag=True, help="Start with the oldest retained result.")
@click.option("--since", default=None, metavar="DURATION", help="Start with results of the last 10m, 2h, ...")
@click.option("--topic", default=None, help="Results topic. [env: TTS_TOPICS_RESULTS; default: tts.results]")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Exit after this many results.")
@click.option("--timeout", default=None, metavar="DURATION", help="Stop after this long.")
@connection_options
def watch(
    *,
    request_ids: tuple[str, ...],
    as_json: bool,
    from_beginning: bool,
    since: str | None,
    topic: str | None,
    count: int | None,
    timeout: str | None,
    bootstrap_servers: str | None,
    framing: str | None,
    schema_registry_url: str | None,
) -> None:
    """Print result events as they arrive (Ctrl-C stops).

    \b
    Exit status: 0 stopped, or every --request-id arrived and succeeded; 1 one of them failed;
    2 --timeout passed before every --request-id (or --count) arrived; 3 Kafka unreachable.
    """
    if from_beginning and since:
        raise click.UsageError("give --from-beginning or --since, not both")
    settings = load_settings(bootstrap_servers, framing, schema_registry_url)
    start: StartAt | int = StartAt.END
    if from_beginning:
        start = StartAt.BEGINNING
    elif since:
        start = int((time.time() - parse_duration_s(since)) * 1000)
    deadline = None if timeout is None else time.monotonic() + parse_duration_s(timeout)
    try:
        status = _watch(
            settings,
            topic=topic,
            start=start,
            wanted=set(request_ids),
            as_json=as_json,
            count=count,
            deadline=deadline,
        )
    except KafkaUnavailable as exc:
        fail(str(exc), Exit.UNAVAILABLE)
    raise SystemExit(int(status))


def _watch(
    settings: ProducerSettings,
    *,
    topic: str | None,
    start: StartAt | int,
    wanted: set[str],
    as_json: bool,
    count: int | None,
    deadline: float | None,
) -> Exit:
    seen: dict[str, SynthesisResult] = {}
    shown = 0
    with ResultSubscriber(settings, topic=topic, start=start) as results:
        try:
            while deadline is None or time.monotonic() < deadline:
                remaining = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                result = results.poll(max(0.0, remaining))
                if result is None or (wanted and result.request_id not in wanted):
                    continue
                seen.setdefault(result.request_id, result)
                shown += 1
                click.echo(
                    json.dumps(result_to_json(result), ensure_ascii=False) if as_json else result_line(result)
                )
                if (wanted and wanted <= seen.keys()) or (count is not None and shown >= count):
                    break
        except KeyboardInterrupt:
            return Exit.OK
    if wanted and not wanted <= seen.keys():
        click.echo(f"still waiting for {len(wanted - seen.keys())} result(s)", err=True)
        return Exit.TIMEOUT
    if count is not None and shown < count:
        return Exit.TIMEOUT
    if wanted and not all(seen[rid].succeeded for rid in wanted):
        return Exit.FAILED
    return Exit.OK
