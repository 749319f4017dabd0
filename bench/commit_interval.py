"""Which exactly-once commit interval (`TTS_COMMIT_INTERVAL_MS`)? `make bench-commit`.

Each commit under exactly_once is a Kafka transaction: results and offsets become visible to
read_committed subscribers only when it commits, so a longer interval means fewer transactions
(less broker work, bigger batches) but more latency. For 20, 100 and 250 ms, in interleaved
rounds against the same stack: the miss path's rate on a backlog (null engine, small audio)
with the transactions a second it took, and the end-to-end latency at light load (10 requests a
second). Writes bench/results/commit_interval.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from bench.scenarios import SMALL, backlog_rate, light_load_latency

RESULTS = Path(__file__).resolve().parent / "results"
INTERVALS_MS = (20, 100, 250)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=3000, help="requests of the backlog run")
    parser.add_argument("--light", type=int, default=100, help="requests of the light-load run")
    args = parser.parse_args()
    runs: dict[int, list[dict[str, Any]]] = {ms: [] for ms in INTERVALS_MS}
    for round_ in range(args.rounds):
        for ms in INTERVALS_MS:
            env = {"TTS_COMMIT_INTERVAL_MS": str(ms)}
            measured = {
                **backlog_rate(args.backlog, {**SMALL, **env}),
                **light_load_latency(args.light, env=env),
            }
            runs[ms].append(measured)
            shown = {k: round(v, 1) for k, v in measured.items() if k in FIGURES}
            print(f"round {round_ + 1} interval {ms} ms: {shown}", flush=True)
    report = {
        "rounds": args.rounds,
        "intervals": {
            str(ms): {key: statistics.median(r[key] for r in measured) for key in FIGURES}
            for ms, measured in runs.items()
        },
        "runs": {str(ms): measured for ms, measured in runs.items()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "commit_interval.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["intervals"], indent=2))


FIGURES = ("worker_rps", "commits_per_s", "end_to_end_p50_ms", "end_to_end_p99_ms", "overhead_p50_ms")

if __name__ == "__main__":
    main()
