"""`tts-stream lag` predicts KEDA with the chart's settings: its defaults must be values.yaml's,
and the triggers it builds from values must be the ones the chart renders."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helm.chart import load_values, render
from tts_stream.ops.keda import ChartScaling, KafkaTrigger


def test_defaults_are_the_charts() -> None:
    assert ChartScaling() == ChartScaling.from_values(load_values())


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {
            "autoscaling.minReplicas": 0,
            "autoscaling.maxReplicas": 6,
            "topics.partitions": 6,
            "autoscaling.keda.lanes.interactive.lagThreshold": 7,
            "autoscaling.keda.lanes.bulk.activationLagThreshold": 3,
            "kafka.offsetResetPolicy": "latest",
            "topics.job.initGroupOffsets": True,
        },
    ],
)
def test_triggers_match_the_rendered_scaled_object(overrides: dict[str, Any]) -> None:
    values: dict[str, Any] = {
        "kafka.bootstrapServers": "kafka:9092",
        "redis.url": "redis://redis:6379/0",
        "model.persistence.existingClaim": "tts-models",
        **overrides,
    }
    scaled_object = render(values=values).one("ScaledObject")
    rendered = [KafkaTrigger.from_metadata(t["metadata"]) for t in scaled_object["spec"]["triggers"]]

    chart_values = load_values()
    for dotted, value in overrides.items():
        node = chart_values
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    chart = ChartScaling.from_values(chart_values)
    group = chart_values["kafka"]["groupId"]
    topics = {"interactive": chart_values["topics"]["requests"], "bulk": chart_values["topics"]["bulk"]}
    assert [chart.trigger(lane, topics[lane], group) for lane in ("interactive", "bulk")] == rendered
    spec = scaled_object["spec"]
    assert chart.scaled_object_spec() == {
        "minReplicaCount": spec["minReplicaCount"],
        "maxReplicaCount": spec["maxReplicaCount"],
    }
