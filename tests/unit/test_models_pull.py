"""`models pull`: idempotent copy with size checks and a completion marker (fake source);
`models wait`: waits for that marker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from consumer.cli_models import (
    MARKER,
    ModelPuller,
    ModelPullError,
    ModelWaitTimeout,
    complete_copy,
    models,
    parse_source,
    relative_path,
    wait_for_copy,
)
from consumer.errors import StorageUnavailable


class FakeSource:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.downloads: list[str] = []
        self.truncate: set[str] = set()
        self.down = False

    def list_sizes(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        if self.down:
            raise StorageUnavailable("down")
        return [(key, len(data)) for key, data in self.files.items() if key.startswith(prefix)]

    def download(self, bucket: str, key: str, destination: Path) -> None:
        self.downloads.append(key)
        data = self.files[key]
        destination.write_bytes(data[:-1] if key in self.truncate else data)


MODEL = {
    "models/cv3/cosyvoice3.yaml": b"sample_rate: 24000\n",
    "models/cv3/llm.pt": b"L" * 1000,
    "models/cv3/CosyVoice-BlankEN/config.json": b"{}",
    "models/cv3/": b"",  # a folder placeholder some tools create
    "models/other/llm.pt": b"X",
}


def test_pull_copies_everything_and_writes_the_marker(tmp_path: Path) -> None:
    source = FakeSource(dict(MODEL))
    report = ModelPuller(source, clock=lambda: 42.0).pull("s3://bucket/models/cv3", tmp_path / "m")
    assert sorted(report.downloaded) == ["CosyVoice-BlankEN/config.json", "cosyvoice3.yaml", "llm.pt"]
    assert report.bytes_downloaded == 1000 + 2 + 19
    assert (tmp_path / "m" / "llm.pt").read_bytes() == b"L" * 1000
    assert (tmp_path / "m" / "CosyVoice-BlankEN" / "config.json").read_bytes() == b"{}"
    marker = json.loads((tmp_path / "m" / MARKER).read_text())
    assert marker == {
        "source": "s3://bucket/models/cv3",
        "files": {"CosyVoice-BlankEN/config.json": 2, "cosyvoice3.yaml": 19, "llm.pt": 1000},
        "completed_at": 42,
    }
    assert not list((tmp_path / "m").rglob("*.partial"))


def test_a_second_pull_downloads_nothing_and_a_damaged_file_is_fetched_again(tmp_path: Path) -> None:
    source = FakeSource(dict(MODEL))
    puller = ModelPuller(source)
    puller.pull("s3://bucket/models/cv3/", tmp_path)
    source.downloads.clear()
    again = puller.pull("s3://bucket/models/cv3/", tmp_path)
    assert again.downloaded == [] and len(again.kept) == 3
    assert source.downloads == []
    (tmp_path / "llm.pt").write_bytes(b"L" * 10)  # an interrupted earlier copy
    assert puller.pull("s3://bucket/models/cv3/", tmp_path).downloaded == ["llm.pt"]


def test_a_changed_source_invalidates_the_marker_before_copying(tmp_path: Path) -> None:
    source = FakeSource(dict(MODEL))
    puller = ModelPuller(source)
    puller.pull("s3://bucket/models/cv3", tmp_path)
    source.files["models/cv3/llm.pt"] = b"N" * 2000
    source.truncate.add("models/cv3/llm.pt")
    with pytest.raises(ModelPullError, match="downloaded 1999 bytes"):
        puller.pull("s3://bucket/models/cv3", tmp_path)
    assert not (tmp_path / MARKER).exists()  # never "complete" over a half-updated copy
    assert (tmp_path / "llm.pt").read_bytes() == b"L" * 1000  # the old file was not replaced
    assert not list(tmp_path.rglob("*.partial"))


def test_empty_sources_and_unsafe_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelPullError, match="no objects"):
        ModelPuller(FakeSource(dict(MODEL))).pull("s3://bucket/nothing-here", tmp_path)
    for key in ("models/cv3/../../etc/cron.d/x", "models/cv3/a//b", "models/cv3/x/.tts-stream-model.json"):
        with pytest.raises(ModelPullError, match="refusing"):
            ModelPuller(FakeSource({key: b"x"})).pull("s3://bucket/models/cv3", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_storage_outages_propagate(tmp_path: Path) -> None:
    source = FakeSource(dict(MODEL))
    source.down = True
    with pytest.raises(StorageUnavailable):
        ModelPuller(source).pull("s3://bucket/models/cv3", tmp_path)


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("s3://b/models/cv3", ("b", "models/cv3/")),
        ("s3://b/models/cv3/", ("b", "models/cv3/")),
        ("s3://b", ("b", "")),
    ],
)
def test_parse_source(uri: str, parsed: tuple[str, str]) -> None:
    assert parse_source(uri) == parsed


@pytest.mark.parametrize("uri", ["https://b/models", "s3://", "/local/path"])
def test_bad_sources(uri: str) -> None:
    with pytest.raises(ModelPullError):
        parse_source(uri)


def test_relative_paths() -> None:
    assert relative_path("p/a/b.pt", "p/") == "a/b.pt"
    assert relative_path("p/a/", "p/") is None


# ---------------------------------------------------------------- models wait --------------------


class FakeTime:
    """A clock that only sleeping advances."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1


