"""The chaos harness: workers under steady load, a supervisor, fault injectors and the audit.

    load (TtsProducer) ──> request lane ──> N `tts-stream worker` processes ──> results ──> collector
                                               ^ supervisor restarts any that exit, under the
                                                 same instance id, as Kubernetes restarts a container

A scenario runs the load, injects faults (SIGKILL a worker; stop Redis, S3 or Kafka and start
them again), stops the load, waits for every request to be answered and then audits the run:
one result per request id for a read_committed subscriber (at least one under at_least_once),
every result succeeded, every audio object present and decodable, nothing in the DLQ, every
worker alive and ready. Times are measured around each fault and kept in `ChaosReport`.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import re
import signal
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import soundfile

from producer import TtsProducer
from producer.errors import DeliveryFailed
from producer.settings import ProducerSettings
from schemas.codec import result_codec
from schemas.model import ResultStatus, SynthesisResult
from schemas.topics import TopicNames
from schemas.transport import KafkaConnection
from tests.chaos.private_stack import PrivateStack
from tests.support.kafka_io import Lanes, read_all, subscriber
from tests.support.stack import StackAddresses
from tests.support.worker import WorkerProcess

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------- workers --


@dataclass
class ExitRecord:
    instance_id: str
    returncode: int | None
    at_s: float  # seconds since the scenario started
    cause: str  # "kill" (our SIGKILL), "liveness" (failed its liveness probe), "exit" (by itself)
    restarted_ready_after_s: float | None = None

    @property
    def intended(self) -> bool:
        return self.cause == "kill"


@dataclass(frozen=True)
class Probe:
    """A liveness probe as the chart configures one (scaled down for tests)."""

    period_s: float = 5.0
    failure_threshold: int = 3


class Supervisor:
    """Does what the kubelet does for the worker container: restarts it when it exits (a kill, a
    crash, a fatal error) after a short back-off, under the same instance id; restarts it when
    its liveness probe (/livez) fails `failure_threshold` times in a row. Measures how long each
    restarted worker takes to be ready again."""

    def __init__(
        self,
        workers: list[WorkerProcess],
        clock: Callable[[], float],
        *,
        restart_delay_s: float = 1.0,
        liveness: Probe | None = None,
    ) -> None:
        self.workers = workers
        self._clock = clock
        self._delay = restart_delay_s
        self._liveness = liveness or Probe()
        self.exits: list[ExitRecord] = []
        self._causes: dict[str, str] = {}
        self._probe_failures: dict[str, int] = {}
        self._next_probe = 0.0
        self._frozen: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def kill(self, worker: WorkerProcess, cause: str = "kill") -> float:
        """SIGKILL (no drain, no commit, open transaction left behind); returns the time."""
        with self._lock:
            self._causes[worker.instance_id] = cause
            worker.signal(signal.SIGKILL)
        return self._clock()

    def _run(self) -> None:
        waiting_ready: dict[str, ExitRecord] = {}
        while not self._stop.is_set():
            for worker in self.workers:
                with self._lock:
                    if worker.alive():
                        continue
                    record = ExitRecord(
                        worker.instance_id,
                        worker.wait(5),
                        self._clock(),
                        cause=self._causes.pop(worker.instance_id, "exit"),
                    )
                    self.exits.append(record)
                if not record.intended:
                    log.warning(
                        "worker %s stopped (%s, exit %s)", worker.instance_id, record.cause, record.returncode
                    )
                self._stop.wait(self._delay)
                with self._lock:
                    self._probe_failures.pop(worker.instance_id, None)
                    worker.start()
                waiting_ready[worker.instance_id] = record
            for instance_id, record in list(waiting_ready.items()):
                worker = next(w for w in self.workers if w.instance_id == instance_id)
                if _ready(worker):
                    record.restarted_ready_after_s = self._clock() - record.at_s
                    del waiting_ready[instance_id]
            self._probe_liveness(set(waiting_ready))
            self._stop.wait(0.2)

    def freeze(self, worker: WorkerProcess) -> None:
        """SIGSTOP: the process stops dead, its librdkafka threads with it (a long GC pause, a VM
        freeze, a starved node). Its liveness is not probed meanwhile: the zombie scenario is
        about what the group and the broker do with it, not about the kubelet restarting it."""
        with self._lock:
            self._frozen.add(worker.instance_id)
            worker.signal(signal.SIGSTOP)

    def thaw(self, worker: WorkerProcess) -> None:
        with self._lock:
            worker.signal(signal.SIGCONT)
            self._frozen.discard(worker.instance_id)
            self._probe_failures.pop(worker.instance_id, None)

    def _probe_liveness(self, starting: set[str]) -> None:
        if time.monotonic() < self._next_probe:
            return
        self._next_probe = time.monotonic() + self._liveness.period_s
        for worker in self.workers:
            if worker.instance_id in starting or worker.instance_id in self._frozen or not worker.alive():
                continue  # the startup probe's time: the liveness probe does not run yet
            failures = 0 if _live(worker) else self._probe_failures.get(worker.instance_id, 0) + 1
            self._probe_failures[worker.instance_id] = failures
            if failures >= self._liveness.failure_threshold:
                log.warning("worker %s failed %d liveness probes: restarting", worker.instance_id, failures)
                self.kill(worker, cause="liveness")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def unintended_exits(self) -> list[ExitRecord]:
        return [e for e in self.exits if not e.intended]


def _live(worker: WorkerProcess) -> bool:
    try:
        status, _ = worker.get("/livez")
    except OSError:
        return False
    return status == 200


def _ready(worker: WorkerProcess) -> bool:
    try:
        status, _ = worker.get("/readyz")
    except OSError:
        return False
    return status == 200


# -------------------------------------------------------------------------------------- load --


_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")


@dataclass
class Submitted:
    request_id: str
    text: str
    at_s: float


class Load:
    """Steady request traffic through the producer library, from its own thread.

    About one request in ten repeats a recent text (a different request id), so duplicates meet
    on different workers and the single-flight path is under fire too.
    """

    def __init__(
        self,
        stack: StackAddresses,
        lanes: Lanes,
        *,
        rate_per_s: float,
        clock: Callable[[], float],
        run_id: str,
    ) -> None:
        settings = ProducerSettings.from_values(
            kafka=KafkaConnection(bootstrap_servers=stack.kafka_bootstrap),
            topics=TopicNames(requests=lanes.requests, bulk=lanes.bulk, results=lanes.results, dlq=lanes.dlq),
            linger_ms=5,
        )
        self._producer = TtsProducer(settings)
        self._interval = 1.0 / rate_per_s
        self._clock = clock
        self._run_id = run_id
        self.submitted: list[Submitted] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def _text(self, seq: int) -> str:
        if seq % 10 == 9 and len(self.submitted) > 5:
            return self.submitted[-5].text  # a duplicate of a recent request
        # Lengths vary, so the audio (and its content-addressed object) varies too.
        filler = " ".join(_WORDS[: 3 + seq % len(_WORDS)])
        return f"Chaos run {self._run_id} request {seq}: {filler}."

    def _run(self) -> None:
        seq = 0
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                text = self._text(seq)
                request_id = self._producer.submit(text, "preset:en-us")
                self.submitted.append(Submitted(request_id, text, self._clock()))
                seq += 1
                next_at += self._interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def stop(self, flush_timeout_s: float = 120.0) -> None:
        """Stop submitting and wait until every submitted request is acknowledged by Kafka."""
        self._stop.set()
        self._thread.join(10)
        if self.error is not None:
            raise self.error
        try:
            self._producer.close(flush_timeout_s)
        except DeliveryFailed as exc:
            raise AssertionError(f"the producer could not deliver requests: {exc}") from exc

    def submitted_before(self, at_s: float) -> list[Submitted]:
        return [s for s in self.submitted if s.at_s <= at_s]


# ---------------------------------------------------------------------------------- results --


@dataclass
class Arrival:
    result: SynthesisResult
    at_s: float
    partition: int = -1
    offset: int = -1


class Collector:
    """A read_committed subscriber of the results topic, recording when each result arrived.

    A result is one record: its partition and offset say which. A record read a second time (the
    subscriber's own fetch position went back, e.g. an offset reset after a broker restart) is
    counted in `rereads`, not as a second result: only a second *record* for a request id is a
    duplicate the workers published."""

    def __init__(self, stack: StackAddresses, topic: str, clock: Callable[[], float]) -> None:
        self._consumer = subscriber(
            {"bootstrap.servers": stack.kafka_bootstrap},
            topic,
            name="chaos-audit",
            logger=logging.getLogger("librdkafka.collector"),
        )
        self._codec = result_codec()
        self._clock = clock
        self.arrivals: dict[str, list[Arrival]] = {}
        self.count = 0
        self.rereads = 0
        # Where the reader's own position went back: (partition, from offset, to offset, at s).
        self.rewinds: list[tuple[int, int, int, float]] = []
        self._seen: set[tuple[int, int]] = set()
        self._last_offset: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.2)
            if message is None or message.error():
                continue
            position = (message.partition() or 0, message.offset() or 0)
            result = self._codec.decode(message.value())
            with self._lock:
                last = self._last_offset.get(position[0])
                if last is not None and position[1] <= last:
                    self.rewinds.append((position[0], last, position[1], round(self._clock(), 1)))
                self._last_offset[position[0]] = position[1]
                if position in self._seen:
                    self.rereads += 1
                    continue
                self._seen.add(position)
                arrival = Arrival(result, self._clock(), *position)
                self.arrivals.setdefault(result.request_id, []).append(arrival)
                self.count += 1
        self._consumer.close()

    def wait_for(self, ids: set[str], timeout_s: float) -> set[str]:
        """Wait until every id has a result; returns the ids still missing."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                missing = ids - set(self.arrivals)
            if not missing or time.monotonic() >= deadline:
                return missing
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def first_arrival(self, request_id: str) -> float | None:
        with self._lock:
            arrivals = self.arrivals.get(request_id)
            return arrivals[0].at_s if arrivals else None

    def arrival_times(self) -> list[float]:
        with self._lock:
            return sorted(a.at_s for arrivals in self.arrivals.values() for a in arrivals)


# ------------------------------------------------------------------------------------ report --


@dataclass
class FaultRecord:
    kind: str  # "kill", "redis", "s3", "kafka"
    target: str
    started_s: float
    ended_s: float  # the worker was killed / the service is back
    caught_up_after_s: float | None = None  # ended -> every request submitted before `ended` answered
    longest_gap_s: float | None = None  # longest stretch without any result, fault start .. caught up
    submitted_during: int = 0
    worker_ready_after_s: float | None = None  # kills: killed -> the restarted worker is ready
    note: str = ""  # what else is worth knowing (which broker, who took over, ...)


@dataclass
class ChaosReport:
    name: str
    guarantee: str
    engine: str
    workers: int
    partitions: int
    rate_per_s: float
    duration_s: float = 0.0
    requests: int = 0
    results: int = 0
    duplicates: int = 0
    rereads: int = 0  # records the audit reader itself read twice (not duplicates)
    reader_rewinds: list[tuple[int, int, int, float]] = field(default_factory=list)
    missing: int = 0
    failed: int = 0
    dead_letters: int = 0
    objects_checked: int = 0
    # A few duplicated ids with every record's partition, offset, worker and completion time:
    # what it takes to tell which worker answered twice, and when.
    duplicate_examples: list[dict[str, Any]] = field(default_factory=list)
    # Per worker, each distinct warning or error it logged and how often (ids and numbers folded).
    worker_logs: dict[str, dict[str, int]] = field(default_factory=dict)
    unintended_exits: list[dict[str, Any]] = field(default_factory=list)
    faults: list[FaultRecord] = field(default_factory=list)
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None
    latency_max_s: float | None = None

    def summary(self) -> str:
        lines = [
            f"[{self.name}] {self.guarantee}, {self.engine} engine, {self.workers} workers x "
            f"{self.partitions} partitions, {self.rate_per_s:g} req/s for {self.duration_s:.0f} s: "
            f"{self.requests} requests, {self.results} results, {self.duplicates} duplicates, "
            f"{self.missing} missing, {self.failed} failed, {self.dead_letters} dead letters, "
            f"{self.objects_checked} objects decoded; latency p50 {self.latency_p50_s}s "
            f"p99 {self.latency_p99_s}s max {self.latency_max_s}s"
            + (f"; the audit reader re-read {self.rereads} records" if self.rereads else ""),
        ]
        for partition, before, after, at_s in self.reader_rewinds[:10]:
            lines.append(f"    audit reader went back: partition {partition}, {before} -> {after} at {at_s}s")
        for f in self.faults:
            lines.append(
                f"    {f.kind:<5} {f.target:<8} at {f.started_s:6.1f}s for {f.ended_s - f.started_s:5.1f}s: "
                f"caught up {_fmt(f.caught_up_after_s)} after, longest gap {_fmt(f.longest_gap_s)}, "
                f"worker ready {_fmt(f.worker_ready_after_s)}, {f.submitted_during} submitted meanwhile"
                + (f" ({f.note})" if f.note else "")
            )
        for e in self.unintended_exits:
            lines.append(f"    UNINTENDED EXIT {e}")
        for d in self.duplicate_examples:
            lines.append(f"    DUPLICATE {d}")
        for worker, messages in self.worker_logs.items():
            for message, count in sorted(messages.items(), key=lambda item: -item[1])[:8]:
                lines.append(f"    {worker} logged {count}x: {message}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


# librdkafka reports every refused reconnect while a broker is down: one line of summary is enough.
_CONNECTION_NOISE = re.compile(
    r"Connection refused|Disconnected|Connect to|Connection reset|Receive failed|timed out"
)
_FOLD = re.compile(r"[0-9a-f]{8,}|\b\d+(\.\d+)?(ms|s)?\b")


def summarize_log(worker: WorkerProcess) -> dict[str, int]:
    """Each distinct warning, error or critical line of a worker's log, with its count; numbers
    and ids folded so a message repeated with other values counts as one."""
    counts: dict[str, int] = {}
    if not worker.log_path.exists():
        return counts
    for line in worker.log_lines():
        level = str(line.get("level", ""))
        if level not in ("warning", "error", "critical") and "raw" not in line:
            continue
        text = str(line.get("msg") or line.get("raw") or "")
        if "raw" in line and not text.startswith(("Traceback", "cimpl.", "consumer.", "redis.")):
            continue
        if line.get("logger") == "librdkafka" and _CONNECTION_NOISE.search(text):
            text = "librdkafka: connection refused/lost while a broker is away"
        folded = f"{level or 'stderr'}: " + _FOLD.sub("N", text)[:160]
        counts[folded] = counts.get(folded, 0) + 1
    return counts


def _duplicate_examples(arrivals: dict[str, list[Arrival]], limit: int = 5) -> list[dict[str, Any]]:
    examples = []
    for request_id, records in arrivals.items():
        if len(records) < 2:
            continue
        examples.append(
            {
                "request_id": request_id,
                "records": [
                    {
                        "partition": a.partition,
                        "offset": a.offset,
                        "worker": a.result.worker_id,
                        "completed_at_ms": a.result.completed_at_ms,
                        "cache_hit": a.result.cache_hit,
                        "arrived_s": round(a.at_s, 2),
                    }
                    for a in records
                ],
            }
        )
        if len(examples) >= limit:
            break
    return examples


# ---------------------------------------------------------------------------------- scenario --


@dataclass
class ScenarioConfig:
    name: str
    workers: int = 3
    partitions: int = 6
    rate_per_s: float = 15.0
    guarantee: str = "exactly_once"
    engine: str = "null"
    null_latency_ms: int = 40
    max_batch_items: int = 8
    extra_env: dict[str, str] = field(default_factory=dict)
    answer_timeout_s: float = 180.0
    # worker index -> (network namespace, address its health server binds there)
    placement: dict[int, tuple[str, str]] = field(default_factory=dict)
    # worker index -> settings of that worker only (a slower engine, a longer commit interval)
    worker_env: dict[int, dict[str, str]] = field(default_factory=dict)


class Scenario:
    """One chaos run on a private stack. Use as a context manager: everything it started is
    stopped on the way out, also when an assertion fails."""

    def __init__(self, stack: PrivateStack, lanes: Lanes, config: ScenarioConfig, log_dir: Path) -> None:
        self.stack = stack
        self.lanes = lanes
        self.config = config
        self.log_dir = log_dir
        self._t0 = time.monotonic()
        self.run_id = uuid.uuid4().hex[:8]
        addresses = stack.addresses
        env = {
            **lanes.env(),
            "TTS_ENGINE": config.engine,
            "TTS_NULL_LATENCY_MS": str(config.null_latency_ms),
            "TTS_MAX_BATCH_ITEMS": str(config.max_batch_items),
            "TTS_GUARANTEE": config.guarantee,
            "TTS_SESSION_TIMEOUT_MS": "10000",
            # Smaller than the defaults so a dead worker's leases free up within a fault window,
            # and a wedged loop fails its liveness probe sooner (the supervisor probes every 5 s).
            "TTS_LEASE_TTL_MS": "6000",
            "TTS_LIVENESS_STALL_S": "20",
            "TTS_DRAIN_TIMEOUT_S": "10",
            "TTS_ESPEAK_PROCESSES": "1",
            **config.extra_env,
        }
        self.workers = []
        for i in range(config.workers):
            netns, http_host = config.placement.get(i, (None, "127.0.0.1"))
            own = {**env, **config.worker_env.get(i, {})}
            self.workers.append(
                WorkerProcess(
                    addresses, own, log_dir, instance_id=f"chaos-{i}", netns=netns, http_host=http_host
                )
            )
        self.supervisor = Supervisor(self.workers, self.now)
        self.collector = Collector(addresses, lanes.results, self.now)
        self.load = Load(addresses, lanes, rate_per_s=config.rate_per_s, clock=self.now, run_id=self.run_id)
        self.faults: list[FaultRecord] = []
        self._started = False

    def now(self) -> float:
        return time.monotonic() - self._t0

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> Scenario:
        return self

    def __exit__(self, *exc: object) -> None:
        self.supervisor.stop()
        for worker in self.workers:
            try:
                worker.stop(20)
            except (OSError, AssertionError, subprocess.SubprocessError):
                pass
        self.collector.stop()

    def start(self) -> None:
        for worker in self.workers:
            worker.start()
        for worker in self.workers:
            worker.wait_ready(120)
        self.supervisor.start()
        self.collector.start()
        self.load.start()
        self._started = True

    def run_for(self, seconds: float) -> None:
        time.sleep(seconds)

    # ---------------------------------------------------------------- faults

    def kill_worker(self, index: int) -> FaultRecord:
        worker = self.workers[index]
        started = self.supervisor.kill(worker)
        record = FaultRecord("kill", worker.instance_id, started, started)
        self.faults.append(record)
        return record

    def outage(self, service: str, seconds: float) -> FaultRecord:
        started = self.now()
        self.stack.stop(service)
        time.sleep(max(0.0, seconds - (self.now() - started)))
        self.stack.start(service)
        record = FaultRecord(service, "stopped", started, self.now())
        self.faults.append(record)
        return record

    def begin_outage(self, service: str) -> float:
        """Stop a service and leave it stopped (for faults that overlap); see end_outage."""
        started = self.now()
        self.stack.stop(service)
        return started

    def end_outage(self, service: str, started: float) -> FaultRecord:
        self.stack.start(service)
        record = FaultRecord(service, "stopped", started, self.now())
        self.faults.append(record)
        return record

    def restart(self, service: str) -> FaultRecord:
        started = self.now()
        self.stack.stop(service)
        self.stack.start(service)
        record = FaultRecord(service, "restart", started, self.now())
        self.faults.append(record)
        return record

    def freeze_worker(self, index: int, seconds: float) -> FaultRecord:
        """SIGSTOP a worker for `seconds`, then SIGCONT: a zombie when it outlives the session."""
        worker = self.workers[index]
        started = self.now()
        self.supervisor.freeze(worker)
        time.sleep(seconds)
        self.supervisor.thaw(worker)
        record = FaultRecord("freeze", worker.instance_id, started, self.now())
        self.faults.append(record)
        return record

    # ---------------------------------------------------------------- a Kafka cluster

    def _admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient(
            {
                "bootstrap.servers": self.stack.addresses.kafka_bootstrap,
                "logger": logging.getLogger("librdkafka.collector"),
            }
        )

    def leader_of(self, topic: str, partition: int) -> int:
        return int(self._admin().list_topics(topic, timeout=10).topics[topic].partitions[partition].leader)

    def busiest_broker(self) -> int:
        """The broker that leads the most partitions of the request and result topics."""
        metadata = self._admin().list_topics(timeout=10)
        led: dict[int, int] = {}
        for topic in (self.lanes.requests, self.lanes.results):
            for partition in metadata.topics[topic].partitions.values():
                led[partition.leader] = led.get(partition.leader, 0) + 1
        return max(led, key=lambda broker: led[broker])

    def under_replicated(self) -> int:
        """Partitions of the scenario's topics whose in-sync replicas are fewer than their replicas."""
        metadata = self._admin().list_topics(timeout=10)
        return sum(
            1
            for topic in self.lanes.all_topics
            for partition in metadata.topics[topic].partitions.values()
            if len(partition.isrs) < len(partition.replicas)
        )

    def wait_in_sync(self, timeout_s: float = 120.0) -> float:
        """Seconds until every partition has all its replicas in sync again."""
        started = time.monotonic()
        while self.under_replicated():
            assert time.monotonic() - started < timeout_s, (
                f"replicas still out of sync after {timeout_s:.0f}s"
            )
            time.sleep(0.5)
        return time.monotonic() - started

    def kill_node(self, node: str, kind: str, note: str = "") -> FaultRecord:
        """SIGKILL one node of the stack (a broker, a Redis node): no controlled shutdown. The
        record ends at the kill: what follows is how long the rest took to cover for it."""
        started = self.now()
        self.stack.kill(node)
        record = FaultRecord(kind, node, started, started, note=note)
        self.faults.append(record)
        return record

    def start_node(self, node: str) -> None:
        self.stack.start(node)

    def rolling_restart(self, nodes: list[str]) -> list[FaultRecord]:
        """Restart each node in turn (SIGTERM: a controlled shutdown, then start), waiting for every
        replica to be back in sync before the next, as an operator's rolling upgrade does."""
        records = []
        for node in nodes:
            started = self.now()
            self.stack.stop(node)
            self.stack.start(node)
            in_sync_s = self.wait_in_sync()
            record = FaultRecord(
                "roll", node, started, self.now(), note=f"in sync {in_sync_s:.1f}s after start"
            )
            self.faults.append(record)
            records.append(record)
        return records

    def wait_all_ready(self, timeout_s: float = 120.0) -> float:
        """Seconds until every worker answers /readyz 200 (they must get there on their own)."""
        started = time.monotonic()
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if all(w.alive() and _ready(w) for w in self.workers):
                return time.monotonic() - started
            time.sleep(0.2)
        tails = "\n\n".join(f"{w.instance_id}:\n{w.log_tail(20)}" for w in self.workers)
        raise AssertionError(f"workers not ready {timeout_s:.0f}s after the faults:\n{tails}")

    # ---------------------------------------------------------------- audit

    def finish(self, s3_client: Any) -> ChaosReport:
        """Stop the load, wait for every answer and audit the run."""
        self.load.stop()
        submitted = self.load.submitted
        ids = {s.request_id for s in submitted}
        missing = self.collector.wait_for(ids, self.config.answer_timeout_s)
        time.sleep(5.0)  # a late duplicate (a re-published result) would arrive in this window
        self.wait_all_ready()
        return self._report(submitted, missing, s3_client)

    def _report(self, submitted: list[Submitted], missing: set[str], s3_client: Any) -> ChaosReport:
        cfg = self.config
        arrivals = dict(self.collector.arrivals)
        by_id = {s.request_id: s for s in submitted}
        report = ChaosReport(
            name=cfg.name,
            guarantee=cfg.guarantee,
            engine=cfg.engine,
            workers=cfg.workers,
            partitions=cfg.partitions,
            rate_per_s=cfg.rate_per_s,
            duration_s=round(submitted[-1].at_s - submitted[0].at_s, 1) if submitted else 0.0,
            requests=len(submitted),
            results=sum(len(a) for a in arrivals.values()),
            duplicates=sum(len(a) - 1 for a in arrivals.values()),
            rereads=self.collector.rereads,
            reader_rewinds=list(self.collector.rewinds),
            duplicate_examples=_duplicate_examples(arrivals),
            missing=len(missing),
            failed=sum(1 for a in arrivals.values() if any(not x.result.succeeded for x in a)),
            unintended_exits=[asdict(e) for e in self.supervisor.unintended_exits()],
        )
        self.unknown_ids = set(arrivals) - set(by_id)
        latencies = sorted(a[0].at_s - by_id[rid].at_s for rid, a in arrivals.items() if rid in by_id and a)
        if latencies:
            report.latency_p50_s = round(statistics.median(latencies), 2)
            report.latency_p99_s = round(latencies[int(len(latencies) * 0.99) - 1], 2)
            report.latency_max_s = round(latencies[-1], 2)
        self._measure_faults(submitted)
        report.faults = self.faults
        kafka = {"bootstrap.servers": self.stack.addresses.kafka_bootstrap}
        report.dead_letters = len(read_all(kafka, self.lanes.dlq, idle_s=2.0))
        report.objects_checked = self._check_objects(arrivals, s3_client)
        report.worker_logs = {w.instance_id: summarize_log(w) for w in self.workers}
        return report

    def _measure_faults(self, submitted: list[Submitted]) -> None:
        times = self.collector.arrival_times()
        for fault in self.faults:
            before = [s for s in submitted if s.at_s <= fault.ended_s]
            fault.submitted_during = sum(1 for s in submitted if fault.started_s <= s.at_s <= fault.ended_s)
            answered = [self.collector.first_arrival(s.request_id) for s in before]
            if before and all(a is not None for a in answered):
                last = max(a for a in answered if a is not None)
                fault.caught_up_after_s = round(max(0.0, last - fault.ended_s), 2)
                window_end = fault.ended_s + fault.caught_up_after_s
                inside = [t for t in times if fault.started_s < t <= window_end]
                points = [fault.started_s, *inside, window_end]
                fault.longest_gap_s = round(max(b - a for a, b in itertools.pairwise(points)), 2)
            if fault.kind == "kill":
                exits = [e for e in self.supervisor.exits if e.instance_id == fault.target and e.intended]
                ready = [e.restarted_ready_after_s for e in exits if abs(e.at_s - fault.started_s) < 5]
                if ready and ready[0] is not None:
                    fault.worker_ready_after_s = round(ready[0], 2)

    def _check_objects(self, arrivals: dict[str, list[Arrival]], s3_client: Any) -> int:
        """Every succeeded result's object exists, matches its descriptor and decodes."""
        checked: dict[str, str] = {}
        for request_id, results in arrivals.items():
            for arrival in results:
                audio = arrival.result.audio
                if audio is None:
                    continue
                if audio.uri in checked:
                    assert checked[audio.uri] == audio.sha256, f"{request_id}: one URI, two hashes"
                    continue
                bucket, _, key = audio.uri.removeprefix("s3://").partition("/")
                data = bytes(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
                assert len(data) == audio.size_bytes, f"{audio.uri}: size differs from the result"
                assert hashlib.sha256(data).hexdigest() == audio.sha256, f"{audio.uri}: sha256 differs"
                samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
                assert rate == audio.sample_rate_hz
                assert abs(len(samples) / rate - audio.duration_seconds) < 0.02
                checked[audio.uri] = audio.sha256
        return len(checked)


def assert_no_loss(
    report: ChaosReport, scenario: Scenario, *, allowed_exit_codes: frozenset[int] = frozenset()
) -> None:
    """The promise: nothing lost, nothing answered twice (exactly_once), nothing failed, and no
    worker that needed more than the restart of a container that exited.

    `allowed_exit_codes`: a worker may end itself with these (1: a fatal Kafka client error,
    docs/worker.md) and be restarted; a worker that wedges until its liveness probe fails, or
    that crashes, always fails the run."""
    details = report.summary()
    assert report.missing == 0, f"requests without a result:\n{details}"
    assert not scenario.unknown_ids, f"results for ids nobody sent: {sorted(scenario.unknown_ids)[:5]}"
    if report.guarantee == "exactly_once":
        assert report.duplicates == 0, f"a read_committed subscriber saw duplicates:\n{details}"
    assert report.failed == 0, f"valid requests failed:\n{details}\n{_failures(scenario)}"
    assert report.dead_letters == 0, f"valid requests were dead-lettered:\n{details}"
    assert report.objects_checked > 0
    wedged = [e for e in report.unintended_exits if e["cause"] == "liveness"]
    assert not wedged, f"a worker wedged; its liveness probe restarted it:\n{details}\n{_tails(scenario)}"
    crashed = [e for e in report.unintended_exits if e["returncode"] not in allowed_exit_codes]
    assert not crashed, f"workers exited by themselves:\n{details}\n{_tails(scenario)}"


def _failures(scenario: Scenario) -> str:
    errors = [
        f"{rid}: {a.result.error}"
        for rid, arrivals in scenario.collector.arrivals.items()
        for a in arrivals
        if a.result.status is ResultStatus.FAILED
    ]
    return "\n".join(errors[:10])


def _tails(scenario: Scenario) -> str:
    return "\n\n".join(f"{w.instance_id}:\n{w.log_tail(30)}" for w in scenario.workers)


def run_scenario(
    config: ScenarioConfig,
    stack: PrivateStack,
    lanes: Lanes,
    s3: Any,
    log_dir: Path,
    report_dir: Path,
    faults: Callable[[Scenario], None],
    *,
    allowed_exit_codes: frozenset[int] = frozenset(),
) -> tuple[ChaosReport, Scenario]:
    """Start the workers and the load, inject `faults`, audit, write the JSON report and assert
    the promise (assert_no_loss)."""
    with Scenario(stack, lanes, config, log_dir) as scenario:
        scenario.start()
        faults(scenario)
        report = scenario.finish(s3)
        (report_dir / f"chaos-{config.name}.json").write_text(report.to_json())
        print("\n" + report.summary())
        assert_no_loss(report, scenario, allowed_exit_codes=allowed_exit_codes)
        return report, scenario
