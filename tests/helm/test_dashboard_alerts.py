"""The Grafana dashboard and the PrometheusRule read only series the worker really exports (issue 6, item 5).

The catalogue comes from the worker itself: `Metrics()` on a fresh registry, expanded to the series
names Prometheus stores (`_total`, `_bucket`/`_sum`/`_count`, `_info`) with each family's labels.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from consumer.metrics import Metrics
from tests.helm.chart import CHART, ROOT, render_scenario
from tests.helm.promql import SeriesUse, series

# Labels Prometheus or the Prometheus Operator attach at scrape time, not the worker.
TARGET_LABELS = frozenset({"job", "namespace", "pod", "instance", "service", "container", "endpoint"})
# Series that Prometheus itself produces for every target.
PROMETHEUS_SERIES = {"up": frozenset[str]()}

REQUIRED_ALERTS = {
    "TTSStreamLagGrowing",
    "TTSStreamNoProgress",
    "TTSStreamErrorRatioHigh",
    "TTSStreamDeadLetters",
    "TTSStreamCacheDown",
    "TTSStreamDependencyDown",
    "TTSStreamPodsNotReady",
}


def worker_series() -> dict[str, frozenset[str]]:
    """Series name -> label names, for every metric `consumer.metrics.Metrics` registers."""
    metrics = Metrics()
    catalogue: dict[str, frozenset[str]] = {}
    for collector in vars(metrics).values():
        if not isinstance(collector, MetricWrapperBase):
            continue
        name, kind = collector._name, collector._type
        labels = frozenset(collector._labelnames)
        if kind == "counter":
            catalogue[f"{name}_total"] = labels
            catalogue[f"{name}_created"] = labels
        elif kind == "histogram":
            catalogue[f"{name}_bucket"] = labels | {"le"}
            catalogue[f"{name}_sum"] = labels
            catalogue[f"{name}_count"] = labels
            catalogue[f"{name}_created"] = labels
        elif kind == "info":
            catalogue[f"{name}_info"] = labels
        else:
            catalogue[name] = labels
    # Cross-check against what the registry exposes (families without children expose no samples).
    families = {family.name for family in metrics.registry.collect()}
    assert families == {c._name for c in vars(metrics).values() if isinstance(c, MetricWrapperBase)}
    return catalogue


def unknown_uses(uses: set[SeriesUse]) -> list[str]:
    known = {**worker_series(), **PROMETHEUS_SERIES}
    problems = []
    for use in sorted(uses, key=lambda u: u.metric):
        if use.metric not in known:
            problems.append(f"{use.metric}: not a series the worker exports")
            continue
        stray = use.labels - known[use.metric] - TARGET_LABELS
        if stray:
            problems.append(f"{use.metric}: no label(s) {sorted(stray)}")
    return problems


def dashboard() -> dict[str, Any]:
    data = json.loads((CHART / "dashboards" / "tts-stream.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def dashboard_exprs() -> list[str]:
    return [t["expr"] for panel in dashboard()["panels"] for t in panel.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    rule = render_scenario("monitoring").one("PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


# ---------------------------------------------------------------- the reader is trustworthy ------


def test_promql_reader_finds_metrics_and_labels() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, lane) (rate(tts_end_to_end_latency_seconds_bucket"
        '{namespace="$namespace",lane=~"a|b"}[$__rate_interval]))) / ignoring(pod) '
        "tts_ready > bool 1e3 and on (namespace) (time() - tts_last_progress_timestamp_seconds offset 5m)"
    )
    assert series(expr) == {
        SeriesUse("tts_end_to_end_latency_seconds_bucket", frozenset({"namespace", "lane"})),
        SeriesUse("tts_ready", frozenset()),
        SeriesUse("tts_last_progress_timestamp_seconds", frozenset()),
    }


def test_catalogue_rejects_unknown_names_and_labels() -> None:
    assert unknown_uses(series('rate(tts_requests_total{outcome="failed"}[5m])')) == []
    assert unknown_uses(series("rate(tts_request_total[5m])")) == [
        "tts_request_total: not a series the worker exports"
    ]
    assert unknown_uses(series('tts_ready{lane="bulk"}')) == ["tts_ready: no label(s) ['lane']"]


# ---------------------------------------------------------------- the dashboard ------------------


def test_dashboard_json_is_generated_from_scripts_dashboard_py() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "dashboard.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_dashboard_query_reads_existing_series() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    problems = [f"{p}   in: {e}" for e in exprs for p in unknown_uses(series(e))]
    assert problems == []


def test_dashboard_covers_what_operators_watch() -> None:
    used = {use.metric for expr in dashboard_exprs() for use in series(expr)}
    for metric in (
        "tts_requests_total",  # throughput and errors
        "tts_end_to_end_latency_seconds_bucket",  # latency percentiles
        "tts_cache_lookups_total",  # cache hit ratio
        "tts_engine_batch_size_bucket",  # batch size
        "tts_engine_realtime_factor_bucket",  # RTF
        "tts_consumer_lag_messages",  # lag per lane
        "tts_dlq_messages_total",  # DLQ
        "tts_dependency_errors_total",
    ):
        assert metric in used, f"the dashboard has no panel on {metric}"
    assert any("histogram_quantile(0.99" in e for e in dashboard_exprs())


def test_dashboard_ships_in_the_configmap() -> None:
    configmap = render_scenario("monitoring").one("ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert json.loads(configmap["data"]["tts-stream.json"]) == dashboard()


# ---------------------------------------------------------------- the alerts ---------------------


def test_alerts_cover_the_failure_modes() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= REQUIRED_ALERTS


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_reads_existing_series(rule: dict[str, Any]) -> None:
    uses = series(str(rule["expr"]))
    assert uses, "an alert that reads no series can never fire"
    assert unknown_uses(uses) == []
    # Every worker series an alert reads is scoped to this release.
    for use in uses:
        assert {"namespace", "job"} <= use.labels, f"{use.metric} is not scoped to the release"
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert rule["labels"]["team"] == "speech"
    assert rule["annotations"]["runbook_url"].endswith("#" + rule["alert"].lower())


# ------------------------------------------------------- the operator's guide -------------------


def test_operations_guide_explains_every_metric_and_alert() -> None:
    """docs/operations.md promises an explanation of every metric and alert: a new one must come
    with its paragraph there."""
    guide = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    metrics = Metrics()
    families = sorted(c._name for c in vars(metrics).values() if isinstance(c, MetricWrapperBase))
    alerts = sorted(str(rule["alert"]) for rule in alert_rules())
    assert families and alerts
    assert [name for name in families + alerts if name not in guide] == []
