"""KEDA's `kafka` scaler and the HPA, as documented, reduced to arithmetic.

Source: kedacore/keda v2.20.2 `pkg/scalers/kafka_scaler.go` (getLagForPartition, getTotalLag,
GetMetricsAndActivity), `pkg/scaling/executor/scale_scaledobjects.go` (0 <-> 1) and the Kubernetes
HPA replica calculator for External AverageValue metrics. docs/deploy.md explains the same rules
to operators; `tts-stream lag` uses them to say what KEDA would ask for, and
tests/helm/test_keda_scaling.py feeds them real offsets from the local broker.

Not modelled: `excludePersistentLag` (needs the previous poll's offsets), `limitToPartitionsWithLag`
and `ensureEvenDistributionOfPartitions` (the chart never sets them), and the HPA `behavior` rate
limits, which decide how fast the target below is reached, not what it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from schemas.topics import Lane
from tts_stream.ops.errors import BadArgument

HPA_TOLERANCE = 0.1  # the kube-controller-manager default


@dataclass(frozen=True)
class KafkaTrigger:
    topic: str
    consumer_group: str
    lag_threshold: int
    activation_lag_threshold: int
    offset_reset_policy: str
    allow_idle_consumers: bool
    scale_to_zero_on_invalid_offset: bool
    exclude_persistent_lag: bool

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> KafkaTrigger:
        """Read a rendered trigger's metadata with KEDA's defaults for keys that are absent."""

        def flag(key: str) -> bool:
            return metadata.get(key, "false").lower() == "true"

        return cls(
            topic=metadata["topic"],
            consumer_group=metadata["consumerGroup"],
            lag_threshold=int(metadata.get("lagThreshold", "10")),
            activation_lag_threshold=int(metadata.get("activationLagThreshold", "0")),
            offset_reset_policy=metadata.get("offsetResetPolicy", "latest"),
            allow_idle_consumers=flag("allowIdleConsumers"),
            scale_to_zero_on_invalid_offset=flag("scaleToZeroOnInvalidOffset"),
            exclude_persistent_lag=flag("excludePersistentLag"),
        )


@dataclass(frozen=True)
class PartitionOffsets:
    partition: int
    committed: int | None  # None: the group has no committed offset for this partition
    log_end: int


def partition_lag(trigger: KafkaTrigger, offsets: PartitionOffsets) -> tuple[int, int]:
    """(lag used for scaling, lag used for activation) of one partition."""
    if offsets.committed is None:
        if trigger.scale_to_zero_on_invalid_offset:
            return 0, 0
        if trigger.offset_reset_policy == "latest":
            return 1, 1  # "keep one consumer so it can commit"
        return offsets.log_end, offsets.log_end  # earliest: everything up to the log end
    lag = offsets.log_end - offsets.committed
    return lag, lag


@dataclass(frozen=True)
class TriggerReading:
    metric: int  # the value handed to the HPA (sum of lags, capped)
    active: bool  # KEDA's 0 <-> 1 decision
    total_lag: int  # uncapped sum, for messages


def read_trigger(trigger: KafkaTrigger, partitions: Sequence[PartitionOffsets]) -> TriggerReading:
    if trigger.exclude_persistent_lag:
        raise NotImplementedError("excludePersistentLag depends on the previous poll; not modelled")
    lags = [partition_lag(trigger, p) for p in partitions]
    total = sum(lag for lag, _ in lags)
    total_for_activation = sum(lag for _, lag in lags)
    metric = total
    if not trigger.allow_idle_consumers:
        upper_bound = len(partitions)
        # Go int64 division truncates: lag in (P*T, (P+1)*T) is not capped (KEDA issue #4483).
        if total // trigger.lag_threshold > upper_bound:
            metric = upper_bound * trigger.lag_threshold
    return TriggerReading(
        metric=metric,
        active=total_for_activation > trigger.activation_lag_threshold,
        total_lag=total,
    )


def hpa_replicas_for(reading: TriggerReading, threshold: int, current: int) -> int:
    """The HPA's proposal for one External AverageValue metric, before clamping."""
    if current > 0:
        ratio = reading.metric / (threshold * current)
        if abs(1.0 - ratio) <= HPA_TOLERANCE:
            return current
    return math.ceil(reading.metric / threshold)


@dataclass(frozen=True)
class ScaleDecision:
    replicas: int
    active: bool
    per_trigger: tuple[int, ...]


