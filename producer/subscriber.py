"""`ResultSubscriber`: read result events, or wait for the results of given requests.

    with ResultSubscriber(bootstrap_servers="kafka:9092") as results:  # from now on
        request_id = tts.submit(...)
        result = results.wait_for([request_id], timeout_s=30)[request_id]

The consumer reads with isolation.level=read_committed: the worker publishes results inside
Kafka transactions, and a result from an aborted transaction (a worker that crashed mid-batch)
is not a result. Without a group id it reads every partition itself, from a position fixed
*before* `__init__` returns, so a result for a request produced afterwards cannot be missed;
it commits nothing. With a group id it joins that group instead and shares the partitions.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Self

from producer.errors import KafkaUnavailable, ResultTimeout
from producer.ports import KafkaConsumerPort, default_consumer, transient
from producer.settings import ProducerSettings
from schemas.codec import AvroCodec, registry_client, result_codec
from schemas.errors import DecodeError
from schemas.model import SynthesisResult

log = logging.getLogger(__name__)


class StartAt(enum.StrEnum):
    END = "end"  # only results published from now on
    BEGINNING = "beginning"  # everything the topic still retains


class ResultSubscriber:
    """Yields `SynthesisResult`s from the results topic (or a reply topic)."""

    def __init__(
        self,
        settings: ProducerSettings | None = None,
        *,
        bootstrap_servers: str | None = None,
        topic: str | None = None,
        start: StartAt | str | int = StartAt.END,
        group_id: str | None = None,
        config: dict[str, Any] | None = None,
        consumer_factory: Callable[[dict[str, Any]], KafkaConsumerPort] | None = None,
        codec: AvroCodec[SynthesisResult] | None = None,
        timeout_s: float = 15.0,
    ) -> None:
        """`start` is `"end"`, `"beginning"`, or a timestamp in epoch milliseconds (results
        published at or after it). Ignored with a `group_id`, which resumes from the group's
        committed offsets."""
        if settings is None:
            settings = ProducerSettings.from_values()
        if bootstrap_servers is not None:
            kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers})
            settings = settings.model_copy(update={"kafka": kafka})
        self.settings = settings
        self.topic = topic or settings.topics.results
        self._codec = codec or _make_codec(settings)
        consumer_config = {
            **settings.consumer_config(group_id or f"tts-results-reader-{uuid.uuid4().hex[:12]}"),
            **(config or {}),
        }
        if group_id is not None:
            consumer_config["enable.auto.commit"] = True
        self._consumer = (consumer_factory or default_consumer)(consumer_config)
        self.undecodable = 0
        self._closed = False
        try:
            if group_id is not None:
                self._consumer.subscribe([self.topic])
            else:
                self._assign_from(start, timeout_s)
        except BaseException:
            self._consumer.close()
            raise

    def _assign_from(self, start: StartAt | str | int, timeout_s: float) -> None:
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

        try:
            metadata = self._consumer.list_topics(self.topic, timeout=timeout_s)
        except Exception as exc:  # KafkaException
            raise KafkaUnavailable(f"cannot read metadata of {self.topic}: {exc}") from exc
        topic_metadata = metadata.topics.get(self.topic)
        if topic_metadata is None or topic_metadata.error is not None or not topic_metadata.partitions:
            raise KafkaUnavailable(f"topic {self.topic} does not exist: run `tts-stream topics ensure`")
        partitions = sorted(topic_metadata.partitions)
        if isinstance(start, int):
            wanted = [TopicPartition(self.topic, p, start) for p in partitions]
            found = self._consumer.offsets_for_times(wanted, timeout=timeout_s)
            assigned = [
                tp if tp.offset >= 0 else TopicPartition(self.topic, tp.partition, OFFSET_END) for tp in found
            ]
        elif StartAt(start) is StartAt.BEGINNING:
            assigned = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions]
        else:
            # Explicit offsets rather than OFFSET_END: the logical end is resolved later, when
            # fetching starts, and a result published in between would be skipped.
            assigned = []
            for p in partitions:
                tp = TopicPartition(self.topic, p)
                _, high = watermarks(self._consumer, tp, timeout_s)
                assigned.append(TopicPartition(self.topic, p, high))
        self._consumer.assign(assigned)

    # ------------------------------------------------------------------------------ reading

    def poll(self, timeout_s: float = 1.0) -> SynthesisResult | None:
        """The next result, or None when none arrived within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            msg = self._consumer.poll(max(0.0, remaining))
            if msg is not None:
                result = self._decode(msg)
                if result is not None:
                    return result
            if time.monotonic() >= deadline:
                return None

    def _decode(self, msg: Any) -> SynthesisResult | None:
        error = msg.error()
        if error is not None:
            if error.fatal():
                raise KafkaUnavailable(f"results consumer failed: {error.str()}")
            log.warning("results consumer: %s", error.str(), extra={"topic": self.topic})
            return None
        try:
            return self._codec.decode(msg.value() or b"")
        except DecodeError as exc:
            self.undecodable += 1
            log.warning(
                "skipped an undecodable result event: %s",
                exc.reason.value,
                extra={"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()},
            )
            return None

    def poll_batch(
        self,
        timeout_s: float = 0.2,
        max_messages: int = 500,
        keep: Callable[[bytes | None], bool] | None = None,
    ) -> list[SynthesisResult]:
        """The results that arrived within `timeout_s` (up to `max_messages` records read).

        `keep` sees each record's key (the request id, as bytes) before anything is decoded:
        a service that waits for its own requests among everyone's decodes only those.
        """
        results: list[SynthesisResult] = []
        # Wait for the first record only, then take what is already fetched: librdkafka's
        # consume() waits out its whole timeout unless `max_messages` arrive.
        first = self._consumer.poll(timeout_s)
        if first is None:
            return results
        for msg in [first, *self._consumer.consume(max_messages - 1, 0)]:
            if msg.error() is None and keep is not None and not keep(msg.key()):
                continue
            result = self._decode(msg)
            if result is not None:
                results.append(result)
        return results

    def __iter__(self) -> Iterator[SynthesisResult]:
        """Every result, as it arrives, until `close()`."""
        while not self._closed:
            result = self.poll(1.0)
            if result is not None:
                yield result

    def wait_for(self, request_ids: Iterable[str], timeout_s: float) -> dict[str, SynthesisResult]:
        """The results of `request_ids` (the first result seen for each).

        Raises `ResultTimeout`, carrying the results that did arrive, when `timeout_s` passes
        before all of them have.
        """
        missing = set(request_ids)
        found: dict[str, SynthesisResult] = {}
        deadline = time.monotonic() + timeout_s
        while missing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ResultTimeout(found, frozenset(missing))
            result = self.poll(min(remaining, 1.0))
            if result is not None and result.request_id in missing:
                missing.discard(result.request_id)
                found[result.request_id] = result
        return found

    # ------------------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._consumer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def watermarks(consumer: KafkaConsumerPort, partition: Any, timeout_s: float) -> tuple[int, int]:
    """Low and high watermark of `partition`, retrying the broker's transient answers (a leader
    election, as right after a topic is created) until `timeout_s` has passed."""
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(partition, timeout=timeout_s, cached=False)
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0]
            if not transient(error) or time.monotonic() >= deadline:
                raise KafkaUnavailable(
                    f"cannot read the offsets of {partition.topic}[{partition.partition}]: {error.str()}"
                ) from exc
            time.sleep(0.2)


def _make_codec(settings: ProducerSettings) -> AvroCodec[SynthesisResult]:
    # Decoding handles both framings; a registry is needed only for Confluent-framed results.
    if settings.schema_registry_url:
        return result_codec(registry_client(settings.schema_registry_url, **settings.registry_config()))
    return result_codec()
