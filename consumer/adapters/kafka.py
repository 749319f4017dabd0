"""ConsumerPort and ProducerPort on confluent-kafka (librdkafka).

This is the one place librdkafka errors become ours: retriable or abortable ones become
BrokerUnavailable (the loop backs off and retries), fencing and fatal ones ProducerFenced /
FatalError (the process exits so the pod restarts and alerts fire).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition

from consumer.core.messages import InboundMessage, OutboundRecord, TopicPartition
from consumer.errors import (
    BrokerUnavailable,
    ConfigurationError,
    FatalError,
    ProducerFenced,
    TransactionInDoubt,
)
from consumer.ports import AssignmentCallback
from schemas.durability import ClusterDurability, findings, read_cluster
from schemas.transport import RefusalWatch, await_brokers

log = logging.getLogger(__name__)
librdkafka_log = logging.getLogger("librdkafka")

SEND_OFFSETS_TIMEOUT_S = 10.0
# One attempt at ending a transaction. A commit or an abort that takes longer goes on in the
# background; the checkpointer calls it again on its next round (librdkafka resumes it) instead of
# blocking the poll loop, whose liveness is measured in tens of seconds.
END_TRANSACTION_TIMEOUT_S = 10.0
# librdkafka can block in send_offsets_to_transaction() past its own timeout when the group
# coordinator went away (a broker restart): librdkafka issues 5456 and 5511. A call still
# running this long after its timeout is a wedged client, not a slow broker.
WEDGED_AFTER_S = 5.0


def consumer_config(
    base: Mapping[str, Any],
    *,
    group_id: str,
    instance_id: str | None,
    group_protocol: str,
    remote_assignor: str,
    session_timeout_ms: int,
    max_poll_interval_ms: int,
) -> dict[str, Any]:
    config = {
        **base,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        # A request produced before the group first committed is still answered.
        "auto.offset.reset": "earliest",
        # Requests produced in an aborted transaction (a crashed backfill chunk) are never seen.
        "isolation.level": "read_committed",
        "max.poll.interval.ms": max_poll_interval_ms,
        "logger": librdkafka_log,
    }
    if group_protocol == "consumer":
        # KIP-848: the broker assigns incrementally (no stop-the-world rebalance), and its range
        # assignor balances each topic on its own, so every worker gets its share of the
        # interactive lane. (Client-side cooperative-sticky balances the total across both lanes
        # and can give one worker all interactive partitions and another all bulk ones.)
        config["group.protocol"] = "consumer"
        config["group.remote.assignor"] = remote_assignor
    else:
        config["partition.assignment.strategy"] = "cooperative-sticky"
        config["session.timeout.ms"] = session_timeout_ms
    if instance_id is not None:
        # Static membership: a restarted pod with the same name gets its partitions back
        # without a group-wide rebalance (rolling restarts don't stampede).
        config["group.instance.id"] = instance_id
    return config


def producer_config(
    base: Mapping[str, Any], *, transactional_id: str | None, transaction_timeout_ms: int
) -> dict[str, Any]:
    config = {
        **base,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "lz4",
        "logger": librdkafka_log,
    }
    if transactional_id is not None:
        config["transactional.id"] = transactional_id
        config["transaction.timeout.ms"] = transaction_timeout_ms
    return config


def _to_kafka(tps: Sequence[TopicPartition]) -> list[KafkaTopicPartition]:
    return [KafkaTopicPartition(tp.topic, tp.partition) for tp in tps]


def _from_kafka(tps: Sequence[KafkaTopicPartition]) -> list[TopicPartition]:
    return [TopicPartition(tp.topic, tp.partition) for tp in tps]


REJOIN_AFTER_S = 2.0


class KafkaConsumerAdapter:
    def __init__(self, config: Mapping[str, Any]) -> None:
        self._config = dict(config)
        self._consumer = Consumer(self._config)
        self._subscription: (
            tuple[list[str], AssignmentCallback, AssignmentCallback, AssignmentCallback] | None
        ) = None
        self._rejoin_at: float | None = None
        # While the client is closed because the group refused it, what closing revokes is lost:
        # that member is gone, and its work must be forgotten, never committed.
        self._refused = False
        # What the rebalance callbacks handed this client, kept here: librdkafka's assignment()
        # must not be called from inside a rebalance callback (it waits on the thread that is
        # running the callback), and the loop asks while draining a revocation.
        self._assigned: set[TopicPartition] = set()

    def subscribe(
        self,
        topics: Sequence[str],
        on_assign: AssignmentCallback,
        on_revoke: AssignmentCallback,
        on_lost: AssignmentCallback,
    ) -> None:
        self._subscription = (list(topics), on_assign, on_revoke, on_lost)
        self._subscribe()

    def _subscribe(self) -> None:
        assert self._subscription is not None
        topics, on_assign, on_revoke, on_lost = self._subscription

        # confluent-kafka applies the (incremental) assignment itself after each callback.
        def assigned(_consumer: Consumer, tps: list[KafkaTopicPartition]) -> None:
            ours = _from_kafka(tps)
            self._assigned.update(ours)
            on_assign(ours)

        def revoked(_consumer: Consumer, tps: list[KafkaTopicPartition]) -> None:
            ours = _from_kafka(tps)
            try:
                (on_lost if self._refused else on_revoke)(ours)
            finally:
                self._assigned.difference_update(ours)

        def lost(_consumer: Consumer, tps: list[KafkaTopicPartition]) -> None:
            ours = _from_kafka(tps)
            self._assigned.difference_update(ours)
            on_lost(ours)

        self._consumer.subscribe(topics, on_assign=assigned, on_revoke=revoked, on_lost=lost)

    def _instance_id_in_use(self) -> None:
        """Under the consumer group protocol a static member that is not in the group keeps its
        instance id until its session expires, and joining under that id is refused (a fatal
        error for this client). That happens at start-up, when the previous incarnation died
        without leaving, and also mid-run, when this member was fenced (its epoch fell behind,
        e.g. heartbeat answers lost under load) and joins again. Not a reason to exit: wait,
        then join again with a new client. Whatever this client still had assigned is lost with
        it: reported as lost so the loop forgets that work instead of committing it later under
        the new member's metadata, while the partitions' new owner answers it too."""
        log.warning("our instance id is still held in the group; joining again shortly")
        self._refused = True
        with contextlib.suppress(KafkaException, RuntimeError):
            self._consumer.close()
        lost, self._assigned = sorted(self._assigned), set()
        if lost and self._subscription is not None:
            self._subscription[3](lost)
        self._rejoin_at = time.monotonic() + REJOIN_AFTER_S

    def consume(self, max_messages: int, timeout_s: float) -> list[InboundMessage]:
        """Up to `max_messages`, returning as soon as any are there.

        librdkafka's batch consume waits for the *whole* batch or the timeout, which at light
        load adds the full timeout to every request's latency. So: take what is queued without
        waiting; if nothing is, wait for the first message only, then take what came with it.
        """
        if self._rejoin_at is not None:
            if time.monotonic() < self._rejoin_at:
                time.sleep(min(timeout_s, self._rejoin_at - time.monotonic()))
                return []
            self._rejoin_at = None
            self._refused = False
            self._consumer = Consumer(self._config)
            self._subscribe()
        try:
            messages = self._consumer.consume(max_messages, 0)
            if not messages:
                first = self._consumer.poll(timeout_s)
                if first is not None:
                    messages = [first, *self._consumer.consume(max_messages - 1, 0)]
        except KafkaException as exc:
            raise _translate(exc, "consume") from exc
        out: list[InboundMessage] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if (
                    "instance ID is still used" in error.str()
                    or error.code() == KafkaError.UNRELEASED_INSTANCE_ID
                ):
                    self._instance_id_in_use()
                    return []
                self._on_error(error)
                continue
            out.append(_inbound(message))
        return out

    def _on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal() or error.code() == KafkaError._FATAL:
            raise FatalError(f"kafka consumer: {error.str()}")
        # Transient broker/network trouble: librdkafka recovers by itself; say so once.
        log.warning("kafka consumer error: %s", error.str())

    def pause(self, tps: Sequence[TopicPartition]) -> None:
        if self._rejoin_at is None:
            self._consumer.pause(_to_kafka(tps))

    def resume(self, tps: Sequence[TopicPartition]) -> None:
        if self._rejoin_at is None:
            self._consumer.resume(_to_kafka(tps))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._consumer.seek(KafkaTopicPartition(tp.topic, tp.partition, offset))

    def assignment(self) -> list[TopicPartition]:
        return [] if self._rejoin_at is not None else list(self._assigned)

    def positions(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        if self._rejoin_at is not None:
            return {}
        return {
            TopicPartition(p.topic, p.partition): p.offset
            for p in self._consumer.position(_to_kafka(tps))
            if p.offset >= 0
        }

    def lag(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        if not tps or self._rejoin_at is not None:
            return {}
        out: dict[TopicPartition, int] = {}
        positions = self._consumer.position(_to_kafka(tps))
        for position in positions:
            try:
                _low, high = self._consumer.get_watermark_offsets(position, cached=True)
            except KafkaException:
                continue
            if high is None or high < 0 or position.offset < 0:
                continue
            out[TopicPartition(position.topic, position.partition)] = max(0, high - position.offset)
        return out

    def committed(self, tps: Sequence[TopicPartition], timeout_s: float) -> dict[TopicPartition, int]:
        if self._rejoin_at is not None:
            raise BrokerUnavailable("kafka committed offsets: not in the group (joining again)")
        try:
            # Under read_committed librdkafka asks for stable offsets and retries while a
            # transaction holds them, until the timeout.
            answered = self._consumer.committed(_to_kafka(tps), timeout=timeout_s)
        except KafkaException as exc:
            raise _translate(exc, "committed offsets") from exc
        out: dict[TopicPartition, int] = {}
        for part in answered:
            if part.error is not None:
                raise BrokerUnavailable(f"kafka committed offsets: {part.error.str()}")
            if part.offset >= 0:
                out[TopicPartition(part.topic, part.partition)] = part.offset
        return out

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        try:
            self._consumer.commit(
                offsets=[KafkaTopicPartition(tp.topic, tp.partition, off) for tp, off in offsets.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            raise _translate(exc, "commit offsets") from exc

    def group_metadata(self) -> object:
        if self._rejoin_at is not None:
            # No membership to commit under until we are back in the group.
            raise BrokerUnavailable("kafka consumer: not in the group (joining again)")
        return self._consumer.consumer_group_metadata()

    def close(self) -> None:
        if self._rejoin_at is None:
            self._consumer.close()


def _inbound(message: Message) -> InboundMessage:
    timestamp_type, timestamp = message.timestamp()
    raw_headers: Any = message.headers() or []
    headers: list[tuple[str, Any]] = list(
        raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
    )
    return InboundMessage(
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=message.key(),
        value=message.value(),
        headers=[(str(k), v if isinstance(v, bytes) else (v or "").encode()) for k, v in headers],
        timestamp_ms=timestamp if timestamp_type else None,
    )


class KafkaProducerAdapter:
    def __init__(
        self, config: Mapping[str, Any], *, transactional: bool, init_timeout_s: float = 60.0
    ) -> None:
        self._refusal = RefusalWatch(also=self._on_error)
        self._producer = Producer({**config, "error_cb": self._refusal})
        self._transactional = transactional
        self._delivery_error: str | None = None
        self._await_brokers(min(init_timeout_s, 15.0))
        if transactional:
            # Fences any previous incarnation with the same transactional id (zombie fencing)
            # and aborts the transaction it left open.
            try:
                self._producer.init_transactions(init_timeout_s)
            except KafkaException as exc:
                raise _translate(exc, "init transactions") from exc

    def _on_error(self, error: KafkaError) -> None:
        if error.code() != KafkaError._ALL_BROKERS_DOWN:
            log.debug("kafka producer error: %s", error.str())

    def _await_brokers(self, timeout_s: float) -> None:
        """Wait until a broker answers, or fail at once when one refuses us (wrong password,
        untrusted certificate): otherwise that shows up as a 60 s "timed out" much later.
        Unreachable brokers are not reported here: what follows reports them."""
        await_brokers(self._producer, self._refusal, timeout_s)
        if self._refusal.reason is not None:
            # Misconfiguration (credentials, certificates), not an outage: waiting won't fix it.
            raise ConfigurationError(f"kafka refused this client: {self._refusal.reason}")

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self._delivery_error = error.str()

    def produce(self, record: OutboundRecord) -> None:
        while True:
            try:
                self._producer.produce(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    headers=list(record.headers),
                    on_delivery=None if self._transactional else self._on_delivery,
                )
                break
            except BufferError:
                self._producer.poll(0.05)  # the local queue is full: let deliveries drain
            except KafkaException as exc:
                raise _translate(exc, "produce") from exc
        self._producer.poll(0)

    def flush(self, timeout_s: float) -> None:
        remaining = self._producer.flush(timeout_s)
        if self._delivery_error is not None:
            error, self._delivery_error = self._delivery_error, None
            # librdkafka retried for delivery.timeout.ms already; the records are gone. Their
            # offsets were not committed: exit so the restart consumes and answers them again.
            raise FatalError(f"result delivery failed permanently: {error}")
        if remaining:
            raise BrokerUnavailable(f"{remaining} records not acknowledged within {timeout_s:.0f}s")

    def begin(self) -> None:
        try:
            self._producer.begin_transaction()
        except KafkaException as exc:
            raise _translate(exc, "begin transaction") from exc

    def send_offsets(self, offsets: Mapping[TopicPartition, int], group_metadata: object) -> None:
        positions = [KafkaTopicPartition(tp.topic, tp.partition, off) for tp, off in offsets.items()]
        try:
            _bounded(
                lambda: self._producer.send_offsets_to_transaction(
                    positions, group_metadata, SEND_OFFSETS_TIMEOUT_S
                ),
                SEND_OFFSETS_TIMEOUT_S + WEDGED_AFTER_S,
                "send offsets to transaction",
            )
        except KafkaException as exc:
            raise _translate(exc, "send offsets to transaction") from exc

    def commit(self) -> None:
        self._producer.poll(0)  # serve delivery reports: librdkafka counts them as outstanding
        try:
            self._producer.commit_transaction(END_TRANSACTION_TIMEOUT_S)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.retriable() and not error.txn_requires_abort() and not error.fatal():
                # The commit goes on in the background and may have succeeded: only committing
                # again tells (librdkafka resumes the call and returns its outcome).
                raise TransactionInDoubt(f"kafka commit transaction: {error.str()}") from exc
            raise _translate(exc, "commit transaction") from exc

    def abort(self) -> None:
        self._producer.poll(0)  # the abort waits for the purged messages' delivery reports
        try:
            self._producer.abort_transaction(END_TRANSACTION_TIMEOUT_S)
        except KafkaException as exc:
            raise _translate(exc, "abort transaction") from exc

    def ping(self) -> bool:
        """A metadata round trip (the readiness check)."""
        try:
            return bool(self._producer.list_topics(timeout=2.0).brokers)
        except KafkaException:
            return False

    def close(self) -> None:
        try:
            self._producer.flush(10.0)
        except KafkaException as exc:
            # Closing after a fatal transaction error: the error that stopped us is already on its
            # way up, and this one must not replace it.
            log.warning("kafka producer: records not flushed on close: %s", exc.args[0].str())


def check_durability(
    base: Mapping[str, Any],
    topics: Sequence[str],
    *,
    transaction_timeout_ms: int | None,
    timeout_s: float = 10.0,
) -> tuple[ClusterDurability, list[str]]:
    """The cluster's side of "nothing acknowledged is lost" (schemas/durability.py); raises
    BrokerUnavailable when the brokers cannot be asked."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({k: v for k, v in base.items() if k != "logger"} | {"logger": librdkafka_log})
    try:
        cluster = read_cluster(admin, topics, timeout_s=timeout_s)
    except KafkaException as exc:
        raise _translate(exc, "describe the cluster's durability settings") from exc
    return cluster, findings(cluster, transaction_timeout_ms=transaction_timeout_ms)


def _bounded(call: Callable[[], object], limit_s: float, what: str) -> None:
    """Run a blocking librdkafka call that must return within `limit_s`.

    A call still blocked after that cannot be cancelled, and the producer it belongs to cannot
    be used again: FatalError, so the process exits and its restart fences the open transaction
    (the blocked thread is a daemon and does not hold the exit up).
    """
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the caller's thread below
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, name="kafka-bounded-call", daemon=True)
    thread.start()
    thread.join(limit_s)
    if thread.is_alive():
        raise FatalError(
            f"kafka {what} did not return within {limit_s:.0f}s (a wedged librdkafka client after "
            "the group coordinator went away); exiting so the restart fences this transaction"
        )
    if outcome[0] is not None:
        raise outcome[0]


def _translate(exc: KafkaException, what: str) -> Exception:
    error: KafkaError = exc.args[0]
    message = f"kafka {what}: {error.str()}"
    if error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH):
        return ProducerFenced(message)
    if error.fatal():
        return FatalError(message)
    return BrokerUnavailable(message)


def describe(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config without secrets, for the start-up log line."""
    return {k: ("***" if "password" in k or "secret" in k else v) for k, v in config.items() if k != "logger"}