def desired_replicas(
    scaled_object_spec: Mapping[str, Any],
    readings: Sequence[tuple[KafkaTrigger, TriggerReading]],
    current: int | None = None,
) -> ScaleDecision:
    """The replica count the ScaledObject converges to for these readings.

    `current` is the running count (default: what KEDA starts from, max(minReplicaCount, 1)).
    The result assumes the cooldown has passed when the triggers are inactive.
    """
    min_count = int(scaled_object_spec.get("minReplicaCount", 0))
    max_count = int(scaled_object_spec.get("maxReplicaCount", 100))
    active = any(reading.active for _, reading in readings)
    hpa_min = max(min_count, 1)
    if current is None or current == 0:
        current = hpa_min
    proposals = tuple(
        hpa_replicas_for(reading, trigger.lag_threshold, current) for trigger, reading in readings
    )
    if not active and min_count == 0:
        return ScaleDecision(0, active, proposals)
    replicas = min(max(max(proposals, default=hpa_min), hpa_min), max_count)
    return ScaleDecision(replicas, active, proposals)


# ------------------------------------------------------------------------ the chart's settings --

LANES = tuple(lane.value for lane in Lane)


@dataclass(frozen=True)
class LaneScaling:
    enabled: bool
    lag_threshold: int
    activation_lag_threshold: int


@dataclass(frozen=True)
class ChartScaling:
    """The Helm values that decide the ScaledObject, with the chart's defaults.

    `from_values` reads a values mapping the way the chart's templates do (the defaults of
    helm/tts-stream/values.yaml fill what is missing; tests/helm/test_ops_keda.py keeps the two
    in step), so `tts-stream lag --values my-values.yaml` answers for a given install.
    """

    min_replicas: int = 1
    max_replicas: int = 12
    offset_reset_policy: str = "earliest"
    exclude_persistent_lag: bool = False
    interactive: LaneScaling = LaneScaling(True, 20, 0)
    bulk: LaneScaling = LaneScaling(True, 500, 0)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> ChartScaling:
        base = cls()
        autoscaling = _section(values, "autoscaling")
        keda = _section(autoscaling, "keda")
        lanes = _section(keda, "lanes")
        kafka = _section(values, "kafka")

        def lane(name: str, default: LaneScaling) -> LaneScaling:
            cfg = _section(lanes, name)
            return LaneScaling(
                enabled=bool(cfg.get("enabled", default.enabled)),
                lag_threshold=int(cfg.get("lagThreshold", default.lag_threshold)),
                activation_lag_threshold=int(
                    cfg.get("activationLagThreshold", default.activation_lag_threshold)
                ),
            )

        return cls(
            min_replicas=int(autoscaling.get("minReplicas", base.min_replicas)),
            max_replicas=int(autoscaling.get("maxReplicas", base.max_replicas)),
            offset_reset_policy=str(kafka.get("offsetResetPolicy", base.offset_reset_policy)),
            exclude_persistent_lag=bool(keda.get("excludePersistentLag", base.exclude_persistent_lag)),
            interactive=lane("interactive", base.interactive),
            bulk=lane("bulk", base.bulk),
        )

    def lane(self, name: str) -> LaneScaling:
        if name == "interactive":
            return self.interactive
        if name == "bulk":
            return self.bulk
        raise ValueError(f"unknown lane {name!r}")

    def trigger(self, lane: str, topic: str, group: str) -> KafkaTrigger:
        """The trigger the chart renders for `lane` (templates/scaledobject.yaml)."""
        cfg = self.lane(lane)
        return KafkaTrigger(
            topic=topic,
            consumer_group=group,
            lag_threshold=cfg.lag_threshold,
            activation_lag_threshold=cfg.activation_lag_threshold,
            offset_reset_policy=self.offset_reset_policy,
            allow_idle_consumers=False,
            scale_to_zero_on_invalid_offset=False,
            # Not modelled (it needs the previous poll); reading with it off gives the upper bound.
            exclude_persistent_lag=False,
        )

    def scaled_object_spec(self) -> dict[str, int]:
        return {"minReplicaCount": self.min_replicas, "maxReplicaCount": self.max_replicas}


def _section(values: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    found = values.get(key)
    return found if isinstance(found, Mapping) else {}


def load_chart_scaling(
    values_file: Path | None = None, min_replicas: int | None = None, max_replicas: int | None = None
) -> ChartScaling:
    """The chart's settings: its defaults, or a values file of an install, with overrides."""
    chart = ChartScaling()
    if values_file is not None:
        try:
            import yaml
        except ModuleNotFoundError as exc:
            raise BadArgument("--values needs PyYAML: pip install 'tts-stream[console]'") from exc
        try:
            loaded = yaml.safe_load(values_file.read_text("utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise BadArgument(f"cannot read Helm values from {values_file}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise BadArgument(f"{values_file} is not a Helm values file (a YAML mapping)")
        chart = ChartScaling.from_values(loaded)
    if min_replicas is not None:
        chart = replace(chart, min_replicas=min_replicas)
    if max_replicas is not None:
        chart = replace(chart, max_replicas=max_replicas)
    if chart.min_replicas > chart.max_replicas:
        raise BadArgument(f"min replicas {chart.min_replicas} exceed max replicas {chart.max_replicas}")
    return chart
