"""The composition root: the one place that builds adapters and wires them into the core."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from types import FrameType
from typing import Any

from consumer.adapters.kafka import (
    KafkaConsumerAdapter,
    KafkaProducerAdapter,
    check_durability,
    consumer_config,
    describe,
    producer_config,
)
from consumer.adapters.redis_connect import redis_topology
from consumer.adapters.redis_store import RedisResultIndex, RedisStore
from consumer.adapters.s3 import S3ObjectStore
from consumer.core.checkpoint import Checkpointer
from consumer.core.intake import Intake, IntakePolicy
from consumer.core.loop import WorkerLoop
from consumer.core.pipeline import Pipeline
from consumer.core.results import ResultFactory
from consumer.core.tracing import LocalTracer, Tracer
from consumer.engine import Engine
from consumer.engines import create_engine
from consumer.errors import BrokerUnavailable, CacheUnavailable, ConfigurationError
from consumer.health import HealthServer, HealthState
from consumer.metrics import Metrics
from consumer.ports import AudioFinisher, ObjectStore, VoiceResolver
from consumer.settings import Guarantee, WorkerSettings
from consumer.worker_config import worker_configs
from schemas.codec import Framing, registry_client, request_codec, result_codec
from schemas.model import SynthesisRequest, SynthesisResult
from tts_stream import __version__

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunLimits:
    """Run mode for tests and batch jobs: stop after N answers or S idle seconds."""

    max_messages: int | None = None
    idle_exit_s: float | None = None


def build_finisher(settings: WorkerSettings) -> AudioFinisher:
    from consumer.audio.finisher import TorchAudioFinisher

    return TorchAudioFinisher.from_settings(settings)


def build_resolver(settings: WorkerSettings, store: ObjectStore) -> VoiceResolver:
    from consumer.voices.resolver import VoiceResolver as StoreVoiceResolver

    return StoreVoiceResolver.from_settings(store, settings)


class WorkerApp:
    def __init__(
        self,
        settings: WorkerSettings,
        *,
        limits: RunLimits | None = None,
        engine: Engine | None = None,
        finisher: AudioFinisher | None = None,
        resolver: VoiceResolver | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self._finisher = finisher
        self._resolver = resolver
        self.limits = limits or RunLimits()
        self.metrics = metrics or Metrics()
        self._engine = engine
        self._loop: WorkerLoop | None = None
        self._stop_requested = False
        self.health_port: int | None = None

    def request_stop(self) -> None:
        self._stop_requested = True
        if self._loop is not None:
            self._loop.request_stop()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: finishing in-flight work", signal.Signals(signum).name)
            self.request_stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> None:
        s = self.settings
        with ExitStack() as stack:
            topology = redis_topology(
                s, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=15
            )
            log.info("redis", extra={"redis": topology.describe(), "mode": topology.mode.value})
            redis_store = RedisStore.from_topology(topology, group_id=s.group_id)
            store = S3ObjectStore.from_settings(s)
            health = self._start_health(stack, redis_store, store)
            # The Kafka clients before the model: init_transactions fences and aborts what a
            # previous incarnation of this instance left open at once, not after a model load of
            # minutes during which read_committed subscribers would wait on its transaction.
            producer, consumer = self._kafka_clients(stack)
            health.add_check("kafka", producer.ping)
            engine, model_version = self._load_engine(stack)
            self._recover_crash_record(redis_store)
            results = ResultFactory(
                engine=engine.name,
                model_version=model_version,
                worker_id=s.instance_id,
                results_topic=s.topics.results,
                presigner=self._presigner(store) if s.presign_expiry_s else None,
            )
            decode, encode_result = self._codecs()
            tracer = self._tracer(stack)
            intake = Intake(
                decode,
                results,
                IntakePolicy(
                    limits=s.request_limits,
                    capabilities=engine.capabilities,
                    reply_topic_allowlist=frozenset(s.reply_topic_allowlist),
                ),
                tracer=tracer,
            )
            configs = worker_configs(
                s,
                engine_limits=engine.limits,
                model_version=model_version,
                max_messages=self.limits.max_messages,
                idle_exit_s=self.limits.idle_exit_s,
            )
            pipeline = Pipeline(
                engine=engine,
                finisher=self._finisher or build_finisher(s),
                store=store,
                dedup=redis_store,
                crashes=redis_store,
                voices=self._resolver or build_resolver(s, store),
                results=results,
                metrics=self.metrics,
                config=configs.pipeline,
                deadline_passed=intake.expired,
            )
            pipeline.start()
            stack.callback(pipeline.stop)
            checkpointer = Checkpointer(
                producer,
                consumer,
                guarantee=s.guarantee,
                encode_result=encode_result,
                dlq_topic=s.topics.dlq,
                worker_id=s.instance_id,
                metrics=self.metrics,
                result_index=RedisResultIndex(redis_store.client),
                result_index_ttl_s=s.result_index_ttl_s,
                # By then the coordinator has aborted a transaction it never saw end.
                unfinished_limit_s=s.transaction_timeout_ms / 1000.0,
            )
            loop = WorkerLoop(
                consumer,
                intake,
                pipeline,
                checkpointer,
                metrics=self.metrics,
                config=configs.loop,
                heartbeat=health.beat,
            )
            self._run_loop(loop, health)

    def _recover_crash_record(self, redis_store: RedisStore) -> None:
        """Turn the previous run's in-flight record into crash counts. Redis is optional under
        fail_open, so a pod restarted during a Redis outage must start without it (it has no
        crash-loop protection until Redis is back), not crash-loop on it."""
        try:
            recovered = redis_store.recover(self.settings.instance_id)
        except CacheUnavailable as exc:
            self.metrics.dependency_errors.labels(dependency="redis").inc()
            log.warning("crash record not recovered (redis unavailable): %s", exc)
            return
        if recovered:
            log.warning("the previous run of this instance died with %d messages in the engine", recovered)

    def _start_health(self, stack: ExitStack, redis_store: RedisStore, store: ObjectStore) -> HealthState:
        s = self.settings
        health = HealthState(
            self.metrics,
            liveness_stall_s=s.liveness_stall_s,
            pipeline_stall_s=s.liveness_pipeline_stall_s,
            checks={"redis": redis_store.ping, "s3": lambda: _storage_answers(store, s.s3_audio_bucket)},
        )
        if s.http_port:
            # Up before the model loads: the startup probe must be answered during the load.
            server = HealthServer(health, self.metrics, s.http_host, s.http_port)
            server.start()
            self.health_port = server.port
            stack.callback(server.stop)
        health.start_checker()
        stack.callback(health.stop)
        return health

    def _load_engine(self, stack: ExitStack) -> tuple[Engine, str]:
        s = self.settings
        engine = self._engine or create_engine(s)
        started = time.perf_counter()
        engine.load()
        stack.callback(engine.close)
        engine.warm_up()
        load_s = time.perf_counter() - started
        self.metrics.model_load_seconds.set(load_s)
        model_version = s.model_version or engine.model_version
        self.metrics.build_info.info(
            {"version": __version__, "engine": engine.name, "model_version": model_version}
        )
        log.info(
            "engine ready",
            extra={"engine": engine.name, "model_version": model_version, "load_s": round(load_s, 3)},
        )
        return engine, model_version

    def _tracer(self, stack: ExitStack) -> Tracer:
        s = self.settings
        if s.tracing_exporter == "none":
            return LocalTracer()
        from consumer.adapters.otel import OtelTracer

        tracer = OtelTracer(s.tracing_exporter, service_name="tts-stream-worker", instance_id=s.instance_id)
        stack.callback(tracer.shutdown)  # flushes the last spans
        return tracer

    def _codecs(self) -> tuple[Callable[[bytes], SynthesisRequest], Callable[[SynthesisResult, str], bytes]]:
        s = self.settings
        registry = None
        if s.schema_registry_url:
            auth = {}
            if s.schema_registry_username and s.schema_registry_password:
                secret = s.schema_registry_password.get_secret_value()
                auth["basic.auth.user.info"] = f"{s.schema_registry_username}:{secret}"
            registry = registry_client(s.schema_registry_url, **auth)
        requests = request_codec(registry)
        results = result_codec(registry)
        framing = Framing.CONFLUENT if registry is not None else Framing.SINGLE_OBJECT

        def encode_result(result: SynthesisResult, topic: str) -> bytes:
            return results.encode(result, framing=framing, topic=topic)

        return requests.decode, encode_result

    def _kafka_clients(self, stack: ExitStack) -> tuple[KafkaProducerAdapter, KafkaConsumerAdapter]:
        s = self.settings
        base = s.kafka.librdkafka_config()
        transactional = s.guarantee is Guarantee.EXACTLY_ONCE
        pconfig = producer_config(
            base,
            transactional_id=s.transactional_id if transactional else None,
            transaction_timeout_ms=s.transaction_timeout_ms,
        )
        log.info("kafka producer", extra={"config": describe(pconfig)})
        # The producer first: init_transactions fences a previous incarnation before we consume.
        producer = KafkaProducerAdapter(pconfig, transactional=transactional)
        stack.callback(producer.close)
        self._check_durability(base)
        consumer = KafkaConsumerAdapter(
            consumer_config(
                base,
                group_id=s.group_id,
                instance_id=s.instance_id if s.static_membership else None,
                group_protocol=s.group_protocol.value,
                remote_assignor=s.group_remote_assignor,
                session_timeout_ms=s.session_timeout_ms,
                max_poll_interval_ms=s.max_poll_interval_ms,
            )
        )
        stack.callback(consumer.close)
        return producer, consumer

    def _check_durability(self, base: dict[str, Any]) -> None:
        """Refuse to run on topics that would lose what they acknowledge (TTS_DURABILITY_CHECK)."""
        s = self.settings
        if s.durability_check == "off":
            return
        topics = [s.topics.requests, s.topics.bulk, s.topics.results, s.topics.dlq]
        timeout_ms = s.transaction_timeout_ms if s.guarantee is Guarantee.EXACTLY_ONCE else None
        try:
            cluster, problems = check_durability(base, topics, transaction_timeout_ms=timeout_ms)
        except BrokerUnavailable as exc:
            log.warning("kafka durability settings not checked: %s", exc)
            return
        log.info("kafka durability", extra={"durability": cluster.summary()})
        if not problems:
            return
        if s.durability_check == "enforce":
            raise ConfigurationError(
                "the Kafka cluster would lose acknowledged records: "
                + "; ".join(problems)
                + " (TTS_DURABILITY_CHECK=warn runs anyway)"
            )
        for problem in problems:
            log.warning("kafka durability: %s", problem)

    def _run_loop(self, loop: WorkerLoop, health: HealthState) -> None:
        self._loop = loop
        if self._stop_requested:
            loop.request_stop()
        health.mark_started()
        health.mark_loop_running(True)
        health.run_checks()
        try:
            loop.run()
        finally:
            health.mark_loop_running(False)
        log.info("worker stopped", extra={"answered": loop.answered})

    def _presigner(self, store: ObjectStore) -> Callable[[str], tuple[str, int] | None]:
        expires = self.settings.presign_expiry_s

        def presign(uri: str) -> tuple[str, int] | None:
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            try:
                url = store.presign_get(bucket, key, expires)
            except Exception as exc:
                log.warning("presigning failed: %s", exc)
                return None
            return url, int(time.time() * 1000) + expires * 1000

        return presign


def _storage_answers(store: ObjectStore, bucket: str) -> bool:
    """A HEAD of a key that need not exist: any answer (even 404) means storage is up."""
    store.head(bucket, ".tts-stream-health")
    return True


def settings_summary(settings: WorkerSettings) -> dict[str, Any]:
    """Settings for the start-up log line; SecretStr fields print as '**********'."""
    return {k: str(v) for k, v in settings.model_dump().items() if k not in ("kafka",)}
