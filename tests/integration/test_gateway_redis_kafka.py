"""The gateway's shared state against the real services: rate limits and request records in
Redis (one limit across replicas; on one server, a Sentinel master and a Redis Cluster), and the
lane lag it reads from Kafka for backpressure."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from consumer.adapters.redis_connect import RedisTopology
from schemas.topics import TopicNames
from tests.support.kafka_io import create_lanes, delete_lanes, request, send_requests
from tts_stream.gateway.admission import Admission, RequestRecord
from tts_stream.gateway.backpressure import LaneLagWatch
from tts_stream.ops.lag import LagReader


def test_rate_limits_are_shared_by_replicas_and_records_are_per_key(redis_topology: RedisTopology) -> None:
    name = f"it-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[list[float | None], float | None, Any, Any]:
        # Two replicas: two clients, one Redis (the gateway's own client for each deployment).
        one, two = redis_topology.async_client(), redis_topology.async_client()
        try:
            a = Admission(one, record_ttl_s=60)
            b = Admission(two, record_ttl_s=60)
            answers = []
            for index in range(4):
                admission = a if index % 2 == 0 else b
                answers.append(await admission.admit(name, 2.0, 3))
            await asyncio.sleep(0.55)  # one interval at 2/s
            later = await a.admit(name, 2.0, 3, ("req-1", RequestRecord(123, 456)))
            own = await b.record_of(name, "req-1")
            other = await b.record_of(f"{name}-other", "req-1")
            return answers, later, own, other
        finally:
            await one.aclose()
            await two.aclose()

    answers, later, own, other = asyncio.run(scenario())
    assert answers[:3] == [None, None, None]  # the burst, across both replicas
    assert answers[3] is not None and 0 < answers[3] <= 0.5
    assert later is None
    assert own == RequestRecord(123, 456)
    assert other is None  # another key's view: nothing there
    ttl = redis_topology.client().ttl(f"tts:gw:{{{name}}}:req:req-1")
    assert 0 < ttl <= 60


def test_the_lag_watch_reads_the_workers_backlog(kafka_config: dict[str, Any]) -> None:
    lanes = create_lanes(kafka_config, partitions=2)
    try:
        topics = TopicNames(requests=lanes.requests, bulk=lanes.bulk, results=lanes.results, dlq=lanes.dlq)
        watch = LaneLagWatch(LagReader(kafka_config, topics, lanes.group), limit=5, interval_s=60)
        assert watch.read_once().lag == 0 and watch.excess() is None
        send_requests(kafka_config, lanes.requests, [request(f"Lag {i}.") for i in range(12)])
        assert watch.read_once().lag == 12
        assert watch.excess() is not None  # over the limit of 5; no rate seen yet
        # The workers' group catches up: the backlog and the refusal go away.
        consumer = Consumer({**kafka_config, "group.id": lanes.group, "enable.auto.commit": False})
        ends = [
            TopicPartition(
                lanes.requests,
                p,
                consumer.get_watermark_offsets(TopicPartition(lanes.requests, p), timeout=10)[1],
            )
            for p in range(2)
        ]
        consumer.commit(offsets=ends, asynchronous=False)
        consumer.close()
        time.sleep(0.1)
        reading = watch.read_once()
        assert reading.lag == 0 and reading.consumed_per_s is not None and reading.consumed_per_s > 0
        assert watch.excess() is None
    finally:
        delete_lanes(kafka_config, lanes)
