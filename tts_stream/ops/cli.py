"""`tts-stream dlq`, `results`, `cache` and `lag`: thin shells over tts_stream.ops.

Exit statuses: 0 done; 1 not found or refused (e.g. a replay that was already done); 2 bad
arguments; 3 Kafka, Redis or S3 did not answer.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from consumer.settings import WorkerSettings
from schemas.topics import Lane
from tts_stream.ops import dlq as dlq_ops
from tts_stream.ops.errors import BadArgument, OpsError
from tts_stream.ops.settings import kafka_config, ops_settings, redis_client
from tts_stream.ops.timeparse import format_duration, parse_duration_s, parse_time_ms

F = TypeVar("F", bound=Callable[..., Any])


def _reported(command: F) -> F:
    """Our errors become a one-line message on stderr and the documented exit status."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except OpsError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return run  # type: ignore[return-value]


def _bootstrap(command: F) -> F:
    return click.option(
        "--bootstrap-servers",
        default=None,
        metavar="HOST:PORT,...",
        help="Kafka brokers. [env: TTS_KAFKA_BOOTSTRAP_SERVERS]",
    )(command)


def _json_flag(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(command)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _confirm_or_refuse(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise BadArgument(f"{question} -- not on a terminal: add --yes to go ahead")
    if not click.confirm(question, default=False):
        raise OpsError("cancelled")


def _request_codec(settings: WorkerSettings) -> Any:
    from schemas.codec import registry_client, request_codec

    if settings.schema_registry_url:
        password = settings.schema_registry_password
        extra = (
            {"basic.auth.user.info": f"{settings.schema_registry_username}:{password.get_secret_value()}"}
            if settings.schema_registry_username and password
            else {}
        )
        return request_codec(registry_client(settings.schema_registry_url, **extra))
    return request_codec()


# ------------------------------------------------------------------------------------- dlq --


@click.group("dlq")
def dlq() -> None:
    """Read, inspect and replay dead letters (docs/operations.md)."""


def _filter_options(command: F) -> F:
    command = click.option(
        "--source-topic", "source_topics", multiple=True, metavar="TOPIC", help="Only from this lane topic."
    )(command)
    command = click.option(
        "--reason",
        "reasons",
        multiple=True,
        metavar="REASON",
        help="Only this reason (BAD_MAGIC, CRASH_LOOP, ...; repeatable).",
    )(command)
    command = click.option("--until", metavar="TIME", help="Dead-lettered at or before TIME.")(command)
    return click.option(
        "--since",
        metavar="TIME",
        help="Dead-lettered at or after TIME: 2h (ago), 2026-05-01T12:00Z, epoch ms.",
    )(command)


def _make_filter(
    since: str | None, until: str | None, reasons: Sequence[str], source_topics: Sequence[str]
) -> dlq_ops.DlqFilter:
    return dlq_ops.DlqFilter(
        since_ms=parse_time_ms(since) if since else None,
        until_ms=parse_time_ms(until) if until else None,
        reasons=frozenset(r.strip().upper() for r in reasons),
        source_topics=frozenset(source_topics),
    )


def _print_letters(letters: Sequence[dlq_ops.DeadLetter]) -> None:
    rows = [("ID", "FAILED AT (UTC)", "REASON", "SOURCE", "REPLAYS", "ERROR")]
    for d in letters:
        source = f"{d.source_topic or '?'}[{d.source_partition}]@{d.source_offset}"
        rows.append(
            (d.id, dlq_ops.format_ms(d.failed_at_ms), d.reason, source, str(d.replay_count), d.error[:70])
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])


@dlq.command("list")
@_filter_options
@click.option(
    "--limit", type=click.IntRange(1, 100_000), default=50, show_default=True, help="Most recent N."
)
@_json_flag
@_bootstrap
@_reported
def dlq_list(
    since: str | None,
    until: str | None,
    reasons: tuple[str, ...],
    source_topics: tuple[str, ...],
    limit: int,
    as_json: bool,
    bootstrap_servers: str | None,
) -> None:
    """List dead letters with their provenance, oldest first (the most recent --limit)."""
    from tts_stream.ops.kafka_read import TopicReader

    flt = _make_filter(since, until, reasons, source_topics)
    settings = ops_settings(bootstrap_servers)
    with TopicReader(kafka_config(settings)) as reader:
        listing = dlq_ops.list_dead_letters(reader, settings.topics.dlq, flt, limit)
    if as_json:
        _echo_json(
            {
                "topic": settings.topics.dlq,
                "matched": listing.matched,
                "dead_letters": [d.summary() for d in listing.letters],
            }
        )
        return
    if not listing.letters:
        click.echo(f"no dead letters in {settings.topics.dlq} match ({listing.scanned} read)")
        return
    _print_letters(listing.letters)
    if listing.matched > len(listing.letters):
        click.echo(f"(the {len(listing.letters)} most recent of {listing.matched}; raise --limit for more)")


@dlq.command("show")
@click.argument("letter_id", metavar="ID")
@click.option("--text", "with_text", is_flag=True, help="Include the request text (may be personal data).")
@_json_flag
@_bootstrap
@_reported
def dlq_show(letter_id: str, with_text: bool, as_json: bool, bootstrap_servers: str | None) -> None:
    """Show one dead letter (ID = PARTITION:OFFSET from `dlq list`), decoded where decodable."""
    from tts_stream.ops.kafka_read import TopicReader

    dlq_ops.parse_letter_id(letter_id)
    settings = ops_settings(bootstrap_servers)
    with TopicReader(kafka_config(settings)) as reader:
        letter = dlq_ops.fetch(reader, settings.topics.dlq, letter_id)
    decoded = dlq_ops.decode(letter, _request_codec(settings))
    other_headers = {
        k: v.decode("utf-8", "replace")
        for k, v in letter.record.headers
        if not k.startswith(dlq_ops.DLQ_HEADER_PREFIX)
    }
    body = {
        **letter.summary(),
        "key": letter.record.key.decode("utf-8", "replace") if letter.record.key else None,
        "headers": other_headers,
        "request": decoded.describe(with_text=with_text),
    }
    if as_json:
        _echo_json(body)
        return
    for name, value in body.items():
        if name == "request":
            click.echo("request:")
            for k, v in value.items():
                click.echo(f"  {k}: {v}")
        elif name in ("failed_at_ms", "replayed_at_ms"):
            click.echo(f"{name.removesuffix('_ms')}: {dlq_ops.format_ms(value)}")
        else:
            click.echo(f"{name}: {value}")


@dlq.command("replay")
@click.argument("letter_ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "select_all", is_flag=True, help="Every dead letter that matches the filters.")
@_filter_options
@click.option(
    "--lane",
    type=click.Choice([lane.value for lane in Lane]),
    default=None,
    help="Send to this lane instead of each dead letter's source topic.",
)
@click.option("--force", is_flag=True, help="Replay even what was replayed or answered before.")
@click.option("--dry-run", is_flag=True, help="Say what would be replayed; produce nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_json_flag
@_bootstrap
@_reported
def dlq_replay(
    letter_ids: tuple[str, ...],
    select_all: bool,
    since: str | None,
    until: str | None,
    reasons: tuple[str, ...],
    source_topics: tuple[str, ...],
    lane: str | None,
    force: bool,
    dry_run: bool,
    yes: bool,
    as_json: bool,
    bootstrap_servers: str | None,
) -> None:
    """Send dead letters back to their source lane, once each, in one transaction.

    A dead letter already replayed, or whose request already has a result, is skipped unless
    --force. The replayed record carries tts-dlq-replayed-at-ms and tts-dlq-replay-count headers.
    """
    from consumer.adapters.redis_store import RedisResultIndex
    from tts_stream.ops.kafka_read import TopicReader

    if bool(letter_ids) == select_all:
        raise BadArgument("name dead letters by ID (PARTITION:OFFSET) or pass --all with filters, not both")
    if letter_ids and (since or until or reasons or source_topics):
        raise BadArgument("filters (--since, --reason, ...) select with --all; with IDs they are not used")
    for letter_id in letter_ids:
        dlq_ops.parse_letter_id(letter_id)
    flt = _make_filter(since, until, reasons, source_topics)
    settings = ops_settings(bootstrap_servers)
    config = kafka_config(settings)
    with TopicReader(config) as reader:
        if select_all:
            letters = dlq_ops.list_dead_letters(reader, settings.topics.dlq, flt).letters
        else:
            letters = [dlq_ops.fetch(reader, settings.topics.dlq, i) for i in dict.fromkeys(letter_ids)]
    if not letters:
        click.echo("no dead letters match: nothing to replay")
        return
    if not dry_run:
        _confirm_or_refuse(f"replay {len(letters)} dead letter(s)?", yes)
    replayer = dlq_ops.Replayer(
        config,
        settings.topics,
        _request_codec(settings),
        results=RedisResultIndex(redis_client(settings)),
    )
    plans = replayer.replay(letters, force=force, lane=lane, dry_run=dry_run)
    if as_json:
        _echo_json([p.as_dict() for p in plans])
    else:
        for plan in plans:
            status = "would replay" if dry_run and plan.status == "planned" else plan.status
            target = f" -> {plan.target_topic}" if plan.status != "skipped" else ""
            note = f"  ({plan.note})" if plan.note else ""
            click.echo(f"{plan.letter.id}: {status}{target} request={plan.request_id or '?'}{note}")
    if not dry_run and not any(p.status == "replayed" for p in plans):
        raise OpsError("nothing was replayed")


# --------------------------------------------------------------------------------- results --


@click.group("results")
def results() -> None:
    """Look up results by request id."""


@results.command("get")
@click.argument("request_id")
@click.option(
    "--scan-since",
    metavar="DURATION",
    default=None,
    help="If the index has no entry, read the results topic from DURATION ago (e.g. 2d).",
)
@_json_flag
@_bootstrap
@_reported
def results_get(
    request_id: str, scan_since: str | None, as_json: bool, bootstrap_servers: str | None
) -> None:
    """Print the status, audio URI and timings of REQUEST_ID's result.

    Looks in the workers' Redis result index (one read; entries live TTS_RESULT_INDEX_TTL_S);
    with --scan-since, falls back to reading that window of the results topic.
    """
    from consumer.adapters.redis_store import RedisResultIndex
    from consumer.errors import CacheUnavailable
    from schemas.codec import result_codec
    from tts_stream.ops import results as results_ops
    from tts_stream.ops.errors import NotFound, ServiceUnavailable
    from tts_stream.ops.kafka_read import TopicReader

    results_ops.check_request_id(request_id)
    since_ms = parse_time_ms(scan_since) if scan_since else None
    if scan_since is not None:
        parse_duration_s(scan_since)
    settings = ops_settings(bootstrap_servers)
    codec = result_codec()
    try:
        found = results_ops.lookup_index(RedisResultIndex(redis_client(settings)), codec, request_id)
    except CacheUnavailable as exc:
        if since_ms is None:
            raise ServiceUnavailable(f"{exc}; --scan-since reads the results topic instead") from exc
        found = None
    if found is None and since_ms is not None:
        with TopicReader(kafka_config(settings), timeout_s=30) as reader:
            found = results_ops.scan_results(reader, settings.topics.results, codec, request_id, since_ms)
    if found is None:
        hint = "" if since_ms is not None else "; older results: --scan-since 7d"
        kept = format_duration(settings.result_index_ttl_s)
        raise NotFound(f"no result for {request_id} (the index keeps results {kept}{hint})")
    body = {**results_ops.describe(found.result), "found_in": found.source}
    if as_json:
        _echo_json(body)
        return
    for name, value in body.items():
        if value is not None:
            click.echo(f"{name}: {value}")


# ----------------------------------------------------------------------------------- cache --


@click.group("cache")
def cache() -> None:
    """Result-cache statistics and purges."""


@cache.command("stats")
@click.option("--no-scan", is_flag=True, help="Only the hit/miss counters (no SCAN of the keyspace).")
@_json_flag
@_reported
def cache_stats(no_scan: bool, as_json: bool) -> None:
    """Hit ratio since the counters started, entries, audio referenced, entries per engine/model."""
    from tts_stream.ops.cache import CacheAdmin

    settings = ops_settings(None)
    stats = CacheAdmin(redis_client(settings)).stats(scan=not no_scan)
    if as_json:
        _echo_json(stats.as_dict())
        return
    ratio = "-" if stats.hit_ratio is None else f"{stats.hit_ratio:.1%}"
    click.echo(
        f"lookups: {stats.hits + stats.misses} (hits {stats.hits}, misses {stats.misses}), hit ratio {ratio}"
    )
    if no_scan:
        return
    click.echo(
        f"entries: {stats.entries}, leases held: {stats.leases}, audio referenced: {stats.audio_bytes} bytes"
    )
    for (engine, model), count in sorted(stats.by_producer.items()):
        click.echo(f"  {engine} {model}: {count}")
    if stats.unattributed:
        click.echo(f"  (without engine/model: {stats.unattributed})")


@cache.command("purge")
@click.option(
    "--voice", "voices", multiple=True, metavar="VOICE", help="Voice id, content:<id> or preset:<name>."
)
@click.option("--engine", default=None, help="Entries produced by this engine.")
@click.option("--model-version", default=None, help="Entries produced by this model version.")
@click.option(
    "--cache-key", "cache_keys", multiple=True, metavar="KEY", help="This exact entry (repeatable)."
)
@click.option("--all", "everything", is_flag=True, help="Every entry.")
@click.option("--dry-run", is_flag=True, help="Count what would be purged.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_json_flag
@_reported
def cache_purge(
    voices: tuple[str, ...],
    engine: str | None,
    model_version: str | None,
    cache_keys: tuple[str, ...],
    everything: bool,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete cache entries so the next identical request is synthesised afresh.

    Criteria combine (an entry must match all). Audio objects are kept: delivered results
    still point at them.
    """
    from tts_stream.ops.cache import CacheAdmin, Selector, check_cache_key, voice_token

    selector = Selector(
        voices=frozenset(voice_token(v) for v in voices),
        engine=engine,
        model_version=model_version,
        cache_keys=frozenset(check_cache_key(k) for k in cache_keys),
        everything=everything,
    )
    if not dry_run:
        _confirm_or_refuse("purge the matching cache entries?", yes)
    settings = ops_settings(None)
    report = CacheAdmin(redis_client(settings)).purge(selector, dry_run=dry_run)
    if as_json:
        _echo_json(report.__dict__)
        return
    done = f"would delete {report.matched}" if dry_run else f"deleted {report.deleted}"
    click.echo(f"matched {report.matched} of {report.scanned} entries; {done}")


# ------------------------------------------------------------------------------------- lag --


@click.command("lag")
@click.option(
    "--window",
    default="10s",
    show_default=True,
    metavar="DURATION",
    help="Read twice this far apart to measure throughput; 0 skips it.",
)
@click.option(
    "--values",
    "values_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The Helm values file of the install (default: the chart's defaults).",
)
@click.option(
    "--min-replicas", type=click.IntRange(0, 10_000), default=None, help="Override autoscaling.minReplicas."
)
@click.option(
    "--max-replicas", type=click.IntRange(1, 10_000), default=None, help="Override autoscaling.maxReplicas."
)
@click.option(
    "--current-replicas",
    type=click.IntRange(0, 10_000),
    default=None,
    help="Running worker pods (default: members of the consumer group).",
)
@_json_flag
@_bootstrap
@_reported
def lag(
    window: str,
    values_file: Path | None,
    min_replicas: int | None,
    max_replicas: int | None,
    current_replicas: int | None,
    as_json: bool,
    bootstrap_servers: str | None,
) -> None:
    """Lag per lane and partition of the workers' group, throughput, time to drain, and the
    replica count KEDA would ask for with the chart's settings."""
    import time

    from tts_stream.ops.keda import load_chart_scaling
    from tts_stream.ops.lag import LagReader, report

    window_s = parse_duration_s(window)
    if window_s > 600:
        raise BadArgument("--window is at most 10m")
    chart = load_chart_scaling(values_file, min_replicas, max_replicas)
    settings = ops_settings(bootstrap_servers)
    reader = LagReader(kafka_config(settings), settings.topics, settings.group_id)
    first = reader.snapshot()
    previous = None
    current = first
    if window_s > 0:
        time.sleep(window_s)
        previous, current = first, reader.snapshot()
    result = report(current, chart, previous, current_replicas)
    if as_json:
        _echo_json(result.as_dict())
        return
    members = "?" if result.members is None else str(result.members)
    click.echo(f"group {result.group}: {members} member(s); total lag {result.total_lag}")
    for lane_report in result.lanes:
        rate = "-" if lane_report.consumed_per_s is None else f"{lane_report.consumed_per_s:.1f}/s"
        arriving = "-" if lane_report.produced_per_s is None else f"{lane_report.produced_per_s:.1f}/s"
        eta = format_duration(lane_report.eta_s)
        if lane_report.eta_s is None and lane_report.consumed_per_s is not None:
            eta = "not draining"
        click.echo(
            f"{lane_report.lane:<12} {lane_report.topic}: lag {lane_report.lag}, consumed {rate}, "
            f"arriving {arriving}, drains in {eta}"
        )
        for p in lane_report.partitions:
            committed = "-" if p.committed is None else str(p.committed)
            click.echo(
                f"    partition {p.partition:>3}: committed {committed:>10}  "
                f"end {p.log_end:>10}  lag {p.lag(chart.offset_reset_policy)}"
            )
    per_lane = ", ".join(
        f"{lr.lane} {lr.keda_replicas}" for lr in result.lanes if lr.keda_replicas is not None
    )
    click.echo(
        f"KEDA would ask for {result.decision.replicas} replica(s) "
        f"(per lane: {per_lane or 'none enabled'}; min {chart.min_replicas}, max {chart.max_replicas}"
        f"{'' if result.decision.active else '; no lane active'})"
    )
