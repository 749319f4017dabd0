"""The benchmark scenarios. Each runs once and returns its measurements (plain numbers);
bench/run.py repeats them and reports median and spread. Baselines run in the same scenario,
against the same stack, so the ratios are the contract (absolute numbers depend on the machine).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import psutil
from confluent_kafka import Producer

from bench.harness import (
    KAFKA,
    Arrival,
    collect,
    make_requests,
    percentile,
    preload,
    private_lanes,
    rate_from_completion,
    run_id,
    start_module,
    start_worker,
)
from schemas.codec import request_codec
from schemas.keys import routing_key
from schemas.model import ResultStatus, now_ms
from tests.support.worker import free_port

NULL = {"TTS_ENGINE": "null"}
SMALL = {**NULL, "TTS_NULL_AUDIO_SECONDS": "0.2"}  # "small audio": the pipeline's cost, not the DSP's
Scenario = Callable[[int], dict[str, Any]]


def _texts(n: int, tag: str) -> list[str]:
    return [f"Benchmark sentence {i} of run {tag}, a short line of speech." for i in range(n)]


def _assert_all_succeeded(arrivals: list[Any], n: int) -> None:
    ids = {a.result.request_id for a in arrivals}
    failed = [a.result for a in arrivals if a.result.status is not ResultStatus.SUCCEEDED]
    if len(ids) != n or failed:
        raise AssertionError(f"bookkeeping: {len(ids)} of {n} answered, {len(failed)} failed")


def _baseline_consumer(topic: str, results: str, count: int, env: dict[str, str]) -> float:
    proc = start_module(
        "bench.baselines.naive_consumer",
        "--topic",
        topic,
        "--results",
        results,
        "--group",
        f"naive-{run_id()}",
        "--count",
        str(count),
        env=env,
    )
    try:
        arrivals = collect(results, count, timeout_s=600)
    finally:
        proc.wait(60)
    _assert_all_succeeded(arrivals, count)
    return rate_from_completion(arrivals)


# ------------------------------------------------------------------------------ scenarios --


def hit_storm(n: int) -> dict[str, Any]:
    """Every request already cached: the cost of everything around the engine."""
    tag = run_id()
    texts = _texts(n, tag)
    warm_cache(texts, tag)
    with private_lanes() as lanes:
        preload(lanes.requests, make_requests(texts))
        worker = start_worker(lanes, f"hits-{tag}", SMALL)
        arrivals = collect(lanes.results, n, timeout_s=600)
        worker.stop()
    _assert_all_succeeded(arrivals, n)
    if not all(a.result.cache_hit for a in arrivals):
        raise AssertionError("a hit-storm request missed the cache")
    worker_rps = rate_from_completion(arrivals)
    base_n = max(50, n // 10)
    with private_lanes() as lanes:
        preload(lanes.requests, make_requests(texts[:base_n]))
        baseline_rps = _baseline_consumer(lanes.requests, lanes.results, base_n, SMALL)
    return {"worker_rps": worker_rps, "baseline_a_rps": baseline_rps, "ratio_vs_a": worker_rps / baseline_rps}


def warm_cache(texts: list[str], tag: str) -> None:
    """Synthesise `texts` once (null engine, small audio) so that they are all cached."""
    with private_lanes() as warm:
        preload(warm.requests, make_requests(texts))
        worker = start_worker(warm, f"warm-{tag}", SMALL)
        collect(warm.results, len(texts), timeout_s=600)
        worker.stop()


def _http_baseline(texts: list[str], clients: int = 8) -> float:
    port = free_port()
    proc = start_module("bench.baselines.http_server", "--port", str(port), env=SMALL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            except urllib.error.HTTPError:
                break  # it answers (GET is not served): up
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

        def call(i_text: tuple[int, str]) -> None:
            body = json.dumps({"id": f"r{i_text[0]}", "text": i_text[1]}).encode()
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/synthesize", body, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=120) as response:
                response.read()

        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(call, enumerate(texts)))
        return len(texts) / (time.perf_counter() - started)
    finally:
        proc.terminate()
        proc.wait(30)


def miss_path(n: int) -> dict[str, Any]:
    """Every request new, null engine at zero latency and small audio: the miss path's cost."""
    tag = run_id()
    worker_rps = backlog_rate(n, SMALL)["worker_rps"]
    base_n = max(50, n // 10)
    with private_lanes() as lanes:
        preload(lanes.requests, make_requests(_texts(base_n, tag + "a")))
        naive_rps = _baseline_consumer(lanes.requests, lanes.results, base_n, SMALL)
    http_rps = _http_baseline(_texts(base_n, tag + "b"))
    return {
        "worker_rps": worker_rps,
        "baseline_a_rps": naive_rps,
        "baseline_b_rps": http_rps,
        "ratio_vs_a": worker_rps / naive_rps,
        "ratio_vs_b": worker_rps / http_rps,
    }


def backlog_rate(n: int, env: dict[str, str]) -> dict[str, float]:
    """A worker on a backlog of `n` new requests: its rate, and its transactions (commits) a second."""
    tag = run_id()
    with private_lanes() as lanes:
        preload(lanes.requests, make_requests(_texts(n, tag)))
        worker = start_worker(lanes, f"miss-{tag}", env)
        arrivals = collect(lanes.results, n, timeout_s=900)
        commits = worker.metrics().get("tts_commit_duration_seconds_count", 0.0)
        worker.stop()
    _assert_all_succeeded(arrivals, n)
    stamps = sorted(a.result.completed_at_ms for a in arrivals)
    wall_s = max(1e-3, (stamps[-1] - stamps[0]) / 1000.0)
    return {"worker_rps": rate_from_completion(arrivals), "commits_per_s": commits / wall_s}


def duty_cycle(n: int, latency_ms: int = 200, batch: int = 32) -> dict[str, Any]:
    """A GPU-like engine (fixed time per batch) under a deep backlog: is it ever idle?

    200 ms per batch of 32 (160 requests/s) keeps the engine the slowest stage, as a real GPU
    model is: the question is whether everything around it keeps it fed. (With an engine faster
    than the rest of the pipeline the engine must wait; the miss-path scenario measures that
    ceiling.)"""
    tag = run_id()
    env = {**NULL, "TTS_NULL_LATENCY_MS": str(latency_ms), "TTS_MAX_BATCH_ITEMS": str(batch)}
    with private_lanes() as lanes:
        preload(lanes.requests, make_requests(_texts(n, tag)))
        worker = start_worker(lanes, f"duty-{tag}", env)
        arrivals = collect(lanes.results, n, timeout_s=900)
        metrics = worker.metrics()
        worker.stop()
    _assert_all_succeeded(arrivals, n)
    stamps = sorted(a.result.completed_at_ms for a in arrivals)
    wall_s = (stamps[-1] - stamps[0]) / 1000.0 + latency_ms / 1000.0  # the first batch's engine time too
    busy_s = metrics["tts_engine_busy_seconds_total"]
    batches = metrics["tts_engine_batch_size_count"]
    throughput = n / wall_s
    theoretical = batch / (latency_ms / 1000.0)
    return {
        "busy_fraction": min(1.0, busy_s / wall_s),
        "throughput_rps": throughput,
        "theoretical_max_rps": theoretical,
        "ratio_of_max": throughput / theoretical,
        "mean_batch": metrics["tts_engine_batch_size_sum"] / batches,
    }


def light_load_latency(n: int, rate_per_s: float = 10.0, env: dict[str, str] | None = None) -> dict[str, Any]:
    """End-to-end latency at light load minus engine time: what the pipeline adds.

    Requests are produced one at a time at `rate_per_s`; a read_committed subscriber notes when
    each result arrives. Overhead = arrival - created_at - the engine time the result reports.
    """
    tag = run_id()
    codec = request_codec()
    with private_lanes() as lanes:
        worker = start_worker(lanes, f"latency-{tag}", {**NULL, "TTS_NULL_LATENCY_MS": "10", **(env or {})})
        producer = Producer({**KAFKA, "linger.ms": 0})
        arrivals: list[Arrival] = []
        reader = threading.Thread(
            target=lambda: arrivals.extend(collect(lanes.results, n, timeout_s=n / rate_per_s + 60))
        )
        reader.start()
        time.sleep(2.0)  # the reader is assigned before the first request
        for req in make_requests(_texts(n, tag)):
            fresh = replace(req, created_at_ms=now_ms())
            producer.produce(lanes.requests, codec.encode(fresh), key=routing_key(fresh).encode())
            producer.poll(0)
            time.sleep(1.0 / rate_per_s)
        producer.flush(10)
        reader.join()
        worker.stop()
    _assert_all_succeeded(arrivals, n)
    end_to_end = [a.received_ms - (a.result.completed_at_ms - a.result.timings.total_ms) for a in arrivals]
    overhead = [e2e - a.result.timings.synthesis_ms for e2e, a in zip(end_to_end, arrivals, strict=True)]
    return {
        "overhead_p50_ms": percentile(overhead, 50),
        "overhead_p99_ms": percentile(overhead, 99),
        "end_to_end_p50_ms": percentile(end_to_end, 50),
        "end_to_end_p99_ms": percentile(end_to_end, 99),
        "engine_ms_mean": sum(a.result.timings.synthesis_ms for a in arrivals) / n,
        "queued_p50_ms": percentile([a.result.timings.queued_ms for a in arrivals], 50),
        # Up to the answer being ready on the worker (before the commit that publishes it).
        "until_answered_p50_ms": percentile(
            [a.result.timings.total_ms - a.result.timings.synthesis_ms for a in arrivals], 50
        ),
    }


def dedup(n: int, workers: int = 3) -> dict[str, Any]:
    """50% duplicates spread over three workers: how many syntheses for how many unique texts?"""
    tag = run_id()
    unique = n // 2
    texts = _texts(unique, tag)
    requests = make_requests(texts + texts)  # every text twice
    with private_lanes(partitions=6) as lanes:
        procs = [
            start_worker(lanes, f"dedup{i}-{tag}", {**NULL, "TTS_NULL_LATENCY_MS": "20"})
            for i in range(workers)
        ]
        time.sleep(3.0)
        preload(lanes.requests, requests, keyed=False)  # copies land on different partitions/workers
        arrivals = collect(lanes.results, len(requests), timeout_s=600)
        syntheses = sum(w.metrics().get("tts_engine_batch_size_sum", 0.0) for w in procs)
        for w in procs:
            w.stop()
    _assert_all_succeeded(arrivals, len(requests))
    if syntheses != unique:
        raise AssertionError(f"bookkeeping: {syntheses:.0f} syntheses for {unique} unique requests")
    return {
        "requests": len(requests),
        "unique": unique,
        "engine_tasks": syntheses,
        "extra_syntheses": syntheses - unique,
    }


def espeak(n: int) -> dict[str, Any]:
    """The real CPU engine: throughput and real-time factor, and the post-processing cost."""
    tag = run_id()
    with private_lanes() as lanes:
        preload(lanes.requests, make_requests(_texts(n, tag)))
        worker = start_worker(lanes, f"espeak-{tag}", {"TTS_ENGINE": "espeak"})
        cpu_before = _cpu_seconds(worker.pid)
        arrivals = collect(lanes.results, n, timeout_s=900)
        cpu_s = _cpu_seconds(worker.pid) - cpu_before
        metrics = worker.metrics()
        worker.stop()
    _assert_all_succeeded(arrivals, n)
    audio_s = metrics["tts_audio_produced_seconds_total"]
    engine_s = metrics["tts_engine_busy_seconds_total"]
    stamps = [a.result.completed_at_ms for a in arrivals]
    wall_s = max(1e-3, (max(stamps) - min(stamps)) / 1000.0)
    return {
        "rps": rate_from_completion(arrivals),
        "audio_seconds_per_wall_second": audio_s / wall_s,
        "engine_rtf": engine_s / audio_s,
        # Everything the worker spends besides the engine, per second of audio: post-processing
        # and encoding above all (the rest of the pipeline costs ~0.5 ms per request).
        "non_engine_cpu_ms_per_audio_s": 1000.0 * (cpu_s - engine_s) / audio_s,
        "worker_cores_busy": cpu_s / wall_s,
    }


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def soak(n: int, sample_s: float = 2.0) -> dict[str, Any]:
    """Many requests through one worker: memory over time must stay flat, and nothing fails."""
    tag = run_id()
    with private_lanes() as lanes:
        worker = start_worker(lanes, f"soak-{tag}", {**NULL, "TTS_CACHE_TTL_S": "600"})
        process = psutil.Process(worker.pid)
        samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def sample() -> None:
            started = time.monotonic()
            while not stop.is_set():
                samples.append((time.monotonic() - started, process.memory_info().rss / 2**20))
                stop.wait(sample_s)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        chunk = 10_000
        for start in range(0, n, chunk):
            preload(lanes.requests, make_requests(_texts(min(chunk, n - start), f"{tag}-{start}")))
        arrivals = collect(lanes.results, n, timeout_s=3600)
        stop.set()
        sampler.join()
        worker.stop()
    _assert_all_succeeded(arrivals, n)
    half = len(samples) // 2
    first = [rss for _, rss in samples[max(1, half // 2) : half]] or [samples[0][1]]
    second = [rss for _, rss in samples[half:]] or first
    return {
        "requests": n,
        "rps": rate_from_completion(arrivals),
        "rss_mb_start": samples[0][1],
        "rss_mb_first_half_median": sorted(first)[len(first) // 2],
        "rss_mb_second_half_median": sorted(second)[len(second) // 2],
        "rss_mb_max": max(rss for _, rss in samples),
        "samples": samples,
    }


def scaling(n: int, latency_ms: int = 200) -> dict[str, Any]:
    """One vs two worker processes, each with its own GPU-like engine (200 ms per batch of 16:
    80 requests/s each, so the engines, not this machine's shared CPUs, are the limit)."""
    rates = {}
    for count in (1, 2):
        tag = run_id()
        env = {**NULL, "TTS_NULL_LATENCY_MS": str(latency_ms), "TTS_MAX_BATCH_ITEMS": "16"}
        with private_lanes(partitions=6) as lanes:
            workers = [start_worker(lanes, f"scale{count}-{i}-{tag}", env) for i in range(count)]
            time.sleep(3.0)
            preload(lanes.requests, make_requests(_texts(n, tag)))
            arrivals = collect(lanes.results, n, timeout_s=900)
            for w in workers:
                w.stop()
        _assert_all_succeeded(arrivals, n)
        rates[count] = rate_from_completion(arrivals)
    return {"one_worker_rps": rates[1], "two_workers_rps": rates[2], "speedup": rates[2] / rates[1]}


SCENARIOS: dict[str, tuple[Scenario, int, int]] = {
    # name: (function, full-size n, smoke n)
    "hit_storm": (hit_storm, 5000, 200),
    "miss_path": (miss_path, 5000, 200),
    "duty_cycle": (duty_cycle, 2000, 200),
    "light_load_latency": (light_load_latency, 300, 30),
    "dedup": (dedup, 2000, 100),
    "espeak": (espeak, 600, 30),
    "soak": (soak, 100_000, 1000),
    "scaling": (scaling, 1500, 160),
}
