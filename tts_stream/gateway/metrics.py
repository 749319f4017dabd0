"""The gateway's Prometheus metrics, on a given registry (tests get a fresh one).

Labels are bounded: the route template (never the path with an id in it), the status code,
the outcome, the rejection reason. Never a key name: keys come and go with the Secret.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tts_gateway_requests",
            "HTTP requests answered, by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "tts_gateway_request_duration_seconds",
            "Time to answer an HTTP request, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.wait = Histogram(
            "tts_gateway_result_wait_seconds",
            "Time from producing a request to its result arriving, by outcome (result, timeout).",
            ["outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.waiters = Gauge(
            "tts_gateway_waiters",
            "Requests waiting for a result or a broker ack on this replica.",
            registry=r,
        )
        self.rejected = Counter(
            "tts_gateway_rejected",
            "Requests refused before reaching Kafka, by reason.",
            ["reason"],
            registry=r,
        )
        self.lane_lag = Gauge(
            "tts_gateway_interactive_lag_messages",
            "The workers' interactive-lane lag as this replica last read it.",
            registry=r,
        )
        self.redis_failures = Counter(
            "tts_gateway_redis_failures",
            "Redis calls that failed (rate limits then fail open for synchronous calls).",
            registry=r,
        )
        self.build = Info("tts_gateway_build", "Version of the gateway.", registry=r)
        self._children: dict[tuple[str, int], Counter] = {}

    def answered(self, route: str, status: int, seconds: float) -> None:
        child = self._children.get((route, status))
        if child is None:
            child = self._children[(route, status)] = self.requests.labels(route=route, status=str(status))
        child.inc()
        self.duration.labels(route=route).observe(seconds)
