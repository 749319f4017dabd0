"""CPU cost of one request on the real CosyVoice engine: `python -m bench.cosyvoice_cpu`.

Loads a model through the engine (by default the tiny test models of both families, made if
missing), then times short zero-shot requests one at a time with a registered voice: process
CPU seconds and wall seconds per request, audio seconds, and the real-time factor. Writes
bench/results/cosyvoice_cpu.json. A measurement, never a pass/fail: on a shared machine the
figures move; compare families and sizes within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from consumer.engine import AudioBuffer, PromptAudio, SynthesisTask
from consumer.engines.cosyvoice import CosyVoiceEngine

RESULTS = Path(__file__).resolve().parent / "results"
TEXTS = ("Good morning.", "Thank you for waiting.", "Your order has shipped.", "Hello there.")


def _voice() -> PromptAudio:
    rate = 24_000
    t = np.arange(3 * rate) / rate
    samples = (0.1 * np.sin(2 * np.pi * 140 * t)).astype(np.float32)
    return PromptAudio("e" * 64, "Hello, this is my voice.", AudioBuffer(samples, rate))


def measure(model_dir: Path, requests: int) -> dict[str, Any]:
    engine = CosyVoiceEngine(model_dir)
    started = time.perf_counter()
    engine.load()
    engine.warm_up()
    load_s = time.perf_counter() - started
    voice = _voice()
    engine.synthesize([SynthesisTask(key="register", text="Hi.", prompt=voice)])  # voice cached
    cpu, wall, audio = [], [], []
    for index in range(requests):
        task = SynthesisTask(key=str(index), text=TEXTS[index % len(TEXTS)], prompt=voice)
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        (outcome,) = engine.synthesize([task])
        cpu.append(time.process_time() - cpu_start)
        wall.append(time.perf_counter() - wall_start)
        assert isinstance(outcome, AudioBuffer), outcome
        audio.append(outcome.duration_seconds)
    engine.close()
    return {
        "model_dir": model_dir.name,
        "family": engine.family,
        "load_and_warm_up_s": round(load_s, 2),
        "requests": requests,
        "cpu_s_per_request_median": round(statistics.median(cpu), 3),
        "wall_s_per_request_median": round(statistics.median(wall), 3),
        "audio_s_per_request_median": round(statistics.median(audio), 2),
        "rtf_wall_median": round(statistics.median(w / a for w, a in zip(wall, audio, strict=True)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, action="append", help="model directory (repeatable)")
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--out", type=Path, default=RESULTS / "cosyvoice_cpu.json")
    args = parser.parse_args()
    models = args.model
    if not models:
        from tests.support.cosyvoice_models import tiny_model

        models = [tiny_model("cosyvoice3"), tiny_model("cosyvoice2")]
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "runs": [measure(path, args.requests) for path in models],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
