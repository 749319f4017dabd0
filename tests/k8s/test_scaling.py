"""KEDA scales the bulk lane up on a backfill's lag and back down once it is drained; and to zero
when idle, woken by one request."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.k8s.observe import REPORTS, Recorder, keda_desired, keda_metric_name
from tests.k8s.traffic import assert_exactly_once, submit, unique_requests
from tests.support.cluster import Cluster, Release, wait_for
from tests.support.kafka_io import ResultReader

BACKFILL = 1500


@pytest.mark.timeout(1200)
def test_keda_scales_the_bulk_lane_up_on_lag_and_down_when_drained(
    cluster: Cluster, make_release: Callable[..., Release], kafka_config: dict[str, Any]
) -> None:
    release = make_release()
    release.install()
    values = release.values
    threshold = values["autoscaling"]["keda"]["lanes"]["bulk"]["lagThreshold"]
    partitions = values["topics"]["partitions"]
    max_replicas = values["autoscaling"]["maxReplicas"]
    reader = ResultReader(kafka_config, values["topics"]["results"])
    try:
        with Recorder(cluster, release, kafka_config) as recorder:
            wait_for("a first sample at one replica", lambda: recorder.samples, 60)
            start = recorder.now()
            ids = submit(kafka_config, values["topics"]["bulk"], unique_requests(BACKFILL, "backfill"))
            submitted_s = recorder.now() - start

            def scaled_up() -> bool:
                return any(s.spec_replicas > 1 for s in recorder.samples)

            wait_for("KEDA to scale the StatefulSet up", scaled_up, 240)
            scale_up_s = next(s.t_s for s in recorder.samples if s.spec_replicas > 1) - start
            assert_exactly_once(reader, ids, timeout_s=900, settle_s=5)
            drained_s = recorder.now() - start

            def back_to_min() -> bool:
                last = recorder.samples[-1]
                return last.spec_replicas == 1 and last.pods == 1

            wait_for("the StatefulSet to scale back to one replica", back_to_min, 420, interval_s=3)
            down_s = recorder.now() - start
        recorder.save(
            "scaling",
            {
                "backfill": BACKFILL,
                "lag_threshold": threshold,
                "partitions": partitions,
                "max_replicas": max_replicas,
                "submitted_s": submitted_s,
                "first_scale_up_s": scale_up_s,
                "drained_s": drained_s,
                "back_to_one_s": down_s,
            },
        )
    finally:
        reader.close()
    print(f"\n{recorder.table()}")
    print(
        f"[k8s] {BACKFILL} bulk requests submitted in {submitted_s:.0f} s; first scale-up after "
        f"{scale_up_s:.0f} s; drained after {drained_s:.0f} s; back to one replica after {down_s:.0f} s"
    )

    samples = recorder.samples
    peak = max(s.spec_replicas for s in samples)
    assert 1 < peak <= max_replicas
    # the HPA asked for what KEDA's formula gives for the lag it was shown: the bulk metric per pod
    # times the pods is the capped lag; ceil(that / threshold), clamped to [1, maxReplicas]
    bulk_metric = keda_metric_name(1, values["topics"]["bulk"])
    checked = 0
    for s in samples:
        if s.hpa_desired is None or bulk_metric not in s.hpa_metrics or not s.hpa_current:
            continue
        # an AverageValue metric is reported per pod of the count the HPA computed it for
        shown = round(s.hpa_metrics[bulk_metric] * s.hpa_current)
        # KEDA caps the lag at partitions x threshold only once lag // threshold exceeds the
        # partitions (integer division): a lag between P*T and (P+1)*T passes uncapped
        assert shown // threshold <= partitions, f"KEDA did not cap the metric: {shown}"
        expected = keda_desired(shown, threshold, partitions, max_replicas)
        # the HPA's tolerance (10%) and stabilisation can hold the current count; never exceed it
        assert s.hpa_desired <= max(expected, s.spec_replicas), (s, expected)
        checked += 1
    assert checked, "the HPA never reported the bulk lane's metric"
    assert samples[-1].spec_replicas == 1


@pytest.mark.timeout(600)
def test_scale_to_zero_when_idle_and_one_request_wakes_it(
    cluster: Cluster, make_release: Callable[..., Release], kafka_config: dict[str, Any]
) -> None:
    def scale_to_zero(values: dict[str, Any]) -> None:
        values["autoscaling"]["minReplicas"] = 0
        values["autoscaling"]["keda"].update({"cooldownPeriod": 20, "initialCooldownPeriod": 0})

    release = make_release(values=scale_to_zero)
    started = time.monotonic()
    release.install()
    topics = release.values["topics"]
    wait_for(
        "KEDA to scale the idle StatefulSet to zero",
        lambda: release.statefulset()["spec"]["replicas"] == 0,
        240,
    )
    to_zero_s = time.monotonic() - started
    wait_for("the last worker to go", lambda: not release.pods(), 120)

    reader = ResultReader(kafka_config, topics["results"])
    try:
        submitted = time.monotonic()
        ids = submit(kafka_config, topics["requests"], unique_requests(3, "wake"))
        assert_exactly_once(reader, ids, timeout_s=240, settle_s=3)
        wake_s = time.monotonic() - submitted
    finally:
        reader.close()
    assert release.statefulset()["spec"]["replicas"] >= 1
    figures = {"install_to_zero_s": to_zero_s, "request_to_answer_from_zero_s": wake_s}
    print(f"\n[k8s] scale to zero: {figures}")
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "scale-to-zero.json").write_text(json.dumps(figures, indent=1))
