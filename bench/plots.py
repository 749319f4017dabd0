"""PNG plots of the latest benchmark results (matplotlib, no display needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _bars(ax: Any, labels: list[str], figures: list[dict[str, float]], title: str, unit: str) -> None:
    medians = [f["median"] for f in figures]
    low = [f["median"] - f["min"] for f in figures]
    high = [f["max"] - f["median"] for f in figures]
    ax.bar(labels, medians, yerr=[low, high], capsize=6, color=["#3b7dd8"] + ["#9aa5b1"] * (len(labels) - 1))
    ax.set_title(title)
    ax.set_ylabel(unit)
    for i, value in enumerate(medians):
        ax.annotate(f"{value:,.0f}", (i, value), ha="center", va="bottom")


def plot_throughput(results: Path) -> None:
    hit, miss = _load(results, "hit_storm"), _load(results, "miss_path")
    if not (hit and miss):
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    _bars(
        axes[0],
        ["worker", "naive consumer (a)"],
        [hit["figures"]["worker_rps"], hit["figures"]["baseline_a_rps"]],
        "Cache-hit storm",
        "requests / s",
    )
    _bars(
        axes[1],
        ["worker", "naive consumer (a)", "HTTP server (b)"],
        [miss["figures"][k] for k in ("worker_rps", "baseline_a_rps", "baseline_b_rps")],
        "Miss path, null engine, small audio",
        "requests / s",
    )
    fig.tight_layout()
    fig.savefig(results / "throughput.png", dpi=110)
    plt.close(fig)


def plot_soak(results: Path) -> None:
    soak = _load(results, "soak")
    if not soak:
        return
    samples = soak["runs"][0]["samples"]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([t for t, _ in samples], [rss for _, rss in samples], color="#3b7dd8")
    ax.set_title(f"Worker memory during {soak['size']:,} requests")
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(results / "soak_memory.png", dpi=110)
    plt.close(fig)


def plot_engine(results: Path) -> None:
    duty, scaling = _load(results, "duty_cycle"), _load(results, "scaling")
    if not (duty and scaling):
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    f = duty["figures"]
    _bars(
        axes[0],
        ["achieved", "theoretical max"],
        [f["throughput_rps"], f["theoretical_max_rps"]],
        f"GPU-like engine under backlog (busy {f['busy_fraction']['median']:.1%})",
        "requests / s",
    )
    s = scaling["figures"]
    _bars(
        axes[1],
        ["1 worker", "2 workers"],
        [s["one_worker_rps"], s["two_workers_rps"]],
        "Scaling out",
        "requests / s",
    )
    fig.tight_layout()
    fig.savefig(results / "engine.png", dpi=110)
    plt.close(fig)


def plot_all(results: Path) -> None:
    plot_throughput(results)
    plot_soak(results)
    plot_engine(results)
