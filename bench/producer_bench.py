"""Producer benchmark (`make bench-producer`): what the producer side costs, measured, not assumed.

1. Client vs raw. `TtsProducer.submit()` (build, validate, routing key, Avro encode, produce) is
   compared with a raw confluent-kafka Producer that sends the same requests already encoded.
   Both use the same librdkafka configuration and the same local broker, in the same run, in
   alternating order. A third series shows the usual hand-written version too: fastavro's
   schemaless_writer plus produce, with no validation and no keys.
2. Backfill. `tts-stream backfill` runs on a generated file of N lines (1,000,000 by default),
   end to end (hash, validation pass, transactional submission). The benchmark records the
   lines per second and samples the process's resident memory four times a second. From the
   samples it reports the peak and the growth over the second half of the run (steady-state
   submission), to show whether memory stays flat. A 100,000-line run gives the same peak
   check at a tenth of the size (`--backfill-lines`).

Each figure is a median with its spread over repeated runs. CPU seconds are reported next to
wall time, because the machine may be shared. Results go to bench/results/producer-<time>.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import confluent_kafka
import fastavro
import psutil
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from producer import ProducerSettings, TtsProducer
from schemas.codec import REQUEST_SCHEMAS, request_codec
from schemas.keys import routing_key
from schemas.model import PresetVoice, SynthesisRequest, new_request_id, now_ms, request_to_avro
from schemas.topics import TopicNames

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BOOTSTRAP = os.environ.get("TTS_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
WORDS = (
    "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "bright",
    "stars", "shine", "above", "quiet", "hills", "and", "rivers", "running", "toward", "the",
    "distant", "sea", "under", "a", "pale", "morning", "sky",
)  # fmt: skip


def texts(count: int, seed: int = 7) -> list[str]:
    """Sentences of 12-20 words (~90 characters), each unique so no two requests share a key."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 20))) + f" {i}." for i in range(count)]


# ------------------------------------------------------------------------------------- topics


