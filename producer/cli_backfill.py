"""`tts-stream backfill FILE`: submit a JSONL, CSV or Parquet file, resumably and exactly once."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click

from producer.backfill.job import BackfillJob, BackfillOptions, SubmitReport, Validation, WaitReport
from producer.backfill.rate import parse_rate
from producer.backfill.rows import RowDefaults
from producer.backfill.sources import SourceFormat, detect_format
from producer.cli_common import (
    Exit,
    connection_options,
    fail,
    load_settings,
    parse_attributes,
    parse_duration_s,
)
from producer.errors import BackfillError, BackfillInterrupted, KafkaUnavailable
from schemas.errors import ContractError
from schemas.topics import Lane

_FORMATS = ["wav", "flac", "ogg_opus", "mp3"]


class _StopFlag:
    """Set by the first Ctrl-C or SIGTERM: finish the open chunk, commit, stop. A second Ctrl-C
    stops at once (the open chunk is then aborted, and the next run redoes it)."""

    def __init__(self) -> None:
        self.set = False

    def __call__(self) -> bool:
        return self.set

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.set and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.set = True
        click.echo("\nstopping after the current chunk (Ctrl-C again to abort it)", err=True)

    @contextmanager
    def installed(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@click.command("backfill")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--input-format",
    type=click.Choice([f.value for f in SourceFormat]),
    default=None,
    help="Default: from the file name (.jsonl/.ndjson, .csv, .parquet).",
)
@click.option("--voice", default=None, metavar="KIND:REF", help="Voice of rows without a voice column.")
@click.option("--prompt-text", default=None, help="Transcript for prompt: voices of rows without one.")
@click.option("--language", default=None, metavar="BCP47", help="Language of rows without one.")
@click.option("--style", "style_instruction", default=None, help="Style instruction of rows without one.")
@click.option("--speed", type=float, default=1.0, show_default=True, help="Speed of rows without one.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(_FORMATS, case_sensitive=False),
    default="wav",
    show_default=True,
    help="Audio format of rows without one.",
)
@click.option(
    "--sample-rate", "sample_rate_hz", type=int, default=None, help="Sample rate of rows without one."
)
@click.option("--loudness-lufs", type=float, default=None, help="Loudness target of rows without one.")
@click.option("--attr", "attrs", multiple=True, metavar="KEY=VALUE", help="Attribute added to every request.")
@click.option(
    "--lane",
    type=click.Choice([lane.value for lane in Lane]),
    default=Lane.BULK.value,
    show_default=True,
    help="Request topic. Bulk only uses spare capacity, so interactive traffic never waits.",
)
@click.option("--job-id", default=None, help="Default: derived from the file's sha256 and these options.")
@click.option(
    "--checkpoint",
    "checkpoint_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Local checkpoint file. Default: FILE.tts-checkpoint.json",
)
@click.option(
    "--manifest",
    "manifest_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Line -> request id (and results). Default: FILE.manifest.jsonl",
)
@click.option("--rate", default=None, metavar="N/s", help="Submission rate limit: 500/s, 20000/m, 1000000/h.")
@click.option("--skip-invalid", is_flag=True, help="Submit the valid rows even if some are invalid.")
@click.option("--validate-only", is_flag=True, help="Report bad rows and stop; submit nothing.")
@click.option(
    "--chunk-rows",
    type=click.IntRange(1, 1_000_000),
    default=10_000,
    show_default=True,
    help="Rows per transaction (and per checkpoint).",
)
@click.option(
    "--chunk-seconds",
    type=click.FloatRange(0.05, 30),
    default=1.0,
    show_default=True,
    help="Longest a transaction stays open.",
)
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar on stderr. Default: on a terminal."
)
@click.option("--wait", is_flag=True, help="Then await every result; write them into the manifest.")
@click.option("--timeout", default="1h", show_default=True, metavar="DURATION", help="How long --wait waits.")
@click.option("--results-topic", default=None, help="Where --wait looks. Default: the results topic.")
@connection_options
def backfill(
    *,
    file: Path,
    input_format: str | None,
    voice: str | None,
    prompt_text: str | None,
    language: str | None,
    style_instruction: str | None,
    speed: float,
    output_format: str,
    sample_rate_hz: int | None,
    loudness_lufs: float | None,
    attrs: tuple[str, ...],
    lane: str,
    job_id: str | None,
    checkpoint_path: Path | None,
    manifest_path: Path | None,
    rate: str | None,
    skip_invalid: bool,
    validate_only: bool,
    chunk_rows: int,
    chunk_seconds: float,
    progress: bool | None,
    wait: bool,
    timeout: str,
    results_topic: str | None,
    bootstrap_servers: str | None,
    framing: str | None,
    schema_registry_url: str | None,
) -> None:
    """Submit every row of FILE (JSON Lines, CSV or Parquet) as a synthesis request.

    Every row is validated first and every bad one reported with its line number; nothing is
    submitted while any row is bad, unless --skip-invalid. Submission is resumable: after
    Ctrl-C, a crash or a kill, run the same command again and it continues where the last
    committed chunk ended, without submitting any line twice.

    \b
    Exit status: 0 done (with --wait: every result succeeded); 1 invalid rows, a failed
    result, or an error; 2 --wait timed out; 3 Kafka unreachable; 130 interrupted (rerun
    to resume).
    """
    try:
        rate_per_s = None if rate is None else parse_rate(rate)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--rate") from exc
    try:
        fmt = detect_format(file, input_format)
    except BackfillError as exc:
        raise click.BadParameter(str(exc), param_hint="FILE") from exc
    settings = load_settings(bootstrap_servers, framing, schema_registry_url)
    options = BackfillOptions(
        path=file,
        input_format=fmt,
        defaults=RowDefaults(
            voice=voice,
            prompt_text=prompt_text,
            language=language,
            style_instruction=style_instruction,
            speed=speed,
            output_format=output_format,
            sample_rate_hz=sample_rate_hz,
            loudness_lufs=loudness_lufs,
            attributes=parse_attributes(attrs),
        ),
        lane=Lane(lane),
        job_id=job_id,
        checkpoint_path=checkpoint_path,
        manifest_path=manifest_path,
        rate_per_s=rate_per_s,
        skip_invalid=skip_invalid,
        chunk_rows=chunk_rows,
        chunk_s=chunk_seconds,
        progress=sys.stderr.isatty() if progress is None else progress,
    )
    stop = _StopFlag()
    job = BackfillJob(options, settings, should_stop=stop)
    with stop.installed():
        status = _run(
            job,
            validate_only=validate_only,
            wait=wait,
            wait_s=parse_duration_s(timeout),
            results_topic=results_topic,
        )
    raise SystemExit(int(status))


def _run(
    job: BackfillJob, *, validate_only: bool, wait: bool, wait_s: float, results_topic: str | None
) -> Exit:
    try:
        job_id = job.prepare()
        click.echo(f"job {job_id}: {job.options.path.name} -> {job.topic}", err=True)
        validation = job.validate()
        _report_validation(validation, job.options.skip_invalid)
        if validate_only:
            return Exit.FAILED if validation.problems else Exit.OK
        if validation.problems and not job.options.skip_invalid:
            click.echo("nothing was submitted: fix those rows, or pass --skip-invalid", err=True)
            return Exit.FAILED
        report = job.submit(validation)
        _report_submission(report)
        if report.interrupted:
            click.echo(f"interrupted: run the same command again to resume (job {job_id})", err=True)
            return Exit.INTERRUPTED
        if not wait:
            return Exit.OK
        outcome = job.wait(report.checkpoint, wait_s, results_topic)
        return _report_wait(outcome, report)
    except BackfillInterrupted as exc:
        fail(str(exc), Exit.INTERRUPTED)
    except KafkaUnavailable as exc:
        fail(str(exc), Exit.UNAVAILABLE)
    except (BackfillError, ContractError) as exc:
        fail(str(exc), Exit.FAILED)


def _report_validation(validation: Validation, skip_invalid: bool) -> None:
    for problem in validation.problems:
        click.echo(f"invalid: {problem}", err=True)
    bad = len(validation.invalid)
    verdict = f"{bad} invalid" + (" (skipped)" if bad and skip_invalid else "")
    click.echo(
        f"validated {validation.total_rows} row(s): {validation.valid_rows} valid, {verdict}", err=True
    )


def _report_submission(report: SubmitReport) -> None:
    checkpoint = report.checkpoint
    rate = report.submitted_now / report.elapsed_s if report.elapsed_s > 0 else 0.0
    if report.resumed_from_line is not None:
        click.echo(f"resumed at line {report.resumed_from_line}", err=True)
    click.echo(
        f"job {report.job_id}: submitted {report.submitted_now} request(s) to {report.topic} in "
        f"{report.elapsed_s:.1f} s ({rate:,.0f} lines/s); {checkpoint.submitted} of "
        f"{checkpoint.total_rows - checkpoint.skipped_invalid} over all runs; "
        f"{checkpoint.skipped_invalid} invalid skipped"
    )
    click.echo(f"manifest: {report.manifest}")


def _report_wait(outcome: WaitReport, report: SubmitReport) -> Exit:
    failed = sum(outcome.failed.values())
    codes = ", ".join(f"{code} {n}" for code, n in outcome.failed.most_common())
    click.echo(
        f"results: {outcome.succeeded} succeeded, {failed} failed{f' ({codes})' if codes else ''}, "
        f"{outcome.missing} without a result; written to {report.manifest}"
    )
    if outcome.interrupted:
        return Exit.INTERRUPTED
    if outcome.missing:
        return Exit.TIMEOUT
    return Exit.FAILED if failed else Exit.OK
