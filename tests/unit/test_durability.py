"""The settings that decide whether an acknowledged record survives a broker's loss: the
cluster's (schemas/durability.py), the worker's clients' and the producer library's."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.adapters.kafka import consumer_config, producer_config
from producer import TtsProducer, UnsafeProducerConfig
from schemas.durability import ClusterDurability, TopicDurability, findings


def _cluster(
    brokers: int, rf: int, isr: int, unclean: bool = False, max_txn: int | None = 900_000
) -> ClusterDurability:
    return ClusterDurability(brokers, (TopicDurability("tts.requests", rf, isr, unclean),), max_txn)


@pytest.mark.parametrize(("brokers", "rf", "isr"), [(1, 1, 1), (3, 3, 2), (5, 3, 2), (5, 5, 3)])
def test_durable_layouts_pass_and_a_single_broker_stack_is_one(brokers: int, rf: int, isr: int) -> None:
    assert findings(_cluster(brokers, rf, isr), transaction_timeout_ms=60_000) == []


@pytest.mark.parametrize(
    ("cluster", "says"),
    [
        (_cluster(3, 1, 1), "replication factor 1 on a 3-broker cluster"),
        (_cluster(3, 3, 1), "min.insync.replicas=1"),
        (_cluster(3, 3, 3), "any one broker down refuses every write"),
        (_cluster(3, 3, 2, unclean=True), "unclean leader election"),
        (_cluster(3, 2, 1), "replication factor 2"),
    ],
)
def test_what_would_lose_or_refuse_acknowledged_records_is_named(
    cluster: ClusterDurability, says: str
) -> None:
    problems = findings(cluster, transaction_timeout_ms=60_000)
    assert any(says in problem for problem in problems), problems
    assert all("tts.requests" in problem for problem in problems)


def test_a_transaction_timeout_the_brokers_refuse_is_named() -> None:
    (problem,) = findings(_cluster(3, 3, 2, max_txn=30_000), transaction_timeout_ms=60_000)
    assert "transaction.max.timeout.ms=30000" in problem


def test_the_workers_clients_keep_their_guarantees_whatever_raw_properties_say() -> None:
    """TTS_KAFKA_EXTRA reaches every client; it must not undo acks, idempotence, transactions
    or read_committed."""
    weak: dict[str, Any] = {
        "acks": "1",
        "enable.idempotence": False,
        "isolation.level": "read_uncommitted",
        "enable.auto.commit": True,
        "transaction.timeout.ms": 900_000,
    }
    produced = producer_config(weak, transactional_id="g.w", transaction_timeout_ms=60_000)
    assert (produced["acks"], produced["enable.idempotence"], produced["transaction.timeout.ms"]) == (
        "all",
        True,
        60_000,
    )
    consumed = consumer_config(
        weak,
        group_id="g",
        instance_id="w",
        group_protocol="consumer",
        remote_assignor="range",
        session_timeout_ms=45_000,
        max_poll_interval_ms=300_000,
    )
    assert (consumed["isolation.level"], consumed["enable.auto.commit"]) == ("read_committed", False)


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"acks": "1"}, "acks=1"),
        ({"acks": 0}, "acks=0"),
        ({"enable.idempotence": "false"}, "enable.idempotence=false"),
        ({"max.in.flight.requests.per.connection": 10}, "max.in.flight"),
    ],
)
def test_the_producer_library_refuses_properties_that_weaken_delivery(
    config: dict[str, Any], says: str
) -> None:
    with pytest.raises(UnsafeProducerConfig, match=says):
        TtsProducer(bootstrap_servers="127.0.0.1:1", config=config, producer_factory=lambda _c: None)


def test_the_producer_library_accepts_tuning_that_keeps_delivery() -> None:
    made: list[dict[str, Any]] = []
    TtsProducer(
        bootstrap_servers="127.0.0.1:1",
        config={"acks": "-1", "linger.ms": 50, "max.in.flight.requests.per.connection": 1},
        producer_factory=made.append,
    )
    assert made and made[0]["linger.ms"] == 50
