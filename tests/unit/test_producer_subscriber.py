"""ResultSubscriber against a fake consumer: where it starts, what it skips, how it waits."""

from __future__ import annotations

from typing import Any

import pytest

from producer import ResultSubscriber, ResultTimeout, StartAt
from producer.errors import KafkaUnavailable
from schemas.codec import result_codec
from schemas.model import ResultStatus, SynthesisResult, Timings
from tests.unit.producer_fakes import FakeConsumer, FakeError, FakeMessage


def _result(request_id: str) -> bytes:
    return result_codec().encode(
        SynthesisResult(request_id, ResultStatus.SUCCEEDED, "null", "1", Timings(1, 2, 3), completed_at_ms=9)
    )


def _subscriber(fake: FakeConsumer, **kwargs: Any) -> ResultSubscriber:
    def factory(config: dict[str, Any]) -> FakeConsumer:
        fake.config = config
        return fake

    return ResultSubscriber(consumer_factory=factory, **kwargs)


def test_reads_committed_results_only_and_commits_nothing() -> None:
    fake = FakeConsumer(partitions={"tts.results": 3}, high=42)
    _subscriber(fake)
    assert fake.config["isolation.level"] == "read_committed"
    assert fake.config["enable.auto.commit"] is False


def test_starts_at_the_current_end_of_every_partition() -> None:
    fake = FakeConsumer(partitions={"tts.results": 3}, high=42)
    _subscriber(fake)
    assert [(tp.partition, tp.offset) for tp in fake.assigned] == [(0, 42), (1, 42), (2, 42)]


def test_starts_from_the_beginning_or_a_time() -> None:
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

    fake = FakeConsumer(partitions={"tts.results": 2})
    _subscriber(fake, start=StartAt.BEGINNING)
    assert {tp.offset for tp in fake.assigned} == {OFFSET_BEGINNING}
    fake = FakeConsumer(partitions={"tts.results": 2})
    _subscriber(fake, start=1_700_000_000_000)
    assert [tp.offset for tp in fake.time_queries] == [1_700_000_000_000] * 2
    # Partition 1 has nothing that recent: it starts at its end.
    assert [(tp.partition, tp.offset) for tp in fake.assigned] == [(0, 5), (1, OFFSET_END)]


def test_a_group_id_subscribes_instead() -> None:
    fake = FakeConsumer(partitions={"tts.results": 2})
    _subscriber(fake, group_id="billing-results", topic="team.results")
    assert fake.subscribed == ["team.results"]
    assert fake.config["group.id"] == "billing-results"
    assert fake.assigned == []


def test_missing_topic_is_reported() -> None:
    fake = FakeConsumer(partitions={})
    with pytest.raises(KafkaUnavailable, match="topics ensure"):
        _subscriber(fake)
    assert fake.closed


def test_undecodable_events_are_skipped_and_counted() -> None:
    fake = FakeConsumer(
        partitions={"tts.results": 1},
        messages=[
            FakeMessage("tts.results", 0, 1, b"garbage"),
            FakeMessage("tts.results", 0, 2, None, err=FakeError("_PARTITION_EOF")),
            FakeMessage("tts.results", 0, 3, _result("r-1")),
        ],
    )
    with _subscriber(fake) as results:
        got = results.poll(0.2)
        assert got is not None
        assert got.request_id == "r-1"
        assert results.undecodable == 1
    assert fake.closed


def test_wait_for_returns_each_requested_result() -> None:
    fake = FakeConsumer(
        partitions={"tts.results": 1},
        messages=[
            FakeMessage("tts.results", 0, i, _result(rid)) for i, rid in enumerate(["x", "a", "b", "a"])
        ],
    )
    with _subscriber(fake) as results:
        found = results.wait_for(["a", "b"], timeout_s=2)
    assert set(found) == {"a", "b"}


def test_wait_for_timeout_carries_what_arrived() -> None:
    fake = FakeConsumer(
        partitions={"tts.results": 1}, messages=[FakeMessage("tts.results", 0, 0, _result("a"))]
    )
    with _subscriber(fake) as results, pytest.raises(ResultTimeout) as caught:
        results.wait_for(["a", "never"], timeout_s=0.3)
    assert set(caught.value.results) == {"a"}
    assert caught.value.missing == frozenset({"never"})


def test_fatal_consumer_errors_are_raised() -> None:
    fake = FakeConsumer(
        partitions={"tts.results": 1},
        messages=[FakeMessage("tts.results", 0, 0, None, err=FakeError("_FATAL", "fenced", is_fatal=True))],
    )
    with _subscriber(fake) as results, pytest.raises(KafkaUnavailable, match="fenced"):
        results.poll(0.1)


class _ElectingConsumer(FakeConsumer):
    """Answers "not leader" a few times, as a broker does right after a topic is created."""

    def __init__(self, failures: int, code: int) -> None:
        super().__init__(partitions={"tts.results": 1}, high=7)
        self.failures = failures
        self.code = code

    def get_watermark_offsets(self, partition: Any, timeout: float = -1, cached: bool = False) -> Any:
        from confluent_kafka import KafkaError, KafkaException

        if self.failures:
            self.failures -= 1
            raise KafkaException(KafkaError(self.code))
        return super().get_watermark_offsets(partition, timeout, cached)


def test_a_leader_election_is_waited_out() -> None:
    from confluent_kafka import KafkaError

    fake = _ElectingConsumer(2, KafkaError.NOT_LEADER_FOR_PARTITION)
    _subscriber(fake, timeout_s=5)
    assert [(tp.partition, tp.offset) for tp in fake.assigned] == [(0, 7)]


def test_a_permanent_offset_error_is_reported() -> None:
    from confluent_kafka import KafkaError

    fake = _ElectingConsumer(1, KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaUnavailable, match="cannot read the offsets"):
        _subscriber(fake, timeout_s=5)
    assert fake.closed
