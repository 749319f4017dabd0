"""Sampling a release over time: replicas, readiness, what the HPA sees, the lag KEDA reads.

The samples are what docs/deploy.md's "Tried on a real cluster" figures come from; each test
writes its own under .infra/k8s/reports/ as JSON, and prints a table.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from tests.support.cluster import Cluster, Release, pod_ready
from tests.support.stack import ROOT

REPORTS = ROOT / ".infra" / "k8s" / "reports"


@dataclass
class Sample:
    t_s: float
    spec_replicas: int
    ready_pods: int
    pods: int
    hpa_desired: int | None
    hpa_current: int | None
    hpa_metrics: dict[str, float]
    lag: dict[str, int]


def lane_lag(kafka_config: dict[str, Any], group: str, topic: str) -> int:
    """Log end minus committed, summed over partitions, as KEDA's kafka scaler computes it
    (a partition the group never committed counts in full: offsetResetPolicy earliest)."""
    consumer = Consumer({**kafka_config, "group.id": group, "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        tps = [TopicPartition(topic, p) for p in partitions]
        committed = consumer.committed(tps, timeout=10)
        total = 0
        for tp in committed:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            total += high - (tp.offset if tp.offset >= 0 else 0)
        return total
    finally:
        consumer.close()


def keda_metric_name(trigger_index: int, topic: str) -> str:
    """The external metric KEDA's kafka trigger publishes (it turns `.`, `/`, `:` into `-`)."""
    normalised = topic
    for char in "./:%":
        normalised = normalised.replace(char, "-")
    return f"s{trigger_index}-kafka-{normalised}"


def keda_desired(lag: int, threshold: int, partitions: int, max_replicas: int) -> int:
    """KEDA's kafka scaler (metric capped at partitions x threshold) fed to the HPA's
    AverageValue formula, clamped to [1, maxReplicas]."""
    metric = lag
    if lag // threshold > partitions:
        metric = partitions * threshold
    return max(1, min(max_replicas, math.ceil(metric / threshold)))


@dataclass
class Recorder:
    """Samples a release every `interval_s` in a background thread."""

    cluster: Cluster
    release: Release
    kafka_config: dict[str, Any]
    interval_s: float = 3.0
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = field(default_factory=time.monotonic)

    def __enter__(self) -> Recorder:
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def now(self) -> float:
        return time.monotonic() - self._t0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.sample())
            except (AssertionError, OSError, KeyError, ValueError):
                pass  # a sample missed during a restart is just a gap in the series
            self._stop.wait(self.interval_s)

    def sample(self) -> Sample:
        ns, name = self.release.namespace, self.release.fullname
        statefulset = self.release.statefulset()
        pods = [p for p in self.release.pods() if not p["metadata"].get("deletionTimestamp")]
        hpa_desired, hpa_current, metrics = None, None, {}
        if self.release.values["autoscaling"]["mode"] == "keda":
            hpa = self.cluster.get("hpa", f"keda-hpa-{name}", "-n", ns)
            status = hpa.get("status", {})
            hpa_desired = status.get("desiredReplicas")
            hpa_current = status.get("currentReplicas")
            for metric in status.get("currentMetrics") or []:
                external = metric.get("external") or {}
                current = external.get("current", {})
                value = current.get("averageValue") or current.get("value") or "0"
                metrics[external["metric"]["name"]] = _quantity(value)
        topics, group = self.release.values["topics"], self.release.values["kafka"]["groupId"]
        lag = {lane: lane_lag(self.kafka_config, group, topics[lane]) for lane in ("requests", "bulk")}
        return Sample(
            t_s=round(self.now(), 1),
            spec_replicas=int(statefulset["spec"].get("replicas", 0)),
            ready_pods=sum(1 for p in pods if pod_ready(p)),
            pods=len(pods),
            hpa_desired=hpa_desired,
            hpa_current=hpa_current,
            hpa_metrics=metrics,
            lag=lag,
        )

    def save(self, name: str, extra: dict[str, Any] | None = None) -> None:
        REPORTS.mkdir(parents=True, exist_ok=True)
        payload = {"samples": [asdict(s) for s in self.samples], **(extra or {})}
        (REPORTS / f"{name}.json").write_text(json.dumps(payload, indent=1))

    def table(self) -> str:
        rows = ["   t s  replicas ready pods hpa-desired  lag(req/bulk)  hpa metric per pod"]
        for s in self.samples:
            per_pod = " ".join(f"{k.split('-kafka-')[0]}={v:g}" for k, v in sorted(s.hpa_metrics.items()))
            rows.append(
                f"{s.t_s:6.0f}  {s.spec_replicas:8d} {s.ready_pods:5d} {s.pods:4d} {s.hpa_desired!s:>11}"
                f"  {s.lag['requests']:5d}/{s.lag['bulk']:<6d}  {per_pod}"
            )
        return "\n".join(rows)


def _quantity(value: str) -> float:
    """A Kubernetes quantity as a number ("250m" is 0.25)."""
    if value.endswith("m"):
        return float(value[:-1]) / 1000
    if value.endswith("k"):
        return float(value[:-1]) * 1000
    return float(value)
