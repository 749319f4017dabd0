"""`TtsProducer`: submit synthesis requests to Kafka.

    with TtsProducer(bootstrap_servers="kafka:9092") as tts:
        request_id = tts.submit("Hello!", voice="preset:en-us")
    # leaving the block flushed: every request was acknowledged, or DeliveryFailed was raised

Guarantees and where errors surface:

* A request is validated before anything is produced; `InvalidRequest` names every bad field.
* The producer is idempotent with acks=all: a broker retry never duplicates a message, and an
  acknowledged message is on every in-sync replica.
* The message key is the request's routing key (docs/keys.md), so identical requests share a
  partition and the worker can merge them.
* Delivery is asynchronous. Failures are collected and raised as one `DeliveryFailed` by
  `flush()`, which leaving the `with` block calls. `submit()` itself never reports them, so a
  caller has exactly one place to handle them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from producer.errors import (
    DeliveryFailed,
    DeliveryFailure,
    InvalidRequest,
    KafkaRefused,
    KafkaUnavailable,
    ProducerClosed,
    UnsafeProducerConfig,
)
from producer.metrics import ProducerMetrics
from producer.ports import KafkaProducerPort, default_producer
from producer.requests import build_request, validate
from producer.settings import ProducerSettings
from schemas import headers
from schemas.codec import AvroCodec, Framing, registry_client, request_codec
from schemas.keys import routing_key
from schemas.model import AudioFormat, SynthesisRequest, Voice
from schemas.topics import Lane
from schemas.transport import RefusalWatch, await_brokers
from schemas.validation import RequestLimits

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

TRACEPARENT_HEADER = headers.TRACEPARENT
_POLL_EVERY = 1000  # serve delivery callbacks regularly so failures do not pile up unseen


class TtsProducer:
    """Produces `SynthesisRequest`s to the request lanes. Not thread-safe: one per thread."""

    def __init__(
        self,
        settings: ProducerSettings | None = None,
        *,
        bootstrap_servers: str | None = None,
        lane: Lane | str | None = None,
        framing: Framing | str | None = None,
        schema_registry_url: str | None = None,
        limits: RequestLimits | None = None,
        linger_ms: int | None = None,
        config: Mapping[str, Any] | None = None,
        producer_factory: Any = None,
        codec: AvroCodec[SynthesisRequest] | None = None,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        """Settings come from `settings` (e.g. `ProducerSettings()` reads TTS_* variables), and
        any keyword argument given overrides them; with no settings, only the keywords count.
        `config` adds raw librdkafka properties (security, tuning)."""
        overrides: dict[str, Any] = {
            key: value
            for key, value in {
                "lane": lane,
                "framing": framing,
                "schema_registry_url": schema_registry_url,
                "limits": limits,
                "linger_ms": linger_ms,
            }.items()
            if value is not None
        }
        if settings is None:
            settings = ProducerSettings.from_values(**overrides)
        elif overrides:
            settings = settings.model_copy(update=overrides)
        if bootstrap_servers is not None:
            kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers})
            settings = settings.model_copy(update={"kafka": kafka})
        self.settings = settings
        self._lane = Lane(settings.lane)
        self._default_topic = settings.topics.lane(self._lane.value)
        self._framing = Framing(settings.framing)
        self._limits = settings.limits
        self._codec = codec or _make_codec(settings, self._framing)
        producer_config = {**settings.producer_config(), **dict(config or {})}
        _check_delivery_guarantees(producer_config)
        self._refusal = RefusalWatch(also=producer_config.get("error_cb"))
        producer_config["error_cb"] = self._refusal
        self._producer: KafkaProducerPort = (producer_factory or default_producer)(producer_config)
        self._failures: list[DeliveryFailure] = []
        self._since_poll = 0
        self._closed = False
        self.submitted = 0
        self.delivered = 0
        self._metrics = ProducerMetrics(metrics_registry) if metrics_registry is not None else None

    # ------------------------------------------------------------------------------ submit

    def submit(
        self,
        text: str,
        voice: Voice | str,
        *,
        prompt_text: str | None = None,
        request_id: str | None = None,
        language: str | None = None,
        style_instruction: str | None = None,
        speed: float = 1.0,
        output_format: str | AudioFormat = AudioFormat.WAV,
        sample_rate_hz: int | None = None,
        loudness_lufs: float | None = None,
        deadline: datetime | None = None,
        ttl_s: float | None = None,
        reply_topic: str | None = None,
        attributes: Mapping[str, str] | None = None,
        lane: Lane | str | None = None,
        traceparent: str | None = None,
    ) -> str:
        """Validate and queue one request; return its request id (generated unless given).

        `voice` is a `Voice` or a string: `preset:NAME`, `registered:ID_OR_ALIAS`, or
        `prompt:s3://bucket/key` together with `prompt_text` (the prompt audio's transcript).
        """
        try:
            request = build_request(
                text,
                voice,
                prompt_text=prompt_text,
                request_id=request_id,
                language=language,
                style_instruction=style_instruction,
                speed=speed,
                output_format=output_format,
                sample_rate_hz=sample_rate_hz,
                loudness_lufs=loudness_lufs,
                deadline=deadline,
                ttl_s=ttl_s,
                reply_topic=reply_topic,
                attributes=attributes,
            )
        except InvalidRequest as exc:
            self._count_refusal(exc)
            raise
        return self.submit_request(request, lane=lane, traceparent=traceparent)

    def submit_request(
        self,
        request: SynthesisRequest,
        *,
        lane: Lane | str | None = None,
        traceparent: str | None = None,
        on_delivery: Callable[[DeliveryFailure | None], None] | None = None,
    ) -> str:
        """Validate and queue a ready-made request; return its request id.

        `on_delivery`, when given, is called once the brokers acknowledge the request (with
        None) or give up on it (with the failure), from whichever thread serves delivery
        callbacks (`poll`, `flush`). The failure is still collected for `flush()` too.
        """
        if self._closed:
            raise ProducerClosed("this TtsProducer is closed")
        try:
            validate(request, self._limits)
        except InvalidRequest as exc:
            self._count_refusal(exc)
            raise
        topic = self.topic_for(lane)
        value = self._codec.encode(request, framing=self._framing, topic=topic)
        headers = [(TRACEPARENT_HEADER, traceparent.encode())] if traceparent else None
        self._produce(topic, value, routing_key(request).encode(), request.request_id, headers, on_delivery)
        return request.request_id

    def submit_many(
        self,
        requests: Iterable[SynthesisRequest | Mapping[str, Any]],
        *,
        lane: Lane | str | None = None,
    ) -> Iterator[str]:
        """Queue requests one by one as the iterable yields them, yielding each request id.

        Items are `SynthesisRequest`s or mappings of `submit()`'s keyword arguments. Memory
        stays flat however many there are. An invalid item raises `InvalidRequest` when it is
        reached; the ones before it are already queued (validate first for all-or-nothing).
        """
        topic_lane = lane
        for item in requests:
            if isinstance(item, SynthesisRequest):
                yield self.submit_request(item, lane=topic_lane)
            else:
                yield self.submit(**item, lane=topic_lane)

    def _count_refusal(self, exc: InvalidRequest) -> None:
        if self._metrics is not None:
            self._metrics.invalid.labels(field=exc.field.split(".", 1)[0].split("[", 1)[0]).inc()

    def topic_for(self, lane: Lane | str | None = None) -> str:
        if lane is None:
            return self._default_topic
        return self.settings.topics.lane(Lane(lane).value)

    # ------------------------------------------------------------------------------ delivery

    def _produce(
        self,
        topic: str,
        value: bytes,
        key: bytes,
        request_id: str,
        headers: list[tuple[str, bytes]] | None,
        on_delivery: Callable[[DeliveryFailure | None], None] | None = None,
    ) -> None:
        metrics = self._metrics

        def delivered(err: Any, msg: Any) -> None:
            if err is None:
                self.delivered += 1
                if metrics is not None:
                    metrics.delivered.labels(topic=topic).inc()
                if on_delivery is not None:
                    on_delivery(None)
            else:
                failure = DeliveryFailure(request_id, topic, err.name(), err.str(), bool(err.retriable()))
                self._failures.append(failure)
                if metrics is not None:
                    metrics.delivery_failures.labels(topic=topic, error=err.name()).inc()
                if on_delivery is not None:
                    on_delivery(failure)

        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=delivered, headers=headers)
                break
            except BufferError:
                # The local queue is full: wait for the brokers to catch up (backpressure).
                self._producer.poll(0.05)
        self.submitted += 1
        if metrics is not None:
            metrics.submitted.labels(topic=topic).inc()
        self._since_poll += 1
        if self._since_poll >= _POLL_EVERY:
            self._since_poll = 0
            self._producer.poll(0)

    def poll(self, timeout_s: float = 0.0) -> None:
        """Serve delivery callbacks for up to `timeout_s`. A service that submits from one thread
        may call this from another (librdkafka's producer is thread-safe)."""
        self._producer.poll(timeout_s)

    @property
    def pending(self) -> int:
        """Messages queued or in flight, not yet acknowledged or failed."""
        return len(self._producer)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every queued request is acknowledged; raise `DeliveryFailed` listing the
        ones that failed since the last flush (and any still unacknowledged at the timeout)."""
        remaining = self._producer.flush(-1 if timeout_s is None else max(0.0, timeout_s))
        failures, self._failures = self._failures, []
        if failures or remaining:
            log.error(
                "%d request(s) not delivered",
                len(failures) + remaining,
                extra={"failed": len(failures), "unacknowledged": remaining},
            )
            raise DeliveryFailed(failures, undelivered=remaining)

    def check_connection(self, timeout_s: float = 10.0, lanes: Iterable[Lane | str] = ()) -> None:
        """Raise `KafkaUnavailable` unless the brokers answer and the lane topics exist, and
        `KafkaRefused` (a subclass) at once when a broker refuses our credentials or certificate."""
        wanted = [self.topic_for(lane) for lane in lanes] or [self.topic_for()]
        brokers = self.settings.kafka.bootstrap_servers
        metadata = await_brokers(self._producer, self._refusal, timeout_s)
        if self._refusal.reason is not None:
            raise KafkaRefused(f"Kafka at {brokers} refused this client: {self._refusal.reason}")
        if metadata is None:
            raise KafkaUnavailable(f"no Kafka broker answered at {brokers} within {timeout_s:g} s")
        missing = [topic for topic in wanted if topic not in metadata.topics]
        if missing:
            raise KafkaUnavailable(
                f"topic(s) {', '.join(missing)} do not exist: create them with `tts-stream topics ensure`"
            )

    # ------------------------------------------------------------------------------ lifecycle

    def close(self, timeout_s: float | None = None) -> None:
        """Flush and stop accepting requests. Raises `DeliveryFailed` like `flush()`."""
        if self._closed:
            return
        self._closed = True
        self.flush(timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        # Already failing: still deliver what was queued, but never hide the original error.
        try:
            self.close()
        except DeliveryFailed as failed:
            log.error("while handling another error: %s", failed, extra={"failed": len(failed.failures)})


def _check_delivery_guarantees(config: Mapping[str, Any]) -> None:
    """Refuse raw properties (`config=`, TTS_KAFKA_EXTRA) that undo what the contract promises:
    every request acknowledged by all in-sync replicas, written once, in order per key."""
    problems = []
    if str(config.get("acks", "all")).lower() not in ("all", "-1"):
        problems.append(f"acks={config['acks']} (only acks=all survives the leader's loss)")
    if str(config.get("enable.idempotence", True)).lower() in ("false", "0"):
        problems.append("enable.idempotence=false (a retried batch would be written twice)")
    if int(config.get("max.in.flight.requests.per.connection", 5)) > 5:
        problems.append("max.in.flight.requests.per.connection above 5 (idempotence allows at most 5)")
    if problems:
        raise UnsafeProducerConfig("refused producer properties: " + "; ".join(problems))


def _make_codec(settings: ProducerSettings, framing: Framing) -> AvroCodec[SynthesisRequest]:
    if framing is Framing.CONFLUENT:
        if not settings.schema_registry_url:
            raise ValueError("framing 'confluent' needs schema_registry_url (TTS_SCHEMA_REGISTRY_URL)")
        registry = registry_client(settings.schema_registry_url, **settings.registry_config())
        return request_codec(registry, auto_register=settings.schema_registry_auto_register)
    return request_codec()
