"""Lag, throughput, drain time and KEDA's answer from hand-made offset readings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tts_stream.ops.errors import BadArgument
from tts_stream.ops.keda import ChartScaling, LaneScaling, load_chart_scaling
from tts_stream.ops.lag import PartitionState, Snapshot, eta_seconds, report
from tts_stream.ops.timeparse import format_duration, parse_duration_s, parse_time_ms


def snapshot(
    at: float, interactive: list[tuple[int | None, int]], bulk: list[tuple[int | None, int]]
) -> Snapshot:
    def states(rows: list[tuple[int | None, int]]) -> tuple[PartitionState, ...]:
        return tuple(PartitionState(p, committed, 0, end) for p, (committed, end) in enumerate(rows))

    return Snapshot(
        at,
        "g",
        {"interactive": "req", "bulk": "bulk"},
        {"interactive": states(interactive), "bulk": states(bulk)},
        1,
    )


def test_partition_lag_counts_uncommitted_partitions_by_reset_policy() -> None:
    assert PartitionState(0, 5, 0, 12).lag() == 7
    assert PartitionState(0, None, 3, 12).lag("earliest") == 9
    assert PartitionState(0, None, 3, 12).lag("latest") == 0
    assert PartitionState(0, 2, 5, 12).lag() == 7  # committed before the log start: from the start


def test_eta_is_lag_over_net_drain_rate() -> None:
    assert eta_seconds(0, None, None) == 0.0
    assert eta_seconds(100, 12.0, 2.0) == 10.0
    assert eta_seconds(100, 2.0, 2.0) is None  # not draining
    assert eta_seconds(100, 1.0, 5.0) is None  # growing
    assert eta_seconds(100, None, None) is None


def test_report_measures_rates_between_two_readings_and_asks_keda() -> None:
    before = snapshot(100.0, [(0, 50), (0, 50)], [(0, 0)])
    after = snapshot(110.0, [(30, 60), (30, 60)], [(0, 0)])
    result = report(after, ChartScaling(), before)
    interactive = result.lanes[0]
    assert interactive.lag == 60
    assert interactive.consumed_per_s == pytest.approx(6.0)
    assert interactive.produced_per_s == pytest.approx(2.0)
    assert interactive.eta_s == pytest.approx(15.0)
    # ceil(60 / 20) = 3, but KEDA caps a lane's metric at partitions x threshold: 2 x 20.
    assert interactive.keda.metric == 40
    assert interactive.keda_replicas == 2
    assert result.decision.replicas == 2
    assert result.as_dict()["lanes"][0]["partitions"][0]["lag"] == 30


def test_report_without_a_previous_reading_has_no_rates() -> None:
    result = report(snapshot(1.0, [(0, 10)], [(0, 0)]), ChartScaling())
    assert result.lanes[0].consumed_per_s is None and result.lanes[0].eta_s is None
    assert result.window_s is None


def test_disabled_lane_does_not_scale_and_min_zero_scales_to_zero() -> None:
    chart = ChartScaling(min_replicas=0, bulk=LaneScaling(False, 500, 0))
    idle = report(snapshot(1.0, [(10, 10)], [(0, 5000)]), chart)
    assert idle.lanes[1].keda_replicas is None
    assert idle.decision.replicas == 0 and not idle.decision.active


def test_chart_scaling_reads_values_like_the_templates(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        "autoscaling:\n  minReplicas: 0\n  maxReplicas: 4\n  keda:\n    lanes:\n"
        "      interactive:\n        lagThreshold: 5\nkafka:\n  offsetResetPolicy: latest\n"
    )
    chart = load_chart_scaling(values)
    assert (chart.min_replicas, chart.max_replicas, chart.offset_reset_policy) == (0, 4, "latest")
    assert chart.interactive.lag_threshold == 5
    assert chart.bulk == ChartScaling().bulk  # defaults fill what the file leaves out
    assert load_chart_scaling(values, 2, 8).min_replicas == 2


def test_chart_scaling_refuses_unreadable_or_contradictory_values(tmp_path: Path) -> None:
    with pytest.raises(BadArgument, match="cannot read"):
        load_chart_scaling(tmp_path / "missing.yaml")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(BadArgument, match="not a Helm values file"):
        load_chart_scaling(scalar)
    with pytest.raises(BadArgument, match="exceed"):
        load_chart_scaling(None, 5, 2)


def test_times_and_durations() -> None:
    assert parse_duration_s("90") == 90
    assert parse_duration_s("15m") == 900
    assert parse_duration_s("500ms") == 0.5
    assert parse_time_ms("2h", now=10_000.0) == (10_000 - 7200) * 1000
    assert parse_time_ms("2026-05-01T12:00:00Z") == 1_777_636_800_000
    assert parse_time_ms("1777636800000") == 1_777_636_800_000
    for bad in ("yesterday", "5 parsecs", "-3h"):
        with pytest.raises(BadArgument):
            parse_time_ms(bad)
    with pytest.raises(BadArgument, match="duration"):
        parse_duration_s("2x")
    assert format_duration(None) == "-"
    assert format_duration(75) == "75s"
    assert format_duration(3 * 3600 + 120) == "3h02m"
