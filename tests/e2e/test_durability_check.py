"""At start-up the worker reads the cluster's durability settings and refuses topics that would
lose what they acknowledge (TTS_DURABILITY_CHECK=enforce, the default), or says so and runs (warn).
On the one-broker local stack RF 1 is all there is and passes; a three-broker cluster with
RF 1 lanes is refused in tests/chaos/test_ha.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic

from consumer.adapters.kafka import check_durability
from tests.support.kafka_io import Lanes
from tests.support.worker import WorkerProcess


def _unclean_lanes(kafka_config: dict[str, Any], make_lanes: Callable[..., Lanes]) -> Lanes:
    """Lanes whose results topic allows unclean leader election."""
    lanes = make_lanes(partitions=1)
    admin = AdminClient(kafka_config)
    for future in admin.delete_topics([lanes.results], operation_timeout=30).values():
        future.result()
    for _ in range(50):  # deletion is asynchronous; creation fails until it is done
        futures = admin.create_topics(
            [NewTopic(lanes.results, 1, 1, config={"unclean.leader.election.enable": "true"})],
            operation_timeout=30,
        )
        try:
            futures[lanes.results].result()
            return lanes
        except Exception:  # TOPIC_ALREADY_EXISTS while the old one is being deleted
            time.sleep(0.2)
    raise AssertionError("could not recreate the results topic")


def test_the_cluster_settings_are_read_as_they_are(
    kafka_config: dict[str, Any], make_lanes: Callable[..., Lanes]
) -> None:
    lanes = make_lanes(partitions=2)
    cluster, problems = check_durability(kafka_config, lanes.all_topics, transaction_timeout_ms=60_000)
    assert problems == [], "one broker, RF 1, min ISR 1: the most a one-broker stack can do"
    assert {t.name for t in cluster.topics} == set(lanes.all_topics)
    assert all(t.replication_factor == 1 and not t.unclean_leader_election for t in cluster.topics)
    assert cluster.brokers >= 1 and cluster.transaction_max_timeout_ms == 900_000
    _, too_long = check_durability(kafka_config, lanes.all_topics, transaction_timeout_ms=1_000_000)
    assert len(too_long) == 1 and "transaction.max.timeout.ms" in too_long[0]


def test_the_worker_refuses_a_topic_that_allows_unclean_leader_election(
    kafka_config: dict[str, Any],
    make_lanes: Callable[..., Lanes],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    lanes = _unclean_lanes(kafka_config, make_lanes)
    worker = start_worker(lanes, "durable-1", {"TTS_ENGINE": "null"}, ready=False)
    assert worker.wait(90) == 2, "a configuration error: exit 2"
    log = worker.log_path.read_text()
    assert f"topic {lanes.results} allows unclean leader election" in log
    assert "TTS_DURABILITY_CHECK=warn" in log, "the message says how to run anyway"

    warned = start_worker(lanes, "durable-2", {"TTS_ENGINE": "null", "TTS_DURABILITY_CHECK": "warn"})
    assert warned.alive()
    lines = [line for line in warned.log_lines() if str(line.get("msg", "")).startswith("kafka durability")]
    assert any("unclean leader election" in str(line.get("msg")) for line in lines)
