"""`make bench-gateway`: what the HTTP gateway costs, against a direct Kafka client, in one run.

1. Added latency at light load: one request at a time, every 20 ms, alternating between the
   direct client (`TtsProducer` + `ResultSubscriber`, what an upstream service does) and the
   gateway (a synchronous `POST /v1/tts`), against the same worker. Added = gateway - direct,
   at p50 and p99. Each request is new (a cache miss on the null engine, zero latency).
2. Cache hits: requests whose audio is already cached, through two gateway replicas at once
   from a closed-loop client (`CONNECTIONS` keep-alive connections), and the same number of
   hits from the direct client, submitted at once.

The HTTP client is a few lines of asyncio on raw sockets: a general-purpose client (httpx)
costs more CPU per request than the gateway itself, and shares the same two cores.
Targets (docs/performance.md): added p50 <= 10 ms; hits >= 2,000 req/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

from bench.harness import LOGS, STACK, percentile, private_lanes, start_worker
from producer import ResultSubscriber, TtsProducer
from producer.settings import ProducerSettings
from tests.support.gateway import GatewayProcess, write_keys

RESULTS = Path(__file__).resolve().parent / "results"
CONNECTIONS = 256
WORKER_ENV = {"TTS_ENGINE": "null", "TTS_NULL_AUDIO_SECONDS": "0.3", "TTS_SCHEMA_REGISTRY_URL": ""}
GATEWAY_ENV = {"TTS_LOG_LEVEL": "WARNING", "TTS_GATEWAY_MAX_LANE_LAG": "0"}


class Connection:
    """One keep-alive HTTP/1.1 connection that sends a prepared request and reads the answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def call(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def post(path: str, key: str, body: dict[str, Any], extra: str = "") -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n{extra}\r\n"
    )
    return head.encode() + data


async def latency(
    producer: TtsProducer, results: ResultSubscriber, gateway: GatewayProcess, key: str, n: int
) -> dict[str, Any]:
    direct: list[float] = []
    through: list[float] = []
    connection = await Connection.open(gateway.port)
    run = uuid.uuid4().hex[:6]
    try:
        for i in range(n):
            text = f"Latency probe {run} number {i}."
            started = time.perf_counter()
            rid = producer.submit(f"{text} direct", "preset:en-us")
            producer.flush()
            await asyncio.to_thread(results.wait_for, [rid], 30)
            direct.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.02)
            request = post("/v1/tts", key, {"text": f"{text} gateway", "voice": "preset:en-us"})
            started = time.perf_counter()
            status, body = await connection.call(request)
            through.append((time.perf_counter() - started) * 1000)
            assert status == 200, body[:300]
            await asyncio.sleep(0.02)
    finally:
        connection.close()
    p50d, p99d, p50g, p99g = (percentile(v, p) for v in (direct, through) for p in (50, 99))
    return {
        "requests_each": n,
        "direct_ms": {"p50": round(p50d, 2), "p99": round(p99d, 2)},
        "gateway_ms": {"p50": round(p50g, 2), "p99": round(p99g, 2)},
        "added_ms": {"p50": round(p50g - p50d, 2), "p99": round(p99g - p99d, 2)},
        "target_added_p50_ms": 10,
        "met": p50g - p50d <= 10,
    }


async def hits_through_gateways(ports: list[int], key: str, texts: list[str], total: int) -> dict[str, Any]:
    requests = [post("/v1/tts", key, {"text": t, "voice": "preset:en-us"}) for t in texts]
    connections = [await Connection.open(ports[i % len(ports)]) for i in range(CONNECTIONS)]
    remaining = total
    statuses: dict[int, int] = {}
    hits = 0

    async def client(index: int, connection: Connection) -> None:
        nonlocal remaining, hits
        n = index
        while remaining > 0:
            remaining -= 1
            status, body = await connection.call(requests[n % len(requests)])
            statuses[status] = statuses.get(status, 0) + 1
            hits += status == 200 and b'"cache_hit":true' in body
            n += CONNECTIONS

    started = time.perf_counter()
    await asyncio.gather(*(client(i, c) for i, c in enumerate(connections)))
    elapsed = time.perf_counter() - started
    for connection in connections:
        connection.close()
    return {
        "requests": total,
        "seconds": round(elapsed, 2),
        "req_per_s": round(total / elapsed, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "cache_hits": hits,
        "replicas": len(ports),
        "connections": CONNECTIONS,
        "target_req_per_s": 2000,
        "met": total / elapsed >= 2000 and hits == total,
    }


def hits_direct(
    producer: TtsProducer, results: ResultSubscriber, texts: list[str], total: int
) -> dict[str, Any]:
    started = time.perf_counter()
    ids = [producer.submit(texts[i % len(texts)], "preset:en-us") for i in range(total)]
    producer.flush()
    found = results.wait_for(ids, 120)
    elapsed = time.perf_counter() - started
    return {
        "requests": total,
        "seconds": round(elapsed, 2),
        "req_per_s": round(total / elapsed, 1),
        "cache_hits": sum(r.cache_hit for r in found.values()),
    }


async def run(n_latency: int, n_hits: int) -> dict[str, Any]:
    keys = write_keys(LOGS, {"bench": "rate=100000 burst=100000"})
    with private_lanes(6) as lanes:
        worker = start_worker(
            lanes, f"bench-gw-{uuid.uuid4().hex[:6]}", {**WORKER_ENV, "TTS_LOG_LEVEL": "WARNING"}
        )
        gateways = [
            GatewayProcess(STACK, lanes, keys, LOGS, f"bench-{i}", GATEWAY_ENV).start() for i in range(2)
        ]
        settings = ProducerSettings.from_values(
            kafka={"bootstrap_servers": STACK.kafka_bootstrap}, topics=lanes.topic_names(), linger_ms=1
        )
        try:
            for gateway in gateways:
                gateway.wait_ready()
            with ResultSubscriber(settings) as results, TtsProducer(settings) as producer:
                lat = await latency(producer, results, gateways[0], keys["bench"], n_latency)
                texts = [f"A cached sentence, number {i}, {uuid.uuid4().hex[:6]}." for i in range(40)]
                hits_direct(producer, results, texts, len(texts))  # fill the cache
                direct = hits_direct(producer, results, texts, n_hits)
            through = await hits_through_gateways([g.port for g in gateways], keys["bench"], texts, n_hits)
        finally:
            for gateway in gateways:
                gateway.stop()
            worker.stop(30)
    return {
        "scenario": "gateway",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "latency_light_load": lat,
        "cache_hits": {
            "through_two_gateways": through,
            "direct_client": direct,
            "ratio": round(through["req_per_s"] / direct["req_per_s"], 3),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-requests", type=int, default=200)
    parser.add_argument("--hit-requests", type=int, default=8000)
    args = parser.parse_args()
    report = asyncio.run(run(args.latency_requests, args.hit_requests))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"gateway-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"written to {out.relative_to(RESULTS.parent.parent)}")


if __name__ == "__main__":
    main()
