"""`tts-stream models pull`: copy a model directory from object storage to a local volume;
`tts-stream models wait`: wait until such a copy is complete.

The Helm chart's init container runs it before the worker starts, so GPU pods read weights from
a volume and never download anything at run time. It is idempotent: files already present with
the right size are kept, others are downloaded to `<name>.partial` and renamed into place only
after their size checks out. When every file matches the listing it writes the marker
`.tts-stream-model.json` (source, file sizes, time); a marker from another source or listing is
removed first, so its presence always means "complete copy of exactly this". `models wait`
(the workers' init container when one Job fills a shared volume) waits for that marker.

Exit codes: 0 complete, 1 the copy failed verification or the source is empty/unsafe, 2 bad
usage or settings, 3 object storage unreachable.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import click

from consumer.cli_settings import EXIT_FAILED, EXIT_SERVICE_UNAVAILABLE, settings_or_exit
from consumer.errors import ObjectNotFound, StorageUnavailable

if TYPE_CHECKING:
    from consumer.settings import WorkerSettings

log = logging.getLogger(__name__)

MARKER = ".tts-stream-model.json"
PARTIAL_SUFFIX = ".partial"


class ModelPullError(Exception):
    """The copy cannot be made or did not verify."""


class ModelSource(Protocol):
    def list_sizes(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        """(key, size) of every object under the prefix."""

    def download(self, bucket: str, key: str, destination: Path) -> None:
        """Stream one object into a local file (never whole into memory)."""


@dataclass(frozen=True, slots=True)
class RemoteFile:
    path: str  # relative to the destination directory
    key: str
    size: int


@dataclass
class PullReport:
    downloaded: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    bytes_downloaded: int = 0
    marker: Path | None = None


def parse_source(uri: str) -> tuple[str, str]:
    """`s3://bucket/prefix` -> (bucket, "prefix/"); `s3://bucket` -> (bucket, "")."""
    if not uri.startswith("s3://"):
        raise ModelPullError(f"--source must be an s3://bucket/prefix URI, not {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ModelPullError(f"--source {uri!r} names no bucket")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def relative_path(key: str, prefix: str) -> str | None:
    """The local path for `key`, None for folder placeholders; refuses keys that would land
    outside the destination."""
    relative = key[len(prefix) :]
    if not relative or relative.endswith("/"):
        return None
    segments = relative.split("/")
    if "\\" in relative or any(segment in ("", ".", "..") for segment in segments):
        raise ModelPullError(f"refusing the object key {key!r}: it would not stay inside --dest")
    if segments[-1] == MARKER or segments[-1].endswith(PARTIAL_SUFFIX):
        raise ModelPullError(
            f"refusing the object key {key!r}: the name is reserved for the copy's own files"
        )
    return relative


class ModelPuller:
    def __init__(self, source: ModelSource, *, clock: Callable[[], float] = time.time) -> None:
        self._source = source
        self._clock = clock

    def pull(self, uri: str, destination: Path) -> PullReport:
        bucket, prefix = parse_source(uri)
        remote: list[RemoteFile] = []
        for key, size in self._source.list_sizes(bucket, prefix):
            path = relative_path(key, prefix)
            if path is not None:
                remote.append(RemoteFile(path, key, size))
        if not remote:
            raise ModelPullError(f"no objects under {uri}")
        remote.sort(key=lambda f: f.path)
        manifest = {f.path: f.size for f in remote}
        destination.mkdir(parents=True, exist_ok=True)
        marker = destination / MARKER
        if not _marker_matches(marker, uri, manifest):
            marker.unlink(missing_ok=True)
        report = PullReport()
        for item in remote:
            target = destination / item.path
            if target.is_file() and target.stat().st_size == item.size:
                report.kept.append(item.path)
                continue
            self._fetch(bucket, item, target)
            report.downloaded.append(item.path)
            report.bytes_downloaded += item.size
        wrong = [f.path for f in remote if _size(destination / f.path) != f.size]
        if wrong:
            raise ModelPullError(f"sizes do not match the listing after the copy: {', '.join(wrong)}")
        body = {"source": uri, "files": manifest, "completed_at": int(self._clock())}
        temporary = marker.with_name(MARKER + PARTIAL_SUFFIX)
        temporary.write_text(json.dumps(body, indent=2, sort_keys=True))
        os.replace(temporary, marker)
        report.marker = marker
        return report

    def _fetch(self, bucket: str, item: RemoteFile, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + PARTIAL_SUFFIX)
        started = time.monotonic()
        try:
            self._source.download(bucket, item.key, partial)
            size = _size(partial)
            if size != item.size:
                raise ModelPullError(f"{item.path}: downloaded {size} bytes, the listing says {item.size}")
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        log.info(
            "model file copied",
            extra={"path": item.path, "bytes": item.size, "seconds": round(time.monotonic() - started, 2)},
        )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def _marker_matches(marker: Path, uri: str, manifest: dict[str, int]) -> bool:
    try:
        body = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(body, dict) and body.get("source") == uri and body.get("files") == manifest


class ModelWaitTimeout(Exception):
    """The copy was not complete within the time allowed."""


def complete_copy(directory: Path, source: str | None = None) -> dict[str, Any] | None:
    """The marker's content when `directory` holds a complete copy (of `source`, when given):
    the marker is there and every file it lists has its size. None otherwise."""
    try:
        body = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(body, dict) or not isinstance(body.get("files"), dict):
        return None
    if source is not None and body.get("source") != source:
        return None
    if any(_size(directory / path) != size for path, size in body["files"].items()):
        return None
    return body


def wait_for_copy(
    directory: Path,
    *,
    source: str | None = None,
    timeout_s: float,
    interval_s: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until `directory` holds a complete copy; `timeout_s` 0 waits without limit."""
    deadline = clock() + timeout_s
    logged = False
    while (body := complete_copy(directory, source)) is None:
        if timeout_s and clock() >= deadline:
            raise ModelWaitTimeout(
                f"no complete model copy in {directory} after {timeout_s:g} s "
                f"(waiting for {MARKER}{f' of {source}' if source else ''})"
            )
        if not logged:
            log.info("waiting for the model copy", extra={"dir": str(directory), "source": source})
            logged = True
        sleep(min(interval_s, deadline - clock()) if timeout_s else interval_s)
    return body


