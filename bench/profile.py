"""Where a worker's time goes: `python -m bench.profile [--path hit|miss] [--requests N]`.

Drives one worker through the hit-storm or miss-path workload (the same requests, engine and
settings as those scenarios) and measures three things while it drains the backlog:
- CPU per request of every thread in the worker, read from /proc (librdkafka's own threads,
  the asyncio loop, obstore's runtime, the engine thread);
- CPU per request of each local stack service (Kafka, Redis, the S3 server), from their PID files;
- a py-spy sample of the worker's Python stacks, summarised as the functions with the most
  samples on top of the stack (self time) and within it (inclusive time).

The report goes to bench/results/profile-<path>.json; py-spy's raw folded stacks sit next to it
for flame-graph tools. A profile slows the worker down by a few per cent (py-spy samples from
outside the process), so its request rate is not a benchmark figure.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil

from bench.harness import (
    collect,
    make_requests,
    preload,
    private_lanes,
    rate_from_completion,
    run_id,
    start_worker,
)
from bench.scenarios import SMALL, _texts, warm_cache

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread, summed by thread name (librdkafka names its threads)."""
    totals: collections.defaultdict[str, float] = collections.defaultdict(float)
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except FileNotFoundError:
            continue  # the thread ended between listing and reading
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        totals[name] += (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
    return dict(totals)


def service_pids() -> dict[str, int]:
    run = Path(os.environ.get("TTS_STACK_DATA_DIR", ROOT / ".infra")) / "run"
    found = {}
    for name in ("kafka", "redis", "s3"):
        pid_file = run / f"{name}.pid"
        if pid_file.exists() and psutil.pid_exists(int(pid_file.read_text().strip())):
            found[name] = int(pid_file.read_text().strip())
    return found


def process_cpu(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        times = psutil.Process(pid).cpu_times()
        out[name] = times.user + times.system + times.children_user + times.children_system
    return out


def fold_summary(folded: Path, top: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Self and inclusive shares of py-spy's folded stacks ("frame;frame;frame count" lines)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def shares(counter: Iterable[tuple[str, int]]) -> list[tuple[str, float]]:
        return [(frame, round(count / max(1, total), 3)) for frame, count in counter]

    return {"self": shares(own.most_common(top)), "inclusive": shares(inclusive.most_common(top))}


def profile(path: str, n: int, seconds: int) -> dict[str, Any]:
    tag = run_id()
    texts = _texts(n, tag)
    if path == "hit":  # fill the cache first, as the hit-storm scenario does
        warm_cache(texts, tag)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    folded = RESULTS / f"profile-{path}.folded"
    with private_lanes() as lanes:
        preload(lanes.requests, make_requests(texts))
        worker = start_worker(lanes, f"profile-{tag}", SMALL)
        services = service_pids()
        threads_before, services_before = thread_cpu(worker.pid), process_cpu(services)
        sampler = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(worker.pid),
                "--duration",
                str(seconds),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(folded),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started = time.monotonic()
        arrivals = collect(lanes.results, n, timeout_s=900)
        wall = time.monotonic() - started
        threads_after, services_after = thread_cpu(worker.pid), process_cpu(services)
        sampler.wait(seconds + 30)
        worker.stop()
    per_request = 1e6 / n

    def spent(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
        used = {k: (v - before.get(k, 0.0)) * per_request for k, v in after.items()}
        return {k: round(v, 1) for k, v in sorted(used.items(), key=lambda kv: -kv[1]) if v > 0}

    worker_threads = spent(threads_after, threads_before)
    return {
        "path": path,
        "requests": n,
        "rps_while_profiled": round(rate_from_completion(arrivals)),
        "wall_s": round(wall, 1),
        "cpu_us_per_request": {
            "worker_total": round(sum(worker_threads.values()), 1),
            "worker_threads": worker_threads,
            "services": spent(services_after, services_before),
        },
        "python_stacks": fold_summary(folded) if folded.exists() else {},
        "folded_stacks": folded.name,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--path", choices=("hit", "miss"), default="miss")
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--seconds", type=int, default=6, help="how long py-spy samples")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = profile(args.path, args.requests, args.seconds)
    out = RESULTS / f"profile-{args.path}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "python_stacks"}, indent=2))
    print(f"full report: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
