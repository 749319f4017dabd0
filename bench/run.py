"""Run the benchmark suite: `python -m bench.run [--smoke] [--repeats N] [--only a,b]`.

Writes one JSON file per scenario under bench/results/ (every run plus median/min/max of each
figure) and PNG plots (matplotlib). `--smoke` runs every scenario once at a small size and only
checks that it completes with consistent bookkeeping — it never judges speed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import LOGS, summary
from bench.scenarios import SCENARIOS

RESULTS = Path(__file__).resolve().parent / "results"


def run(name: str, size: int, repeats: int) -> dict[str, Any]:
    function = SCENARIOS[name][0]
    runs = []
    for i in range(repeats):
        started = time.perf_counter()
        measured = function(size)
        measured["wall_s"] = time.perf_counter() - started
        runs.append(measured)
        shown = {k: round(v, 3) for k, v in measured.items() if isinstance(v, float | int)}
        print(f"  {name} run {i + 1}/{repeats}: {shown}", flush=True)
    figures = {
        key: summary([r[key] for r in runs]) for key in runs[0] if isinstance(runs[0][key], int | float)
    }
    return {
        "scenario": name,
        "size": size,
        "repeats": repeats,
        "machine": {"cpus": _cpus(), "python": platform.python_version(), "platform": platform.platform()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "figures": figures,
        "runs": runs,
    }


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run each, bookkeeping only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
    out = RESULTS / ("smoke" if args.smoke else "")
    out.mkdir(parents=True, exist_ok=True)
    print(f"worker and baseline logs: {LOGS}")
    for name in names:
        _, full, smoke = SCENARIOS[name]
        size = smoke if args.smoke else full
        repeats = 1 if args.smoke else (1 if name == "soak" else args.repeats)
        print(f"{name}: {repeats} x {size} requests", flush=True)
        report = run(name, size, repeats)
        (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    if not args.smoke:
        from bench.plots import plot_all

        plot_all(RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