def test_wait_returns_once_the_pull_has_written_its_marker(tmp_path: Path) -> None:
    time = FakeTime()
    pulled = False

    def sleep(seconds: float) -> None:
        nonlocal pulled
        time.sleep(seconds)
        if time.sleeps == 3 and not pulled:  # the Job finishes while the worker waits
            ModelPuller(FakeSource(dict(MODEL))).pull("s3://bucket/models/cv3", tmp_path)
            pulled = True

    body = wait_for_copy(
        tmp_path, source="s3://bucket/models/cv3", timeout_s=60, interval_s=5, clock=time.clock, sleep=sleep
    )
    assert body["files"]["llm.pt"] == 1000
    assert time.sleeps == 3


def test_wait_ignores_files_without_the_marker_and_a_copy_of_another_source(tmp_path: Path) -> None:
    source = FakeSource(dict(MODEL))
    ModelPuller(source).pull("s3://bucket/models/cv3", tmp_path)
    assert complete_copy(tmp_path) is not None
    assert complete_copy(tmp_path, "s3://bucket/models/cv3") is not None
    assert complete_copy(tmp_path, "s3://bucket/models/other") is None, "another model's copy"

    (tmp_path / "llm.pt").write_bytes(b"L" * 10)  # a file changed under the marker
    assert complete_copy(tmp_path) is None
    (tmp_path / MARKER).unlink()
    (tmp_path / "llm.pt").write_bytes(b"L" * 1000)
    assert complete_copy(tmp_path) is None, "every file in place, but the pull never finished"
    (tmp_path / MARKER).write_text("{not json")
    assert complete_copy(tmp_path) is None


def test_wait_gives_up_after_its_timeout(tmp_path: Path) -> None:
    time = FakeTime()
    with pytest.raises(ModelWaitTimeout, match=f"no complete model copy .* after 30 s .*{MARKER}"):
        wait_for_copy(tmp_path, timeout_s=30, interval_s=5, clock=time.clock, sleep=time.sleep)
    assert time.now == 30


def test_wait_command_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(models, ["wait", "--dir", str(tmp_path), "--timeout-s", "0.01"])
    assert missing.exit_code == 1
    assert "no complete model copy" in missing.output
    ModelPuller(FakeSource(dict(MODEL))).pull("s3://bucket/models/cv3", tmp_path)
    done = runner.invoke(
        models, ["wait", "--dir", str(tmp_path), "--source", "s3://bucket/models/cv3", "--timeout-s", "1"]
    )
    assert done.exit_code == 0, done.output
    assert "complete: 3 files from s3://bucket/models/cv3" in done.output