class S3ModelSource:
    """boto3 directly: downloads stream to disk in parallel parts (model files are gigabytes,
    and the ObjectStore port reads whole objects into memory)."""

    def __init__(self, settings: WorkerSettings) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        key_id, secret = settings.s3_access_key_id, settings.s3_secret_access_key
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=key_id.get_secret_value() if key_id else None,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
        )
        self._transfer = TransferConfig(multipart_chunksize=64 * 1024 * 1024, max_concurrency=8)

    def _call(self, what: str, run: Callable[[], Any]) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return run()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
                raise ObjectNotFound(f"{what}: not found") from exc
            raise StorageUnavailable(f"{what}: {code}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"{what}: {exc}") from exc

    def list_sizes(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = self._call(
            f"list s3://{bucket}/{prefix}", lambda: list(paginator.paginate(Bucket=bucket, Prefix=prefix))
        )
        return [(str(item["Key"]), int(item["Size"])) for page in pages for item in page.get("Contents", [])]

    def download(self, bucket: str, key: str, destination: Path) -> None:
        self._call(
            f"get s3://{bucket}/{key}",
            lambda: self._client.download_file(bucket, key, str(destination), Config=self._transfer),
        )


@click.group()
def models() -> None:
    """Model files for the GPU engines."""


@models.command("pull")
@click.option("--source", required=True, help="s3://bucket/prefix of the model directory.")
@click.option(
    "--dest",
    "destination",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Local directory (the model volume); created if missing.",
)
def pull(source: str, destination: Path) -> None:
    """Copy a model directory from object storage; safe to re-run (only missing or
    different-sized files are fetched). Uses the worker's TTS_S3_* settings."""
    settings = settings_or_exit()
    try:
        report = ModelPuller(S3ModelSource(settings)).pull(source, destination)
    except (ModelPullError, ObjectNotFound) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except StorageUnavailable as exc:
        click.echo(f"error: object storage is unavailable: {exc}", err=True)
        sys.exit(EXIT_SERVICE_UNAVAILABLE)
    click.echo(
        f"{len(report.downloaded)} files downloaded ({report.bytes_downloaded} bytes), "
        f"{len(report.kept)} already present; complete: {report.marker}"
    )


@models.command("wait")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The model volume `models pull` fills (its --dest).",
)
@click.option("--source", default=None, help="Only accept a copy of this s3://bucket/prefix.")
@click.option(
    "--timeout-s",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    help="Give up (exit 1) after this many seconds; 0 waits without limit.",
)
def wait(directory: Path, source: str | None, timeout_s: float) -> None:
    """Wait until DIR holds a complete copy: the marker `models pull` writes last, after every
    file is in place, and every file it lists with its size. Reads only; needs no settings.
    The Helm chart's workers run it when one Job fills a shared volume for all of them."""
    try:
        body = wait_for_copy(directory, source=source, timeout_s=timeout_s)
    except ModelWaitTimeout as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"complete: {len(body['files'])} files from {body.get('source')} in {directory}")


@models.command("make-test-model")
@click.option(
    "--family", type=click.Choice(["cosyvoice3", "cosyvoice2"]), default="cosyvoice3", show_default=True
)
@click.option(
    "--size",
    type=click.Choice(["tiny", "mid", "full"]),
    default="tiny",
    show_default=True,
    help="tiny: small widths for CPU tests; mid: for CPU benchmarks; full: the released model's "
    "dimensions (for a GPU).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write (created; files in it are replaced).",
)
def make_test_model_command(family: str, size: str, seed: int, out: Path) -> None:
    """Write a CosyVoice model directory with random weights that the real AutoModel loads: the
    family's yaml, llm/flow/hift weights, ONNX stand-ins and a locally trained tokenizer. Its
    audio is noise; its code path, shapes and timings are the real model's (docs/engines.md).
    Needs the CosyVoice source tree (`make cosyvoice`)."""
    from consumer.engine import EngineLoadError
    from consumer.engines.cosyvoice_model import import_automodel

    try:
        import_automodel()  # the same import checks (and message) as the engine's
    except EngineLoadError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    from consumer.engines.cosyvoice_testmodel import make_test_model

    report = make_test_model(family, size, out, seed=seed)
    counts = ", ".join(f"{part} {count:,}" for part, count in report.parameters.items())
    click.echo(f"{family} {size} model written to {out} in {report.seconds:.1f} s; parameters: {counts}")