def create_topics(partitions: int, *names: str, config: dict[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    futures = admin.create_topics([NewTopic(n, partitions, 1, config=config or {}) for n in names])
    for future in futures.values():
        future.result()


def delete_topics(*names: str) -> None:
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for future in admin.delete_topics(list(names)).values():
        try:
            future.result()
        except Exception as exc:  # a leftover bench topic is harmless
            print(f"  (could not delete a bench topic: {exc})", file=sys.stderr)


# --------------------------------------------------------------------------- client vs raw


def timed(run: Callable[[], int]) -> dict[str, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    count = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "messages": count,
        "wall_s": wall,
        "cpu_s": cpu,
        "per_s": count / wall,
        "cpu_us_per_msg": cpu / count * 1e6,
    }


def run_raw(config: dict[str, Any], topic: str, encoded: list[tuple[bytes, bytes]]) -> int:
    producer = Producer(config)
    failures = 0

    def delivered(err: Any, msg: Any) -> None:
        nonlocal failures
        if err is not None:
            failures += 1

    for i, (key, value) in enumerate(encoded):
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush()
    if failures:
        raise RuntimeError(f"raw producer: {failures} deliveries failed")
    return len(encoded)


def run_hand_written(config: dict[str, Any], topic: str, sentences: list[str]) -> int:
    """What a team writes without our library: fastavro encode + produce, no checks, no keys."""
    producer = Producer(config)
    schema = REQUEST_SCHEMAS.latest.parsed
    header = b"\xc3\x01" + REQUEST_SCHEMAS.latest.fingerprint
    for i, text in enumerate(sentences):
        request = SynthesisRequest(new_request_id(), text, PresetVoice("en-us"), created_at_ms=now_ms())
        buf = io.BytesIO()
        buf.write(header)
        fastavro.schemaless_writer(buf, schema, request_to_avro(request))
        while True:
            try:
                producer.produce(topic, buf.getvalue(), on_delivery=lambda err, msg: None)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush()
    return len(sentences)


def run_client(settings: ProducerSettings, sentences: list[str]) -> int:
    with TtsProducer(settings) as tts:
        for text in sentences:
            tts.submit(text, voice="preset:en-us")
    return len(sentences)


def client_vs_raw(messages: int, repeats: int) -> dict[str, Any]:
    sentences = texts(messages)
    topic = f"bench-producer-{uuid.uuid4().hex[:8]}"
    create_topics(6, topic)
    settings = ProducerSettings.from_values(
        kafka={"bootstrap_servers": BOOTSTRAP}, topics=TopicNames(requests=topic)
    )
    config = settings.producer_config()
    codec = request_codec()
    encoded = []
    for text in sentences:  # the same requests, encoded ahead of time for the raw series
        request = SynthesisRequest(new_request_id(), text, PresetVoice("en-us"), created_at_ms=now_ms())
        encoded.append((routing_key(request).encode(), codec.encode(request)))
    runs: list[dict[str, Any]] = []
    try:
        for repeat in range(repeats):
            series = {
                "raw": lambda: run_raw(config, topic, encoded),
                "client": lambda: run_client(settings, sentences),
                "hand_written": lambda: run_hand_written(config, topic, sentences),
            }
            order = list(series) if repeat % 2 == 0 else list(reversed(series))
            run: dict[str, Any] = {"order": order}
            for name in order:
                run[name] = timed(series[name])
            run["ratio_client_to_raw"] = run["client"]["per_s"] / run["raw"]["per_s"]
            runs.append(run)
            rates = {name: f"{run[name]['per_s']:,.0f}/s" for name in series}
            print(f"  repeat {repeat + 1}: {rates} ratio {run['ratio_client_to_raw']:.2f}", file=sys.stderr)
    finally:
        delete_topics(topic)
    return {
        "messages": messages,
        "repeats": repeats,
        "runs": runs,
        "summary": {
            "raw_per_s": spread([r["raw"]["per_s"] for r in runs]),
            "client_per_s": spread([r["client"]["per_s"] for r in runs]),
            "hand_written_per_s": spread([r["hand_written"]["per_s"] for r in runs]),
            "ratio_client_to_raw": spread([r["ratio_client_to_raw"] for r in runs]),
            "client_cpu_us_per_msg": spread([r["client"]["cpu_us_per_msg"] for r in runs]),
            "raw_cpu_us_per_msg": spread([r["raw"]["cpu_us_per_msg"] for r in runs]),
        },
        "breakdown_us_per_msg": breakdown(sentences[:20_000]),
    }


def breakdown(sentences: list[str]) -> dict[str, float]:
    """Where the client's time goes, step by step, without the broker (CPU microseconds)."""
    from producer.requests import build_request
    from schemas.validation import RequestLimits, request_problems

    codec = request_codec()
    limits = RequestLimits()
    requests = [build_request(t, "preset:en-us") for t in sentences]
    steps: dict[str, Callable[[int], object]] = {
        "build_request": lambda i: build_request(sentences[i], "preset:en-us"),
        "validate": lambda i: request_problems(requests[i], limits),
        "routing_key": lambda i: routing_key(requests[i]),
        "avro_encode": lambda i: codec.encode(requests[i]),
    }
    out: dict[str, float] = {}
    for name, step in steps.items():
        start = time.process_time()
        for i in range(len(sentences)):
            step(i)
        out[name] = (time.process_time() - start) / len(sentences) * 1e6
    return out


# ------------------------------------------------------------------------------------ backfill


def write_lines(path: Path, count: int) -> None:
    with path.open("w") as f:
        for text in texts(count, seed=11):
            f.write(json.dumps({"text": text, "voice": "preset:en-us"}) + "\n")


def backfill_once(path: Path, lines: int) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    topics = {
        "TTS_TOPICS_BULK": f"bench-bulk-{suffix}",
        "TTS_TOPICS_BACKFILL_CHECKPOINTS": f"bench-ckpt-{suffix}",
    }
    create_topics(6, topics["TTS_TOPICS_BULK"])
    create_topics(1, topics["TTS_TOPICS_BACKFILL_CHECKPOINTS"], config={"cleanup.policy": "compact"})
    env = {**os.environ, **topics, "TTS_KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP}
    work = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    command = [
        sys.executable, "-m", "tts_stream", "--log-format", "text", "--log-level", "WARNING",
        "backfill", str(path), "--job-id", f"bench-{suffix}", "--no-progress",
        "--checkpoint", str(work / "checkpoint.json"), "--manifest", str(work / "manifest.jsonl"),
    ]  # fmt: skip
    samples: list[tuple[float, int]] = []
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watched = psutil.Process(process.pid)
    cpu = (0.0, 0.0)
    try:
        while process.poll() is None:
            try:
                samples.append((time.perf_counter() - started, watched.memory_info().rss))
                times = watched.cpu_times()
                cpu = (times.user, times.system)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.25)
        out, err = process.communicate()
    finally:
        delete_topics(*topics.values())
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"backfill failed ({process.returncode}): {err[-2000:]}")
    submit_rate = None
    for line in out.splitlines():
        found = re.search(r"\(([\d,]+) lines/s\)", line)
        if found:
            submit_rate = float(found.group(1).replace(",", ""))
    rss = [r for _, r in samples]
    at = lambda fraction: next((r for t, r in samples if t >= fraction * wall), rss[-1])  # noqa: E731
    return {
        "lines": lines,
        "wall_s": wall,
        "lines_per_s": lines / wall,
        "submit_phase_lines_per_s": submit_rate,
        "cpu_s": cpu[0] + cpu[1],
        "peak_rss_mib": max(rss) / 2**20,
        "rss_mib_at": {f"{int(f * 100)}%": at(f) / 2**20 for f in (0.1, 0.25, 0.5, 0.75, 0.9, 0.97)},
        # The second half of the run is all submission: steady state, where a leak would show.
        "rss_growth_50_to_97_mib": (at(0.97) - at(0.5)) / 2**20,
        "samples": len(samples),
    }


def backfill(lines: int, repeats: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-backfill-input-"))
    path = folder / f"lines-{lines}.jsonl"
    write_lines(path, lines)
    runs = []
    for repeat in range(repeats):
        run = backfill_once(path, lines)
        runs.append(run)
        print(
            f"  backfill {repeat + 1}: {run['lines_per_s']:,.0f} lines/s end to end "
            f"(submission {run['submit_phase_lines_per_s'] or 0:,.0f}/s), "
            f"peak {run['peak_rss_mib']:.0f} MiB, growth 50%->97% {run['rss_growth_50_to_97_mib']:+.1f} MiB",
            file=sys.stderr,
        )
    path.unlink()
    return {
        "lines": lines,
        "repeats": repeats,
        "runs": runs,
        "summary": {
            "lines_per_s": spread([r["lines_per_s"] for r in runs]),
            "submit_phase_lines_per_s": spread([r["submit_phase_lines_per_s"] or 0 for r in runs]),
            "peak_rss_mib": spread([r["peak_rss_mib"] for r in runs]),
            "rss_growth_50_to_97_mib": spread([r["rss_growth_50_to_97_mib"] for r in runs]),
            "cpu_us_per_line": spread([r["cpu_s"] / lines * 1e6 for r in runs]),
        },
    }


# ---------------------------------------------------------------------------------------- main


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000, help="per series and repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backfill-lines", type=int, default=1_000_000)
    parser.add_argument("--backfill-repeats", type=int, default=3)
    parser.add_argument("--skip-backfill", action="store_true")
    parser.add_argument("--skip-client", action="store_true", help="backfill only")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    report: dict[str, Any] = {
        "benchmark": "producer",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
            "python": platform.python_version(),
            "confluent_kafka": confluent_kafka.version()[0],
            "librdkafka": confluent_kafka.libversion()[0],
            "fastavro": fastavro.__version__,
        },
    }
    if not args.skip_client:
        print(f"client vs raw: {args.messages:,} messages x {args.repeats} repeats", file=sys.stderr)
        report["client_vs_raw"] = client_vs_raw(args.messages, args.repeats)
    if not args.skip_backfill:
        print(f"backfill: {args.backfill_lines:,} lines x {args.backfill_repeats} repeats", file=sys.stderr)
        report["backfill"] = backfill(args.backfill_lines, args.backfill_repeats)
    report["load_average_at_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"producer-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    if "client_vs_raw" in report:
        summary = report["client_vs_raw"]["summary"]
        print(
            f"client/raw ratio: median {summary['ratio_client_to_raw']['median']:.2f} "
            f"(client {summary['client_per_s']['median']:,.0f}/s, "
            f"raw {summary['raw_per_s']['median']:,.0f}/s)"
        )
    if "backfill" in report:
        b = report["backfill"]["summary"]
        print(
            f"backfill: median {b['lines_per_s']['median']:,.0f} lines/s end to end, "
            f"peak RSS {b['peak_rss_mib']['median']:.0f} MiB, "
            f"growth in the second half {b['rss_growth_50_to_97_mib']['median']:+.1f} MiB"
        )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
