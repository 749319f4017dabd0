#!/usr/bin/env python3
"""Generate the Grafana dashboard the Helm chart ships (helm/tts-stream/dashboards/tts-stream.json).

The dashboard is code: edit the panel list below, run `scripts/dashboard.py`, commit both files.
`scripts/dashboard.py --check` exits 1 when the JSON is stale (tests/helm runs it), and a test checks
that every metric the queries use exists in consumer/metrics.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parents[1] / "helm" / "tts-stream" / "dashboards" / "tts-stream.json"

# Every query is scoped to the chosen namespace and scrape job(s).
SEL = 'namespace="$namespace",job=~"$job"'
RATE = "$__rate_interval"


def quantiles(metric: str, by: str, qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> list[tuple[str, str]]:
    """histogram_quantile targets for a histogram, one per quantile."""
    legend_by = "".join(f" {{{{{label}}}}}" for label in by.split(", ") if label)
    group = f"le, {by}" if by else "le"
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{SEL}}}[{RATE}])))",
            f"p{round(q * 100)}{legend_by}",
        )
        for q in qs
    ]


@dataclass
class Panel:
    title: str
    description: str
    targets: list[tuple[str, str]]  # (expr, legend)
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    stack: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


ROWS: list[tuple[str, list[Panel]]] = [
    (
        "Overview",
        [
            Panel(
                "Ready workers",
                "Workers whose engine is loaded and warm (tts_ready), out of all scraped workers.",
                [(f"sum(tts_ready{{{SEL}}})", "ready"), (f"count(tts_ready{{{SEL}}})", "running")],
                kind="stat",
                width=6,
            ),
            Panel(
                "Requests answered / s",
                "All outcomes, both lanes.",
                [(f"sum(rate(tts_requests_total{{{SEL}}}[{RATE}]))", "requests/s")],
                unit="reqps",
                kind="stat",
                width=6,
            ),
            Panel(
                "Cache hit ratio",
                "Share of result-cache lookups that hit (errors count as misses).",
                [
                    (
                        f'sum(rate(tts_cache_lookups_total{{{SEL},result="hit"}}[{RATE}])) / '
                        f"sum(rate(tts_cache_lookups_total{{{SEL}}}[{RATE}]))",
                        "hit ratio",
                    )
                ],
                unit="percentunit",
                kind="stat",
                width=6,
            ),
            Panel(
                "Interactive lag",
                "Messages behind on the interactive lane, as the workers see it (absent at zero replicas).",
                [(f'sum(tts_consumer_lag_messages{{{SEL},lane="interactive"}})', "lag")],
                kind="stat",
                width=6,
            ),
        ],
    ),
    (
        "Throughput and latency",
        [
            Panel(
                "Requests by lane and outcome",
                "Answered requests per second.",
                [
                    (
                        f"sum by (lane, outcome) (rate(tts_requests_total{{{SEL}}}[{RATE}]))",
                        "{{lane}} {{outcome}}",
                    )
                ],
                unit="reqps",
                stack=True,
            ),
            Panel(
                "End-to-end latency",
                "From the request's created_at to its result being produced.",
                quantiles("tts_end_to_end_latency_seconds", "lane"),
                unit="s",
            ),
            Panel(
                "Queue time (p95)",
                "From created_at to a worker taking the request: waiting in Kafka.",
                quantiles("tts_queue_time_seconds", "lane", (0.95,)),
                unit="s",
            ),
            Panel(
                "Audio produced",
                "Seconds of audio synthesised per second of wall time.",
                [(f"sum(rate(tts_audio_produced_seconds_total{{{SEL}}}[{RATE}]))", "audio s/s")],
            ),
        ],
    ),
    (
        "Engine",
        [
            Panel(
                "Batch size",
                "Tasks per engine batch: the mean and the 95th percentile.",
                [
                    (
                        f"sum(rate(tts_engine_batch_size_sum{{{SEL}}}[{RATE}])) / "
                        f"sum(rate(tts_engine_batch_size_count{{{SEL}}}[{RATE}]))",
                        "mean",
                    ),
                    *quantiles("tts_engine_batch_size", "", (0.95,)),
                ],
            ),
            Panel(
                "Real-time factor",
                "Engine seconds per second of audio (below 1 is faster than real time).",
                quantiles("tts_engine_realtime_factor", "", (0.5, 0.95)),
            ),
            Panel(
                "Engine duty cycle",
                "Share of wall time each worker's engine spent synthesising.",
                [(f"sum by (pod) (rate(tts_engine_busy_seconds_total{{{SEL}}}[{RATE}]))", "{{pod}}")],
                unit="percentunit",
            ),
            Panel(
                "Engine batch duration",
                "Engine time per batch.",
                quantiles("tts_engine_batch_duration_seconds", "", (0.5, 0.95)),
                unit="s",
            ),
            Panel(
                "Model load time",
                "How long each worker took to load its model.",
                [(f"max by (pod) (tts_model_load_seconds{{{SEL}}})", "{{pod}}")],
                unit="s",
            ),
            Panel(
                "Engine retries",
                "Engine tasks retried after a transient failure.",
                [(f"sum(rate(tts_engine_retries_total{{{SEL}}}[{RATE}]))", "retries/s")],
            ),
        ],
    ),
    (
        "Kafka",
        [
            Panel(
                "Lag per lane",
                "Messages behind on each lane, summed over workers.",
                [(f"sum by (lane) (tts_consumer_lag_messages{{{SEL}}})", "{{lane}}")],
            ),
            Panel(
                "Paused partitions",
                "Partitions paused for backpressure or lane priority.",
                [(f"sum by (lane) (tts_paused_partitions{{{SEL}}})", "{{lane}}")],
            ),
            Panel(
                "In flight",
                "Requests taken and not yet committed, per worker.",
                [(f"sum by (pod) (tts_in_flight_requests{{{SEL}}})", "{{pod}}")],
            ),
            Panel(
                "Commit latency",
                "Offset or transaction commit latency.",
                quantiles("tts_commit_duration_seconds", "", (0.5, 0.95)),
                unit="s",
            ),
        ],
    ),
    (
        "Cache and dedup",
        [
            Panel(
                "Cache lookups",
                "Result-cache lookups by result.",
                [
                    (
                        f"sum by (result) (rate(tts_cache_lookups_total{{{SEL}}}[{RATE}]))",
                        "{{result}}",
                    )
                ],
                stack=True,
            ),
            Panel(
                "Dedup",
                "Single-flight waits, lease takeovers, coalesced duplicates and fail-open syntheses.",
                [
                    (f"sum(rate(tts_singleflight_waits_total{{{SEL}}}[{RATE}]))", "single-flight waits"),
                    (f"sum(rate(tts_singleflight_takeovers_total{{{SEL}}}[{RATE}]))", "lease takeovers"),
                    (f"sum(rate(tts_coalesced_requests_total{{{SEL}}}[{RATE}]))", "coalesced"),
                    (f"sum(rate(tts_cache_fail_open_total{{{SEL}}}[{RATE}]))", "fail-open"),
                ],
            ),
            Panel(
                "Cache latency (p95)",
                "Redis call latency by operation.",
                quantiles("tts_cache_operation_duration_seconds", "operation", (0.95,)),
                unit="s",
            ),
            Panel(
                "Storage latency (p95)",
                "Object-storage call latency by operation.",
                quantiles("tts_storage_operation_duration_seconds", "operation", (0.95,)),
                unit="s",
            ),
        ],
    ),
    (
        "Errors",
        [
            Panel(
                "Unsuccessful requests",
                "Requests answered with anything but success, by lane and outcome.",
                [
                    (
                        f"sum by (lane, outcome) "
                        f'(rate(tts_requests_total{{{SEL},outcome!="succeeded"}}[{RATE}]))',
                        "{{lane}} {{outcome}}",
                    )
                ],
                unit="reqps",
                stack=True,
            ),
            Panel(
                "Dead-lettered messages",
                "Messages sent to the DLQ topic, by reason.",
                [
                    (
                        f"sum by (reason) (increase(tts_dlq_messages_total{{{SEL}}}[{RATE}]))",
                        "{{reason}}",
                    )
                ],
                stack=True,
            ),
            Panel(
                "Dependency errors",
                "Failed calls to Kafka, Redis and object storage.",
                [
                    (
                        f"sum by (dependency) (rate(tts_dependency_errors_total{{{SEL}}}[{RATE}]))",
                        "{{dependency}}",
                    )
                ],
                width=24,
            ),
        ],
    ),
]


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    height = 4 if panel.kind == "stat" else 8
    targets = [
        {
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "expr": expr,
            "legendFormat": legend,
            "refId": chr(ord("A") + index),
        }
        for index, (expr, legend) in enumerate(panel.targets)
    ]
    body: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": height, "w": panel.width, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
    }
    if panel.kind == "timeseries":
        body["fieldConfig"]["defaults"]["custom"] = {
            "fillOpacity": 10,
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
        }
        body["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi"},
        }
    else:
        body["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    body.update(panel.extra)
    return body


def _variable(name: str, label: str, query: str, *, multi: bool) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": f"{name}-query"},
        "definition": query,
        "refresh": 2,
        "includeAll": multi,
        "multi": multi,
        "sort": 1,
    }


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    panel_id = 1
    y = 0
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id += 1
        y += 1
        x = 0
        row_height = 0
        for panel in row_panels:
            if x + panel.width > 24:
                x = 0
                y += row_height
                row_height = 0
            body = _panel_json(panel, panel_id, x, y)
            panels.append(body)
            panel_id += 1
            x += panel.width
            row_height = max(row_height, body["gridPos"]["h"])
        y += row_height
    return {
        "uid": "tts-stream-workers",
        "title": "tts-stream workers",
        "description": "Throughput, latency, cache, engine, lag and errors of the tts-stream GPU workers.",
        "tags": ["tts-stream", "kafka", "tts"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-3h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "refresh": 1,
                },
                _variable("namespace", "Namespace", "label_values(tts_ready, namespace)", multi=False),
                _variable("job", "Job", 'label_values(tts_ready{namespace="$namespace"}, job)', multi=True),
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT.name} is stale: run scripts/dashboard.py and commit the result", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(Path.cwd()) if OUTPUT.is_relative_to(Path.cwd()) else OUTPUT.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
