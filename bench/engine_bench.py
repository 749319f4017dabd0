"""The batched CosyVoice path against the official one at concurrency 1, 4, 16 and 64:
`make bench-engine` (`python -m bench.engine_bench`).

Both paths get the same requests, with the same texts, voices and audio lengths, in one run on
one model, and the report gives each path's requests/s, audio seconds per wall second, real-time
factor per request and p50/p99 latency at each concurrency, with their ratios (batched over
official). On a CPU the absolute numbers say little; the ratios are the result.

* **Concurrency C** is a closed loop: C requests in flight, a new one issued the moment one
  finishes. The batched path is driven exactly so, through `submit()` -- what the worker's
  engine stage does. The official API serves one request at a time, so its behaviour at
  concurrency C is a FIFO queue in front of one server: its service times are measured once,
  request by request, and each level's latencies and throughput are that queue replayed over
  them (exact for a single server whose service time does not depend on the queue).
* **Generation length.** Random weights never choose a stop token, so every request would run
  to CosyVoice's cap of 20 speech tokens per text token. Each text is instead pinned, on both
  paths, to what a real model says it in: 25 speech tokens a second at a reading pace of 2.7
  words a second.
* Default models: the tiny and the mid-size CosyVoice 3 test models (made if missing). On a
  GPU: `--model DIR --fp16` (a `--size full` test model, or real weights).

Writes bench/results/cosyvoice_batching.json and cosyvoice_batching.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import percentile
from consumer.engine import AudioBuffer, SynthesisTask, TaskOutcome
from consumer.engines.cosyvoice import CosyVoiceEngine
from consumer.engines.cosyvoice_batched.engine import BatchedCosyVoiceEngine, BatchingOptions
from consumer.engines.cosyvoice_model import CosyVoiceOptions
from tests.support.cosyvoice_models import prompt_voice

RESULTS = Path(__file__).resolve().parent / "results"
TOKENS_PER_SECOND = 25
WORDS_PER_SECOND = 2.7
TEXTS = (
    "Good morning.",
    "Your order has shipped and will arrive on Thursday.",
    "Thank you for calling; all of our agents are busy right now, please stay on the line.",
    "The meeting moved to three o'clock.",
    "Turn left in two hundred metres, then keep right at the fork and follow the signs to the airport.",
    "Welcome back!",
    "Press one for sales, two for support, or stay on the line to speak to an operator.",
    "The weather today is sunny with a light breeze from the west and a high of twenty-two degrees.",
    "Your verification code is four, seven, two, nine.",
    "Please remember to take all of your belongings with you when you leave the train.",
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "Battery low.",
    "We could not process your payment; please check the card details and try again in a few minutes.",
    "Chapter one: the house on the hill had been empty for as long as anyone in the village could remember.",
    "Doors closing.",
    "Congratulations, you have completed the course and your certificate is on its way by email.",
)


def target_tokens(text: str) -> int:
    """Speech tokens a real model would give `text`: its words read at WORDS_PER_SECOND."""
    return max(8, round(TOKENS_PER_SECOND * len(text.split()) / WORDS_PER_SECOND))


# ------------------------------------------------------------------------ length forcing --


class LengthForcing:
    """Pins every text piece to `target_tokens` on both paths, through CosyVoice's own bounds
    (min_len = max_len = the target): the official `llm.inference` and the batched decoder's
    `sequence` are wrapped to pass the bound that gives that length."""

    def __init__(self, official: CosyVoiceEngine, batched: BatchedCosyVoiceEngine) -> None:
        self._targets: dict[tuple[int, ...], int] = {}
        self._frontend = official.model.frontend
        llm = official.model.model.llm
        inference = llm.inference
        llm.inference = lambda text, text_len, *args, **kwargs: inference(
            text, text_len, *args, **{**kwargs, **self._bounds(text, int(text_len))}
        )
        decoder = batched.decoder
        assert decoder is not None
        sequence = decoder.sequence
        decoder.sequence = lambda model_input, sampling, **_: sequence(  # type: ignore[method-assign]
            model_input, sampling, **self._bounds(model_input["text"], int(model_input["text"].shape[1]))
        )

    def learn(self, texts: Sequence[str]) -> None:
        frontend = self._frontend
        for text in texts:
            for piece in frontend.text_normalize(text, split=True):
                ids = frontend.tokenizer.encode(piece, allowed_special=frontend.allowed_special)
                self._targets[tuple(ids)] = target_tokens(piece)

    def _bounds(self, text: Any, text_len: int) -> dict[str, float]:
        target = self._targets[tuple(int(i) for i in text.reshape(-1).tolist())]
        ratio = (target + 0.5) / text_len  # int(text_len * ratio) == target
        return {"max_token_text_ratio": ratio, "min_token_text_ratio": ratio}


# ------------------------------------------------------------------------------ driving --


@dataclass(frozen=True, slots=True)
class Served:
    issued: float
    done: float
    audio_s: float

    @property
    def latency(self) -> float:
        return self.done - self.issued


def requests(count: int, prefix: str) -> list[SynthesisTask]:
    voices = [prompt_voice(f"This is the voice of speaker number {n}.", seed=n) for n in range(3)]
    return [
        SynthesisTask(key=f"{prefix}-{i}", text=TEXTS[i % len(TEXTS)], prompt=voices[i % len(voices)])
        for i in range(count)
    ]


def audio_seconds(outcome: TaskOutcome) -> float:
    assert isinstance(outcome, AudioBuffer), outcome
    return outcome.duration_seconds


def official_service_times(
    engine: CosyVoiceEngine, tasks: Sequence[SynthesisTask]
) -> list[tuple[float, float]]:
    """(seconds, audio seconds) of each request, served one at a time."""
    served = []
    for task in tasks:
        started = time.perf_counter()
        (outcome,) = engine.synthesize([task])
        served.append((time.perf_counter() - started, audio_seconds(outcome)))
    return served


def fifo_closed_loop(service: Sequence[tuple[float, float]], concurrency: int) -> list[Served]:
    """One server, `concurrency` clients that each issue a request when their last one is done."""
    issued = [0.0] * min(concurrency, len(service))
    served: list[Served] = []
    clock = 0.0
    for index, (seconds, audio_s) in enumerate(service):
        clock = max(clock, issued[index]) + seconds
        served.append(Served(issued[index], clock, audio_s))
        if len(issued) < len(service):
            issued.append(clock)
    return served


def batched_closed_loop(
    engine: BatchedCosyVoiceEngine, tasks: Sequence[SynthesisTask], concurrency: int
) -> list[Served]:
    done: queue.SimpleQueue[tuple[int, Future[TaskOutcome]]] = queue.SimpleQueue()
    issued: dict[int, float] = {}
    served: list[Served] = []
    start = time.perf_counter()

    def issue(index: int) -> None:
        issued[index] = time.perf_counter() - start
        (future,) = engine.submit([tasks[index]])
        future.add_done_callback(lambda f, i=index: done.put((i, f)))

    following = iter(range(len(tasks)))
    for index in [next(following) for _ in range(min(concurrency, len(tasks)))]:
        issue(index)
    while len(served) < len(tasks):
        index, future = done.get(timeout=600)
        finished = time.perf_counter() - start
        served.append(Served(issued[index], finished, audio_seconds(future.result())))
        nxt = next(following, None)
        if nxt is not None:
            issue(nxt)
    return served


def figures(served: Sequence[Served]) -> dict[str, float]:
    makespan = max(s.done for s in served) - min(s.issued for s in served)
    latencies = [s.latency for s in served]
    rtf = [s.latency / s.audio_s for s in served]
    return {
        "requests": len(served),
        "requests_per_s": round(len(served) / makespan, 3),
        "audio_s_per_wall_s": round(sum(s.audio_s for s in served) / makespan, 3),
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p99_s": round(percentile(latencies, 99), 3),
        "rtf_p50": round(statistics.median(rtf), 3),
        "rtf_p99": round(percentile(rtf, 99), 3),
    }


# ---------------------------------------------------------------------------- one model --


def measure(model_dir: Path, levels: Sequence[int], min_requests: int, fp16: bool) -> dict[str, Any]:
    import torch

    options = CosyVoiceOptions(fp16=fp16)
    official = CosyVoiceEngine(model_dir, options=options)
    batched = BatchedCosyVoiceEngine(
        model_dir, options=options, batching=BatchingOptions(max_sequences=max(levels))
    )
    for engine in (official, batched):
        engine.load()
        engine.warm_up()
    forcing = LengthForcing(official, batched)
    forcing.learn(TEXTS)
    counts = {c: max(min_requests, 2 * c) for c in levels}
    warm = requests(3, "warm")  # registers the voices with both speaker caches
    official.synthesize(warm)
    batched.synthesize(warm)
    cuda = torch.cuda.is_available()

    def peak_memory(run: Callable[[], Any]) -> tuple[Any, float | None]:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        result = run()
        return result, (round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None)

    service, official_gib = peak_memory(
        lambda: official_service_times(official, requests(max(counts.values()), "seq"))
    )
    levels_report = []
    for concurrency in levels:
        scheduler = batched.scheduler
        assert scheduler is not None
        before = (scheduler.stats.steps, scheduler.stats.admitted)
        tasks = requests(counts[concurrency], f"c{concurrency}")
        served, batched_gib = peak_memory(lambda c=concurrency, t=tasks: batched_closed_loop(batched, t, c))
        steps = scheduler.stats.steps - before[0]
        seq = figures(fifo_closed_loop(service[: counts[concurrency]], concurrency))
        bat = figures(served)
        tokens = sum(target_tokens(t.text) for t in tasks)
        levels_report.append(
            {
                "concurrency": concurrency,
                "official": seq,
                "batched": bat,
                "batched_mean_decode_batch": round(tokens / max(1, steps), 2),
                "throughput_ratio": round(bat["requests_per_s"] / seq["requests_per_s"], 2),
                "latency_p50_ratio": round(bat["latency_p50_s"] / seq["latency_p50_s"], 2),
                "rtf_p50_ratio": round(bat["rtf_p50"] / seq["rtf_p50"], 2),
                "gpu_peak_gib": {"official": official_gib, "batched": batched_gib},
            }
        )
        print(json.dumps(levels_report[-1]), flush=True)
    official.close()
    batched.close()
    base = levels_report[0]["batched"]["requests_per_s"]
    for level in levels_report:
        level["batched_vs_batched_at_1"] = round(level["batched"]["requests_per_s"] / base, 2)
    return {
        "model": model_dir.name,
        "fp16": fp16,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "levels": levels_report,
    }


def plot(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    fig, axes = plt.subplots(len(runs), 2, figsize=(11, 4 * len(runs)), squeeze=False)
    for row, run in zip(axes, runs, strict=True):
        c = [level["concurrency"] for level in run["levels"]]
        for path, color in (("official", "#9aa5b1"), ("batched", "#3b7dd8")):
            rps = [level[path]["requests_per_s"] for level in run["levels"]]
            row[0].plot(c, rps, marker="o", color=color, label=path)
            for p, style in (("latency_p50_s", "-"), ("latency_p99_s", ":")):
                row[1].plot(
                    c,
                    [level[path][p] for level in run["levels"]],
                    style,
                    marker="o",
                    color=color,
                    label=f"{path} {p.split('_')[1]}",
                )
        for ax, title, unit in ((row[0], "throughput", "requests / s"), (row[1], "latency", "seconds")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(c, [str(x) for x in c])
            ax.set_xlabel("concurrency (requests in flight)")
            ax.set_ylabel(unit)
            ax.set_title(f"{run['model']} ({run['device']}): {title}")
            ax.legend()
        row[1].set_yscale("log")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, action="append", help="model directory (repeatable)")
    parser.add_argument("--levels", default="1,4,16,64", help="concurrency levels")
    parser.add_argument(
        "--min-requests", type=int, default=8, help="requests per level: max(this, 2 x level)"
    )
    parser.add_argument("--fp16", action="store_true", help="half precision (CUDA only)")
    parser.add_argument("--smoke", action="store_true", help="tiny model, levels 1 and 4, four requests")
    parser.add_argument("--out", type=Path, default=RESULTS / "cosyvoice_batching.json")
    args = parser.parse_args()
    levels = [int(c) for c in args.levels.split(",")]
    models = args.model
    if args.smoke:
        levels, args.min_requests = [1, 4], 4
        args.out = RESULTS / "smoke" / "cosyvoice_batching.json"
    if not models:
        from tests.support.cosyvoice_models import made_model

        models = [made_model("cosyvoice3", "tiny")] + (
            [] if args.smoke else [made_model("cosyvoice3", "mid")]
        )
    os.environ.setdefault("TQDM_DISABLE", "1")
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "tokens_per_second": TOKENS_PER_SECOND,
        "words_per_second": WORDS_PER_SECOND,
        "runs": [measure(path, levels, args.min_requests, args.fp16) for path in models],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")
    if args.smoke:  # bookkeeping only: every request answered, on both paths, at each level
        assert all(
            level["batched"]["requests"] == level["official"]["requests"]
            for run in report["runs"]
            for level in run["levels"]
        )


if __name__ == "__main__":
    main()
