"""The confluent-kafka calls the producer side makes, as `Protocol`s, so unit tests can hand in
fakes and need neither a broker nor the C library's behaviour."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

DeliveryCallback = Callable[[Any, Any], None]
Headers = Sequence[tuple[str, bytes]]


class KafkaProducerPort(Protocol):
    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        callback: DeliveryCallback | None = None,
        on_delivery: DeliveryCallback | None = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None: ...

    def poll(self, timeout: float = -1) -> int: ...

    def flush(self, timeout: float = -1) -> int: ...

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any: ...

    def __len__(self) -> int: ...


class TransactionalProducerPort(KafkaProducerPort, Protocol):
    def init_transactions(self, timeout: float = -1) -> None: ...

    def begin_transaction(self) -> None: ...

    def commit_transaction(self, timeout: float = -1) -> None: ...

    def abort_transaction(self, timeout: float = -1) -> None: ...


class KafkaConsumerPort(Protocol):
    def assign(self, partitions: list[Any]) -> None: ...

    def subscribe(self, topics: list[str], *args: Any, **kwargs: Any) -> None: ...

    def poll(self, timeout: float = -1) -> Any: ...

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]: ...

    def get_watermark_offsets(self, partition: Any, timeout: float = -1, cached: bool = False) -> Any: ...

    def offsets_for_times(self, partitions: list[Any], timeout: float = -1) -> list[Any]: ...

    def position(self, partitions: list[Any]) -> list[Any]: ...

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any: ...

    def close(self) -> None: ...


def default_producer(config: dict[str, Any]) -> TransactionalProducerPort:
    from confluent_kafka import Producer

    producer: TransactionalProducerPort = Producer(config)
    return producer


def default_consumer(config: dict[str, Any]) -> KafkaConsumerPort:
    from confluent_kafka import Consumer

    consumer: KafkaConsumerPort = Consumer(config)
    return consumer


def transient(error: Any) -> bool:
    """Errors that pass on their own: leader elections (as right after a topic is created),
    metadata not yet propagated, timeouts. librdkafka does not flag all of them retriable."""
    from confluent_kafka import KafkaError

    return bool(error.retriable()) or error.code() in (
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,
        KafkaError.REQUEST_TIMED_OUT,
    )
