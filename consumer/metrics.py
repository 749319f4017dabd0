"""Prometheus metrics of the worker: one prefix (`tts_`), base units, bounded labels.

Built on a given registry so tests get a fresh one. Labels are drawn from small fixed sets
(lane, outcome, operation, reason, result) — never request ids, cache keys or topics chosen by
callers. docs/operations.md explains each one to an operator.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from schemas.topics import Lane

PREFIX = "tts"

# Buckets in seconds: from a cache hit (~1 ms) to a long synthesis (minutes).
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
IO_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
RTF_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5)

LANES = tuple(lane.value for lane in Lane)
OUTCOMES = ("succeeded", "failed", "expired", "invalid", "dead_lettered")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        p = PREFIX
        self.requests = Counter(
            f"{p}_requests", "Requests answered, by lane and outcome.", ["lane", "outcome"], registry=r
        )
        self.cache_lookups = Counter(
            f"{p}_cache_lookups", "Result-cache lookups by result (hit, miss, error).", ["result"], registry=r
        )
        self.cache_fail_open = Counter(
            f"{p}_cache_fail_open",
            "Requests synthesised without the cache because Redis was down.",
            registry=r,
        )
        self.singleflight_waits = Counter(
            f"{p}_singleflight_waits",
            "Requests that waited for another worker's in-flight synthesis of the same key.",
            registry=r,
        )
        self.singleflight_takeovers = Counter(
            f"{p}_singleflight_takeovers",
            "Leases taken over from a worker that stopped renewing them.",
            registry=r,
        )
        self.coalesced = Counter(
            f"{p}_coalesced_requests",
            "Duplicate requests inside one worker answered by one synthesis.",
            registry=r,
        )
        self.batch_size = Histogram(
            f"{p}_engine_batch_size", "Tasks per engine batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.engine_seconds = Histogram(
            f"{p}_engine_batch_duration_seconds",
            "Engine time per batch.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.engine_busy_seconds = Counter(
            f"{p}_engine_busy_seconds",
            "Wall time the engine spent synthesising (duty cycle numerator).",
            registry=r,
        )
        self.engine_tasks = Gauge(
            f"{p}_engine_tasks",
            "Tasks inside the engine now (a batch being synthesised, or every task a continuously "
            "batching engine holds).",
            registry=r,
        )
        self.engine_retries = Counter(
            f"{p}_engine_retries", "Engine tasks retried after a transient failure.", registry=r
        )
        self.realtime_factor = Histogram(
            f"{p}_engine_realtime_factor",
            "Engine seconds per second of audio produced, per batch (lower is faster).",
            buckets=RTF_BUCKETS,
            registry=r,
        )
        self.audio_seconds = Counter(
            f"{p}_audio_produced_seconds", "Seconds of audio synthesised.", registry=r
        )
        self.end_to_end = Histogram(
            f"{p}_end_to_end_latency_seconds",
            "From the request's created_at to its result being produced, by lane.",
            ["lane"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.queue_time = Histogram(
            f"{p}_queue_time_seconds",
            "From the request's created_at to the worker taking it, by lane.",
            ["lane"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.in_flight = Gauge(f"{p}_in_flight_requests", "Requests taken and not yet committed.", registry=r)
        self.paused_partitions = Gauge(
            f"{p}_paused_partitions",
            "Partitions paused for backpressure or lane priority.",
            ["lane"],
            registry=r,
        )
        self.dlq = Counter(
            f"{p}_dlq_messages", "Messages sent to the dead-letter topic, by reason.", ["reason"], registry=r
        )
        self.storage_latency = Histogram(
            f"{p}_storage_operation_duration_seconds",
            "Object-storage call latency.",
            ["operation"],
            buckets=IO_BUCKETS_S,
            registry=r,
        )
        self.cache_latency = Histogram(
            f"{p}_cache_operation_duration_seconds",
            "Redis call latency.",
            ["operation"],
            buckets=IO_BUCKETS_S,
            registry=r,
        )
        self.dependency_errors = Counter(
            f"{p}_dependency_errors",
            "Failed calls to a dependency (kafka, redis, s3).",
            ["dependency"],
            registry=r,
        )
        self.answers_refused = Counter(
            f"{p}_answers_refused",
            "Second answers to one request, refused (the first stands): a bug, should stay 0.",
            registry=r,
        )
        self.position_rewinds = Counter(
            f"{p}_position_rewinds",
            "Times the consumer handed out an offset it had already taken in the same assignment "
            "(an offset reset): skipped, so nothing is answered twice.",
            registry=r,
        )
        self.commit_latency = Histogram(
            f"{p}_commit_duration_seconds",
            "Offset commit (or transaction commit) latency.",
            buckets=IO_BUCKETS_S,
            registry=r,
        )
        self.model_load_seconds = Gauge(
            f"{p}_model_load_seconds", "How long loading the model took.", registry=r
        )
        self.consumer_lag = Gauge(
            f"{p}_consumer_lag_messages",
            "Lag of this worker's assigned partitions, by lane.",
            ["lane"],
            registry=r,
        )
        self.ready = Gauge(f"{p}_ready", "1 when the worker is ready to take work.", registry=r)
        self.dependency_up = Gauge(
            f"{p}_dependency_up",
            "1 when the worker's last background check reached the dependency (kafka, redis, s3), "
            "0 when it did not. Readiness does not depend on it: work pauses instead.",
            ["dependency"],
            registry=r,
        )
        self.last_progress = Gauge(
            f"{p}_last_progress_timestamp_seconds",
            "When the poll loop last completed an iteration.",
            registry=r,
        )
        self.build_info = Info(f"{p}_build", "Version, engine and model of this worker.", registry=r)
        # Label children resolved once: `labels()` takes a lock and builds a key on every call,
        # which showed up at several percent of the worker's CPU on the per-request paths.
        self.requests_by = {
            (lane, outcome): self.requests.labels(lane=lane, outcome=outcome)
            for lane in LANES
            for outcome in OUTCOMES
        }
        self.end_to_end_by = {lane: self.end_to_end.labels(lane=lane) for lane in LANES}
        self.queue_time_by = {lane: self.queue_time.labels(lane=lane) for lane in LANES}
        self.paused_by = {lane: self.paused_partitions.labels(lane=lane) for lane in LANES}
        self.lag_by = {lane: self.consumer_lag.labels(lane=lane) for lane in LANES}
        self.lookups_by = {
            result: self.cache_lookups.labels(result=result) for result in ("hit", "miss", "error")
        }
