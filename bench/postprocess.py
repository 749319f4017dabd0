"""Cost of the audio post-processing chain per second of audio, on the CPU, per format.

    .venv/bin/python -m bench.postprocess [--items 8] [--repeats 5] [--threads 1]

Input is real speech from eSpeak NG (22.05 kHz, ~5 s per item), finished in one batch the way
the worker does it. Reports milliseconds of wall time per second of audio for the signal chain
alone (resample + loudness + limiter, `dsp`) and for the whole `finish` call (chain + encoding),
the fastest of the repeats after one warm-up. Writes bench/results/postprocess.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from consumer.audio import dsp
from consumer.audio.encode import encode
from consumer.audio.finisher import TorchAudioFinisher
from consumer.engine import AudioBuffer
from consumer.ports import FinishSpec
from schemas.model import AudioFormat
from tests.support.speech import speeches

RESULTS = Path(__file__).parent / "results" / "postprocess.json"
TEXTS = (
    "The quick brown fox jumps over the lazy dog, and then it runs far away into the forest.",
    "Numbers like 1234 and dates like the fifth of March are read out loud by the engine.",
    "Please hold the line; your call is important to us and will be answered shortly.",
    "Tomorrow will be cloudy in the morning, with sunny spells and a light breeze later on.",
)
CASES = (
    ("WAV", AudioFormat.WAV, None),
    ("WAV", AudioFormat.WAV, 48_000),
    ("FLAC", AudioFormat.FLAC, 24_000),
    ("OGG_OPUS", AudioFormat.OGG_OPUS, 48_000),
    ("OGG_OPUS", AudioFormat.OGG_OPUS, 24_000),
    ("MP3", AudioFormat.MP3, 24_000),
    ("MP3", AudioFormat.MP3, 44_100),
)


def timed(run: object, repeats: int) -> float:
    """The fastest of the repeats: on a shared machine the others measure the neighbours."""
    assert callable(run)
    run()  # warm-up: kernels, resampling filters, encoder libraries
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return min(samples)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=8, help="items per batch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    voices = speeches([(TEXTS[i % len(TEXTS)], "en-us") for i in range(args.items)])
    audio_s = sum(v.duration_seconds for v in voices)
    finisher = TorchAudioFinisher(device="cpu")
    limiter = dsp.LimiterSettings(ceiling_dbtp=-1.1)
    cpu = torch.device("cpu")

    def chain(target_hz: int) -> list[np.ndarray]:
        batch = dsp.to_batch([v.samples for v in voices], cpu)
        batch, lengths = dsp.resample(batch, [len(v.samples) for v in voices], 22_050, target_hz)
        batch, _ = dsp.normalise(batch, lengths, target_hz, [-16.0] * len(voices), limiter)
        return dsp.from_batch(batch, lengths)

    def encode_all(outputs: list[np.ndarray], fmt: AudioFormat, rate: int) -> None:
        for samples in outputs:
            encode(samples, rate, fmt)

    def finish(fmt: AudioFormat, rate: int | None) -> None:
        finisher.finish([(v, FinishSpec(fmt, rate, -16.0)) for v in voices])

    rows = []
    for label, fmt, rate in CASES:
        target = TorchAudioFinisher.output_rate(
            AudioBuffer(voices[0].samples, 22_050), FinishSpec(fmt, rate, -16.0)
        )
        dsp_s = timed(lambda target=target: chain(target), args.repeats)
        outputs = chain(target)
        encode_s = timed(
            lambda outputs=outputs, fmt=fmt, target=target: encode_all(outputs, fmt, target), args.repeats
        )
        total_s = timed(lambda fmt=fmt, rate=rate: finish(fmt, rate), args.repeats)
        size = sum(len(r.data) for r in finisher.finish([(v, FinishSpec(fmt, rate, -16.0)) for v in voices]))
        rows.append(
            {
                "format": label,
                "sample_rate_hz": target,
                "chain_ms_per_audio_s": round(1000 * dsp_s / audio_s, 2),
                "encode_ms_per_audio_s": round(1000 * encode_s / audio_s, 2),
                "total_ms_per_audio_s": round(1000 * total_s / audio_s, 2),
                "realtime_factor": round(total_s / audio_s, 4),
                "kbit_per_s": round(size * 8 / audio_s / 1000, 1),
            }
        )
        print(
            f"{label:9} {target:6} Hz  chain {rows[-1]['chain_ms_per_audio_s']:6.2f}  "
            f"encode {rows[-1]['encode_ms_per_audio_s']:6.2f}  total {rows[-1]['total_ms_per_audio_s']:6.2f} "
            f"ms per audio second  ({rows[-1]['kbit_per_s']} kbit/s)"
        )
    result = {
        "benchmark": "postprocess",
        "input": {
            "engine": "espeak",
            "rate_hz": 22_050,
            "items": args.items,
            "audio_seconds": round(audio_s, 2),
        },
        "loudness_lufs": -16.0,
        "true_peak_dbtp": -1.0,
        "torch_threads": args.threads,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "note": "wall time on a shared machine; fastest of the repeats after one warm-up",
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
