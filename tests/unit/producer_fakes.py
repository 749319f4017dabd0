"""In-memory stand-ins for confluent-kafka's Producer and Consumer (the producer side's ports)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any


@dataclass
class FakeError:
    """Quacks like confluent_kafka.KafkaError."""

    code: str
    text: str = "failed"
    is_retriable: bool = False
    is_fatal: bool = False
    abort: bool = False

    def name(self) -> str:
        return self.code

    def str(self) -> str:
        return self.text

    def retriable(self) -> bool:
        return self.is_retriable

    def fatal(self) -> bool:
        return self.is_fatal

    def txn_requires_abort(self) -> bool:
        return self.abort


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Any = None


@dataclass
class FakeProducer:
    """Records what is produced; delivers on poll/flush; keeps transactions apart.

    `fail(sent)` returning a FakeError makes that message's delivery fail. `stuck` messages are
    never acknowledged (flush times out). `buffer_full` makes that many produce calls raise
    BufferError first, as librdkafka does when its queue is full.
    """

    config: dict[str, Any] = field(default_factory=dict)
    topics: set[str] = field(default_factory=set)
    fail: Callable[[Sent], FakeError | None] = lambda sent: None
    stuck: bool = False
    buffer_full: int = 0
    unreachable: bool = False
    queued: list[tuple[Sent, Any]] = field(default_factory=list)
    delivered: list[Sent] = field(default_factory=list)
    committed: list[Sent] = field(default_factory=list)
    aborted: list[Sent] = field(default_factory=list)
    open_txn: list[Sent] | None = None
    polls: int = 0
    transactions: int = 0
    fail_commit: FakeError | None = None

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        callback: Any = None,
        on_delivery: Any = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None:
        if self.buffer_full:
            self.buffer_full -= 1
            raise BufferError("queue full")
        sent = Sent(topic, key, value, headers)
        if "transactional.id" in self.config:
            assert self.open_txn is not None, "produce outside a transaction"
            self.open_txn.append(sent)
        self.queued.append((sent, on_delivery or callback))

    def poll(self, timeout: float = -1) -> int:
        self.polls += 1
        if self.stuck:
            return 0
        served = 0
        while self.queued:
            sent, callback = self.queued.pop(0)
            error = self.fail(sent)
            if error is None:
                self.delivered.append(sent)
            if callback is not None:
                callback(error, SimpleNamespace(topic=lambda s=sent: s.topic))
            served += 1
        return served

    def flush(self, timeout: float = -1) -> int:
        self.poll(timeout)
        return len(self.queued)

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        if self.unreachable:
            raise RuntimeError("KafkaError{code=_TRANSPORT}")
        return SimpleNamespace(topics={name: SimpleNamespace(error=None) for name in self.topics})

    def __len__(self) -> int:
        return len(self.queued)

    # transactions
    def init_transactions(self, timeout: float = -1) -> None:
        self.open_txn = None

    def begin_transaction(self) -> None:
        assert self.open_txn is None, "transaction already open"
        self.open_txn = []

    def commit_transaction(self, timeout: float = -1) -> None:
        assert self.open_txn is not None
        if self.fail_commit is not None:
            from confluent_kafka import KafkaException

            raise KafkaException(self.fail_commit)
        self.flush()
        self.committed += self.open_txn
        self.open_txn = None
        self.transactions += 1

    def abort_transaction(self, timeout: float = -1) -> None:
        assert self.open_txn is not None
        self.aborted += self.open_txn
        self.queued = [q for q in self.queued if q[0] not in self.open_txn]
        self.open_txn = None


@dataclass
class FakeMessage:
    topic_name: str
    partition_no: int
    offset_no: int
    payload: bytes | None
    key_bytes: bytes | None = None
    err: Any = None

    def error(self) -> Any:
        return self.err

    def value(self) -> bytes | None:
        return self.payload

    def key(self) -> bytes | None:
        return self.key_bytes

    def topic(self) -> str:
        return self.topic_name

    def partition(self) -> int:
        return self.partition_no

    def offset(self) -> int:
        return self.offset_no


@dataclass
class FakeConsumer:
    """Serves `messages` in order once assigned; remembers what it was asked."""

    config: dict[str, Any] = field(default_factory=dict)
    partitions: dict[str, int] = field(default_factory=dict)  # topic -> partition count
    high: int = 0
    messages: list[FakeMessage] = field(default_factory=list)
    assigned: list[Any] = field(default_factory=list)
    subscribed: list[str] = field(default_factory=list)
    closed: bool = False
    time_queries: list[Any] = field(default_factory=list)

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        topics = {
            name: SimpleNamespace(error=None, partitions=dict.fromkeys(range(count)))
            for name, count in self.partitions.items()
        }
        return SimpleNamespace(topics=topics)

    def get_watermark_offsets(self, partition: Any, timeout: float = -1, cached: bool = False) -> Any:
        return (0, self.high)

    def offsets_for_times(self, partitions: list[Any], timeout: float = -1) -> list[Any]:
        from confluent_kafka import TopicPartition

        self.time_queries = partitions
        return [TopicPartition(tp.topic, tp.partition, 5 if tp.partition == 0 else -1) for tp in partitions]

    def assign(self, partitions: list[Any]) -> None:
        self.assigned = partitions

    def subscribe(self, topics: list[str], *args: Any, **kwargs: Any) -> None:
        self.subscribed = topics

    def poll(self, timeout: float = -1) -> Any:
        return self.messages.pop(0) if self.messages else None

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        taken, self.messages = self.messages[:num_messages], self.messages[num_messages:]
        return taken

    def position(self, partitions: list[Any]) -> list[Any]:
        return partitions

    def close(self) -> None:
        self.closed = True
