"""Fixtures for end-to-end tests: private topics, worker processes, in-process workers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.adapters.s3 import S3ObjectStore
from consumer.app import RunLimits, WorkerApp
from consumer.engine import Engine
from consumer.metrics import Metrics
from consumer.settings import WorkerSettings
from consumer.voices.registry import VoiceRegistry
from tests.support.kafka_io import Lanes, create_lanes, delete_lanes
from tests.support.stack import StackAddresses
from tests.support.worker import WorkerProcess


@pytest.fixture
def make_lanes(
    kafka_config: dict[str, Any], redis_client: Any, s3_client: Any
) -> Iterator[Callable[..., Lanes]]:
    created: list[Lanes] = []

    def make(partitions: int = 3) -> Lanes:
        lanes = create_lanes(kafka_config, partitions)
        created.append(lanes)
        return lanes

    yield make
    for lanes in created:
        delete_lanes(kafka_config, lanes)


@pytest.fixture
def lanes(make_lanes: Callable[..., Lanes]) -> Lanes:
    return make_lanes()


@pytest.fixture
def start_worker(stack: StackAddresses, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `tts-stream worker` processes; all are stopped (SIGTERM, then SIGKILL) afterwards."""
    workers: list[WorkerProcess] = []

    def start(
        lanes: Lanes,
        instance_id: str,
        env: dict[str, str] | None = None,
        *,
        args: tuple[str, ...] = (),
        ready: bool = True,
    ) -> WorkerProcess:
        worker = WorkerProcess(
            stack, {**lanes.env(), **(env or {})}, tmp_path, instance_id=instance_id, args=args
        )
        workers.append(worker)
        worker.start()
        if ready:
            worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop(30)


class InProcessWorker:
    """A WorkerApp in a thread, for tests that need to reach into the engine."""

    def __init__(self, app: WorkerApp) -> None:
        self.app = app
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.app.run()
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def start(self) -> InProcessWorker:
        self._thread.start()
        return self

    def join(self, timeout_s: float = 60.0) -> None:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "in-process worker did not stop"
        if self.error is not None:
            raise self.error

    def stop(self, timeout_s: float = 60.0) -> None:
        self.app.request_stop()
        self.join(timeout_s)


@pytest.fixture
def in_process_worker(stack: StackAddresses) -> Iterator[Callable[..., InProcessWorker]]:
    started: list[InProcessWorker] = []

    def make(
        lanes: Lanes, engine: Engine, *, limits: RunLimits | None = None, **overrides: Any
    ) -> InProcessWorker:
        settings = WorkerSettings(
            kafka=stack.kafka_values(),
            topics=lanes.topic_names(),
            group_id=lanes.group,
            instance_id=overrides.pop("instance_id", "in-process"),
            redis_url=stack.redis_url,
            # Not the registry a shell may export: results in the framing the tests' readers decode.
            schema_registry_url=overrides.pop("schema_registry_url", None),
            s3_endpoint_url=stack.s3_endpoint,
            s3_access_key_id=stack.s3_access_key,
            s3_secret_access_key=stack.s3_secret_key,
            s3_audio_bucket=stack.audio_bucket,
            s3_voices_bucket=stack.voices_bucket,
            **{"http_port": 0, **overrides},
        )
        worker = InProcessWorker(WorkerApp(settings, limits=limits, engine=engine, metrics=Metrics()))
        started.append(worker)
        return worker.start()

    yield make
    for worker in started:
        if worker._thread.is_alive():
            worker.stop()


@pytest.fixture
def registry(
    stack: StackAddresses, s3_client: object, object_store: S3ObjectStore
) -> Iterator[VoiceRegistry]:
    store = object_store
    registry = VoiceRegistry(store, stack.voices_bucket)
    registry.created = []  # type: ignore[attr-defined]
    yield registry
    for ref in registry.created:  # type: ignore[attr-defined]
        voice_id = registry.voice_id_of(ref)
        if voice_id and registry.record(voice_id) is not None:
            registry.remove(voice_id)
