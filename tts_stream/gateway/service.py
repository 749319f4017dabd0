"""The gateway's composition root and its operations, free of HTTP.

It builds the clients (a `TtsProducer` on the interactive lane, a `ResultSubscriber` under the
correlator, Redis for admission and the result index, S3 for audio and the voice registry, the
lag reader), starts their threads, and offers what the web layer needs: admit, submit, wait,
look up, fetch audio, register voices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from producer.client import TtsProducer
from producer.errors import DeliveryFailure, ProducerError
from producer.settings import ProducerSettings
from producer.subscriber import ResultSubscriber
from schemas.codec import AvroCodec, result_codec
from schemas.errors import DecodeError
from schemas.model import SynthesisRequest, SynthesisResult
from schemas.validation import S3_URI
from tts_stream.gateway.admission import Admission, AdmissionUnavailable, RequestRecord
from tts_stream.gateway.backpressure import LaneLagWatch
from tts_stream.gateway.correlator import ResultCorrelator
from tts_stream.gateway.errors import ApiError, GatewayCode, retry_later, unavailable
from tts_stream.gateway.keys import ApiKey
from tts_stream.gateway.metrics import GatewayMetrics
from tts_stream.gateway.settings import AudioDelivery, GatewaySettings

if TYPE_CHECKING:
    from consumer.adapters.s3 import S3ObjectStore
    from consumer.settings import WorkerSettings
    from consumer.voices.registry import VoiceRegistry

log = logging.getLogger(__name__)

# An audio object larger than this is not proxied through the gateway's memory.
MAX_PROXIED_AUDIO_BYTES = 256 * 1024 * 1024


class DeliveryError(Exception):
    """The brokers did not take the request."""

    def __init__(self, failure: DeliveryFailure) -> None:
        super().__init__(str(failure))
        self.failure = failure


@dataclass(frozen=True, slots=True)
class Lookup:
    record: RequestRecord
    result: SynthesisResult | None  # None: still pending


class Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        shared: WorkerSettings,
        *,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.shared = shared
        self.limits = shared.request_limits
        self.metrics = metrics or GatewayMetrics()
        self.producer_settings = ProducerSettings.from_values(
            kafka=shared.kafka,
            topics=shared.topics,
            limits=self.limits,
            linger_ms=settings.linger_ms,
            schema_registry_url=shared.schema_registry_url,
            schema_registry_username=shared.schema_registry_username,
            schema_registry_password=shared.schema_registry_password,
        )
        self._codec: AvroCodec[SynthesisResult] = result_codec()
        self._in_flight = 0
        self._stop = threading.Event()
        self.ready = False
        self.draining = False

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        from consumer.adapters.redis_connect import redis_topology
        from consumer.adapters.s3 import S3ObjectStore
        from consumer.audio.prompt import PromptLimits
        from consumer.voices.registry import VoiceRegistry
        from tts_stream.ops.lag import LagReader
        from tts_stream.ops.settings import kafka_config

        loop = asyncio.get_running_loop()
        self._loop = loop
        shared = self.shared
        self.producer = await asyncio.to_thread(TtsProducer, self.producer_settings)
        await asyncio.to_thread(self.producer.check_connection, 15.0)
        subscriber = await asyncio.to_thread(ResultSubscriber, self.producer_settings)
        self.correlator = ResultCorrelator(subscriber, loop)
        self.correlator.start()
        self._acks = threading.Thread(target=self._serve_deliveries, name="gateway-acks", daemon=True)
        self._acks.start()
        self.redis = redis_topology(shared, socket_timeout=2, socket_connect_timeout=2).async_client()
        self.admission = Admission(self.redis, record_ttl_s=self.settings.request_record_ttl_s)
        self.store: S3ObjectStore = S3ObjectStore.from_settings(shared)
        self.registry: VoiceRegistry = VoiceRegistry(
            self.store,
            shared.s3_voices_bucket,
            root=shared.s3_voices_prefix,
            limits=PromptLimits(
                max_bytes=shared.max_prompt_audio_bytes, max_seconds=shared.max_prompt_audio_seconds
            ),
        )
        self.lag = LaneLagWatch(
            LagReader(kafka_config(shared), shared.topics, shared.group_id),
            limit=self.settings.max_lane_lag,
            interval_s=self.settings.lag_check_interval_s,
        )
        if self.settings.max_lane_lag > 0:
            with contextlib.suppress(Exception):  # a first reading is a nicety, not a requirement
                await asyncio.to_thread(self.lag.read_once)
            self.lag.start()
        self.ready = True
        log.info("gateway ready", extra={"instance_id": self.settings.instance_id})

    def _serve_deliveries(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    async def stop(self) -> None:
        self.ready = False
        self._stop.set()
        if self.settings.max_lane_lag > 0:
            await asyncio.to_thread(self.lag.stop)
        await asyncio.to_thread(self.correlator.stop)
        self._acks.join(5)
        try:
            await asyncio.to_thread(self.producer.close, 10.0)
        except ProducerError as exc:
            log.error("requests not delivered at shutdown: %s", exc)
        await self.redis.aclose()

    def alive(self) -> bool:
        return self.correlator.alive and self._acks.is_alive()

    # ------------------------------------------------------------------------------ admission

    @property
    def waiters(self) -> int:
        return self._in_flight

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """One of this replica's `max_waiters` places, held from admission to the answer.

        Taken before the first await, so a burst of callers cannot all pass the check while
        each one waits on Redis.
        """
        if self._in_flight >= self.settings.max_waiters:
            self.metrics.rejected.labels(reason="waiters").inc()
            raise retry_later(GatewayCode.OVERLOADED, "this gateway has too many requests in flight", 1.0)
        self._in_flight += 1
        self.metrics.waiters.set(self._in_flight)
        try:
            yield
        finally:
            self._in_flight -= 1
            self.metrics.waiters.set(self._in_flight)

    async def admit(self, key: ApiKey, request: SynthesisRequest | None, *, durable: bool) -> None:
        """Backpressure from the lane, then the key's rate limit (and the request's record).

        `durable`: the caller will poll for the result (async mode), so the record must be
        written; without Redis that is refused, where a synchronous call goes on without it.
        """
        if (lag_wait := self.lag.excess()) is not None:
            self.metrics.rejected.labels(reason="lag").inc()
            raise retry_later(
                GatewayCode.OVERLOADED, "the workers have a backlog; retry after the indicated time", lag_wait
            )
        record = None
        if request is not None:
            record = (request.request_id, RequestRecord(request.created_at_ms, request.deadline_ms))
        try:
            wait = await self.admission.admit(key.name, key.rate_per_s, key.burst, record)
        except AdmissionUnavailable as exc:
            self.metrics.redis_failures.inc()
            if durable:
                raise unavailable(
                    "request records are unavailable (Redis); retry, or call synchronously"
                ) from exc
            log.warning("rate limit skipped: Redis unavailable (%s)", exc)
            return
        if wait is not None:
            self.metrics.rejected.labels(reason="rate_limit").inc()
            raise retry_later(
                GatewayCode.RATE_LIMITED, f"the key's limit is {key.rate_per_s:g} requests/s", wait
            )

    # ------------------------------------------------------------------------------ Kafka

    def _produce(self, request: SynthesisRequest, traceparent: str, on_failure: Any) -> asyncio.Future[None]:
        loop = self._loop
        acked: asyncio.Future[None] = loop.create_future()

        def settle(failure: DeliveryFailure | None) -> None:
            if acked.done():
                return
            if failure is None:
                acked.set_result(None)
            else:
                acked.set_exception(DeliveryError(failure))
                on_failure(failure)

        def delivered(failure: DeliveryFailure | None) -> None:  # the acks thread
            loop.call_soon_threadsafe(settle, failure)

        self.producer.submit_request(request, traceparent=traceparent, on_delivery=delivered)
        return acked

    async def submit(self, request: SynthesisRequest, traceparent: str) -> None:
        """Produce and wait for the brokers' acknowledgement (async mode: 202 means durable)."""
        try:
            await self._produce(request, traceparent, lambda _failure: None)
        except DeliveryError as exc:
            raise unavailable(f"Kafka did not take the request: {exc.failure.code}") from exc

    async def call(self, request: SynthesisRequest, traceparent: str, wait_s: float) -> SynthesisResult:
        """Produce and wait for the result; `ApiError` TIMEOUT when `wait_s` passes first."""
        rid = request.request_id
        result = self.correlator.expect(rid)
        started = time.monotonic()

        def undelivered(failure: DeliveryFailure) -> None:
            self.correlator.fail(rid, DeliveryError(failure))

        try:
            acked = self._produce(request, traceparent, undelivered)
            acked.add_done_callback(lambda f: f.exception())  # retrieved here; the result carries it
            answer = await asyncio.wait_for(result, wait_s)
        except TimeoutError as exc:
            self.metrics.wait.labels(outcome="timeout").observe(time.monotonic() - started)
            raise ApiError(
                504,
                GatewayCode.TIMEOUT.value,
                f"no result within {wait_s:g} s; the request's deadline has passed too, so it is "
                "answered EXPIRED unless it was already being synthesised (GET its URL for the outcome)",
                retryable=True,
                extra={"id": rid},
            ) from exc
        except DeliveryError as exc:
            raise unavailable(f"Kafka did not take the request: {exc.failure.code}") from exc
        finally:
            self.correlator.forget(rid)
        self.metrics.wait.labels(outcome="result").observe(time.monotonic() - started)
        return answer

    # ------------------------------------------------------------------------------ lookups

    async def lookup(self, key: ApiKey, request_id: str) -> Lookup | None:
        """The caller's request and its result (None: not this key's, or forgotten)."""
        from consumer.adapters.redis_store import result_index_key

        try:
            record = await self.admission.record_of(key.name, request_id)
            if record is None:
                return None
            raw = await self.redis.get(result_index_key(request_id))
        except (AdmissionUnavailable, OSError) as exc:
            raise unavailable("request records are unavailable (Redis)") from exc
        except Exception as exc:  # redis.RedisError from the index read
            raise unavailable(f"the result index is unavailable: {type(exc).__name__}") from exc
        if raw is None:
            return Lookup(record, None)
        try:
            return Lookup(record, self._codec.decode(raw.encode() if isinstance(raw, str) else raw))
        except DecodeError as exc:
            raise ApiError(
                502, "INTERNAL", f"the stored result cannot be decoded ({exc.reason.value})"
            ) from exc

    # ------------------------------------------------------------------------------ audio

    async def audio_url(self, result: SynthesisResult, base_url: str) -> tuple[str, int | None]:
        """Where the caller fetches the audio, and until when (epoch ms) for a presigned URL."""
        assert result.audio is not None
        if self.settings.audio_delivery is AudioDelivery.PROXY:
            return f"{base_url}/v1/tts/{result.request_id}/audio", None
        bucket, key = split_uri(result.audio.uri)
        expiry = self.settings.presign_expiry_s
        url = await asyncio.to_thread(self.store.presign_get, bucket, key, expiry)
        return url, int((time.time() + expiry) * 1000)

    async def audio_bytes(self, result: SynthesisResult) -> bytes:
        from consumer.errors import ObjectNotFound, WorkerError

        assert result.audio is not None
        bucket, key = split_uri(result.audio.uri)
        try:
            return await asyncio.to_thread(self.store.get, bucket, key, max_bytes=MAX_PROXIED_AUDIO_BYTES)
        except ObjectNotFound as exc:
            raise ApiError(
                404, GatewayCode.NOT_FOUND.value, "the audio object is gone (bucket lifecycle?)"
            ) from exc
        except WorkerError as exc:
            raise unavailable(f"object storage: {type(exc).__name__}") from exc


def split_uri(uri: str) -> tuple[str, str]:
    found = S3_URI.fullmatch(uri)
    if found is None:
        raise ApiError(502, "INTERNAL", "the result names no s3:// object")
    return found.group("bucket"), found.group("key")
