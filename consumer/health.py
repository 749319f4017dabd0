"""Health and metrics over HTTP: /livez, /readyz, /startupz and /metrics on one port.

* /startupz — 200 once the model is loaded and warmed up. The chart's startupProbe uses it, so
  a multi-minute model load needs no fixed initial delay and no liveness failures meanwhile.
* /livez — 200 while the poll loop completes iterations and the pipeline moves its work on;
  503 when the loop has not come round for `liveness_stall_s` (a wedged loop), or when the
  pipeline has held work of its own for `liveness_pipeline_stall_s` with no stage moving any of
  it on (a hung engine or CUDA call, a deadlock between stages): the pod is restarted. Before
  the loop starts it is 200: the startup probe covers that period.
* /readyz — 200 when started and the loop runs: the state of this pod only. The last background
  check of Kafka, Redis and S3 is in the body and in `tts_dependency_up`, but a dependency down
  never makes the pod unready: the worker pauses that work by itself, and an outage that made
  every replica unready at once would let the PodDisruptionBudget block every drain and rollout
  while helping nobody (no Service routes work to a worker).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from consumer.metrics import Metrics

if TYPE_CHECKING:  # annotations only: the health server needs none of the pipeline's modules
    from consumer.core.pipeline import PipelineProgress

log = logging.getLogger(__name__)

DependencyCheck = Callable[[], bool]


class HealthState:
    def __init__(
        self,
        metrics: Metrics,
        *,
        liveness_stall_s: float,
        pipeline_stall_s: float | None = None,
        checks: dict[str, DependencyCheck] | None = None,
        check_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._stall_s = liveness_stall_s
        self._pipeline_stall_s = pipeline_stall_s  # None: the pipeline is not watched
        self._clock = clock
        # When the pipeline last moved its work on, on our clock; None while it holds none.
        self._pipeline_moved_at: float | None = None
        self._checks = checks or {}
        self._interval_s = check_interval_s
        # None until a check has run: "unchecked" in the body rather than a "down" nobody saw.
        self._status: dict[str, bool | None] = dict.fromkeys(self._checks)
        self._started = False
        self._loop_running = False
        self._last_beat = clock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # a new check runs now, not at the next interval
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ updates

    def add_check(self, name: str, check: DependencyCheck) -> None:
        with self._lock:
            self._checks = {**self._checks, name: check}
            self._status.setdefault(name, None)
        self._wake.set()

    def mark_started(self) -> None:
        self._started = True

    def mark_loop_running(self, running: bool) -> None:
        self._loop_running = running
        self._last_beat = self._clock()

    def beat(self, pipeline: PipelineProgress | None = None) -> None:
        """The loop came round; `pipeline` says how the pipeline is getting on."""
        now = self._clock()
        self._last_beat = now
        self._metrics.last_progress.set(time.time())
        if pipeline is not None:
            self._track_pipeline(now, pipeline)

    def _track_pipeline(self, now: float, pipeline: PipelineProgress) -> None:
        if not pipeline.busy:
            self._pipeline_moved_at = None  # nothing of its own in hand: nothing to wait for
            return
        # Work that has just arrived is not stalled however long the pipeline was idle before:
        # the stall is counted from the later of its arrival and the last move.
        arrived = now if self._pipeline_moved_at is None else self._pipeline_moved_at
        self._pipeline_moved_at = max(arrived, now - pipeline.idle_s)

    def run_checks(self) -> None:
        results: dict[str, bool] = {}
        with self._lock:
            checks = dict(self._checks)
        for name, check in checks.items():
            try:
                results[name] = bool(check())
            except Exception:  # a check that throws is a failed check
                results[name] = False
        with self._lock:
            changed = {k: v for k, v in results.items() if self._status.get(k) != v}
            self._status.update(results)  # a check added meanwhile keeps its "unchecked"
        for name, ok in changed.items():
            (log.info if ok else log.warning)(
                "dependency %s is %s", name, "reachable" if ok else "unreachable"
            )
        for name, ok in results.items():
            self._metrics.dependency_up.labels(dependency=name).set(1 if ok else 0)
        self._metrics.ready.set(1 if self.ready()[0] else 0)

    def start_checker(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                self._wake.clear()
                self.run_checks()
                self._wake.wait(self._interval_s)

        threading.Thread(target=loop, name="health-checks", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    # ------------------------------------------------------------------ verdicts

    def started(self) -> bool:
        return self._started

    def live(self) -> tuple[bool, dict[str, Any]]:
        if not self._loop_running:
            return True, {"loop": "not started"}
        now = self._clock()
        loop_stalled = now - self._last_beat
        ok = loop_stalled < self._stall_s
        detail: dict[str, Any] = {"seconds_since_progress": round(loop_stalled, 3)}
        moved_at = self._pipeline_moved_at
        if self._pipeline_stall_s is not None and moved_at is not None:
            pipeline_stalled = now - moved_at
            ok = ok and pipeline_stalled < self._pipeline_stall_s
            detail["seconds_since_pipeline_progress"] = round(pipeline_stalled, 3)
        return ok, detail

    def ready(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            status = dict(self._status)
        ok = self._started and self._loop_running
        detail: dict[str, Any] = {"started": self._started, "loop_running": self._loop_running}
        detail.update({name: _dependency_word(up) for name, up in status.items()})
        return ok, detail


def _dependency_word(up: bool | None) -> str:
    return "unchecked" if up is None else "ok" if up else "down"


class HealthServer:
    def __init__(self, state: HealthState, metrics: Metrics, host: str, port: int) -> None:
        handler = _handler(state, metrics)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(state: HealthState, metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "tts-stream"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/livez":
                self._verdict(*state.live())
            elif path == "/readyz":
                self._verdict(*state.ready())
            elif path == "/startupz":
                self._verdict(state.started(), {"started": state.started()})
            else:
                self._send(404, b"not found\n", "text/plain")

        def _verdict(self, ok: bool, detail: dict[str, Any]) -> None:
            body = json.dumps({"ok": ok, **detail}).encode() + b"\n"
            self._send(200 if ok else 503, body, "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # probes every few seconds would flood the log

    return Handler
