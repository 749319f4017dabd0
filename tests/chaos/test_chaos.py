"""Chaos: workers under steady load while workers die and Redis, S3 and Kafka go away.

Every scenario runs against a private stack (tests/chaos/conftest.py) and ends with the same
audit (harness.assert_no_loss): one result per request for a read_committed subscriber under
exactly_once (at least one under at_least_once), all succeeded, every audio object present and
decodable, an empty DLQ, and every worker back and ready without help beyond a restart after a
SIGKILL. The short scenario runs in `make test`; the rest (`-m slow`) in `make chaos`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import ChaosReport, Scenario, ScenarioConfig, run_scenario
from tests.chaos.private_stack import PrivateStack
from tests.support.kafka_io import Lanes

pytestmark = pytest.mark.timeout(900)


def _run(
    config: ScenarioConfig,
    stack: PrivateStack,
    make_lanes: Callable[..., Lanes],
    s3: Any,
    log_dir: Path,
    report_dir: Path,
    faults: Callable[[Scenario], None],
    *,
    allowed_exit_codes: frozenset[int] = frozenset(),
) -> tuple[ChaosReport, Scenario]:
    lanes = make_lanes(config.partitions)
    return run_scenario(
        config, stack, lanes, s3, log_dir, report_dir, faults, allowed_exit_codes=allowed_exit_codes
    )


def test_short_chaos_kills_and_outages_lose_nothing(
    healthy_stack: PrivateStack,
    private_lanes: Callable[..., Lanes],
    private_s3: Any,
    tmp_path: Path,
    report_dir: Path,
) -> None:
    """The `make test` version: a SIGKILL; Redis away for 15 s with a second SIGKILL inside it (the
    restart must come up without Redis); S3 away for 12 s; a broker restart (no worker may
    wedge on it)."""

    def faults(s: Scenario) -> None:
        s.run_for(8)
        s.kill_worker(0)
        s.run_for(8)
        redis_down = s.begin_outage("redis")
        s.run_for(4)
        s.kill_worker(1)
        s.run_for(11)
        s.end_outage("redis", redis_down)
        s.run_for(6)
        s.outage("s3", 12)
        s.run_for(6)
        s.restart("kafka")
        s.run_for(8)

    report, _ = _run(
        ScenarioConfig("short", workers=3, partitions=6, rate_per_s=15),
        healthy_stack,
        private_lanes,
        private_s3,
        tmp_path,
        report_dir,
        faults,
        allowed_exit_codes=frozenset({1}),
    )
    assert sorted(f.kind for f in report.faults) == ["kafka", "kill", "kill", "redis", "s3"]
    assert all(f.caught_up_after_s is not None for f in report.faults)


# ------------------------------------------------------------------------ the full run (make chaos)


@pytest.mark.slow
@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_repeated_sigkills_lose_nothing(
    guarantee: str,
    healthy_stack: PrivateStack,
    private_lanes: Callable[..., Lanes],
    private_s3: Any,
    tmp_path: Path,
    report_dir: Path,
) -> None:
    """Six SIGKILLs, each of the three workers twice, 12 s apart, under 20 requests/s."""

    def faults(s: Scenario) -> None:
        s.run_for(8)
        for kill in range(6):
            s.kill_worker(kill % 3)
            s.run_for(12)

    report, _ = _run(
        ScenarioConfig(f"sigkill-{guarantee}", rate_per_s=20, guarantee=guarantee),
        healthy_stack,
        private_lanes,
        private_s3,
        tmp_path,
        report_dir,
        faults,
    )
    assert [f.kind for f in report.faults] == ["kill"] * 6
    assert all(f.worker_ready_after_s is not None for f in report.faults)


@pytest.mark.slow
@pytest.mark.parametrize("service", ["redis", "s3"])
def test_a_30_second_outage_pauses_and_loses_nothing(
    service: str,
    healthy_stack: PrivateStack,
    private_lanes: Callable[..., Lanes],
    private_s3: Any,
    tmp_path: Path,
    report_dir: Path,
) -> None:
    """Redis or S3 stopped for 30 s under 15 requests/s: no failure, no exit, no loss. (Under
    at_least_once the outages take the same path; the guarantee only changes publishing.)"""

    def faults(s: Scenario) -> None:
        s.run_for(10)
        s.outage(service, 30)
        s.run_for(15)

    report, _ = _run(
        ScenarioConfig(f"{service}-30s"),
        healthy_stack,
        private_lanes,
        private_s3,
        tmp_path,
        report_dir,
        faults,
    )
    (outage,) = report.faults
    assert outage.ended_s - outage.started_s >= 30


@pytest.mark.slow
@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_broker_restarts_lose_nothing(
    guarantee: str,
    healthy_stack: PrivateStack,
    private_lanes: Callable[..., Lanes],
    private_s3: Any,
    tmp_path: Path,
    report_dir: Path,
) -> None:
    """Two broker restarts 30 s apart under 15 requests/s."""

    def faults(s: Scenario) -> None:
        s.run_for(10)
        s.restart("kafka")
        s.run_for(30)
        s.restart("kafka")
        s.run_for(15)

    _run(
        ScenarioConfig(f"kafka-restarts-{guarantee}", guarantee=guarantee),
        healthy_stack,
        private_lanes,
        private_s3,
        tmp_path,
        report_dir,
        faults,
        allowed_exit_codes=frozenset({1}),
    )


@pytest.mark.slow
def test_kills_during_a_redis_outage(
    healthy_stack: PrivateStack,
    private_lanes: Callable[..., Lanes],
    private_s3: Any,
    tmp_path: Path,
    report_dir: Path,
) -> None:
    """Faults overlap in real life: workers die and restart while Redis is away."""

    def faults(s: Scenario) -> None:
        s.run_for(8)
        started = s.begin_outage("redis")
        s.run_for(5)
        s.kill_worker(0)
        s.run_for(10)
        s.kill_worker(1)
        s.run_for(15)
        s.end_outage("redis", started)
        s.run_for(15)

    _run(
        ScenarioConfig("kills-during-redis-outage"),
        healthy_stack,
        private_lanes,
        private_s3,
        tmp_path,
        report_dir,
        faults,
    )


@pytest.mark.slow
def test_real_speech_survives_a_kill_and_outages(
    healthy_stack: PrivateStack,
    private_lanes: Callable[..., Lanes],
    private_s3: Any,
    tmp_path: Path,
    report_dir: Path,
) -> None:
    """The espeak engine (real speech, real CPU time): a SIGKILL, Redis and S3 away for 30 s."""

    def faults(s: Scenario) -> None:
        s.run_for(10)
        s.kill_worker(0)
        s.run_for(12)
        s.outage("redis", 30)
        s.run_for(8)
        s.outage("s3", 30)
        s.run_for(15)

    report, _ = _run(
        ScenarioConfig(
            "espeak", workers=2, partitions=4, rate_per_s=3, engine="espeak", answer_timeout_s=300
        ),
        healthy_stack,
        private_lanes,
        private_s3,
        tmp_path,
        report_dir,
        faults,
    )
    assert report.objects_checked >= report.requests * 0.8, "speech differs per text: one object each"
