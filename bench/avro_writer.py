"""Is the schema-compiled Avro writer (`schemas/fastwrite.py`) worth keeping?
`python -m bench.avro_writer`.

In one run, interleaved, on the same request datums: the codec's encode with the compiled
writer, and the same encode through fastavro's strict `schemaless_writer` (what the codec falls
back to). Reports the median microseconds per encode of each over repeated rounds and their
ratio, and checks the bytes are identical. Writes bench/results/avro_writer.json.
"""

from __future__ import annotations

import io
import json
import statistics
import time
from pathlib import Path

import fastavro

from schemas.codec import SINGLE_OBJECT_MAGIC, request_codec
from schemas.model import PresetVoice, RegisteredVoice, SynthesisRequest, now_ms

RESULTS = Path(__file__).resolve().parent / "results"
ROUNDS, PER_ROUND = 15, 4000


def datums() -> list[dict[str, object]]:
    codec = request_codec()
    requests = [
        SynthesisRequest(
            request_id=f"req-{i}",
            created_at_ms=now_ms(),
            text="Your order has shipped and will arrive on Thursday. " * (1 + i % 3),
            voice=PresetVoice("en-us") if i % 2 else RegisteredVoice("narrator"),
            attributes={"tenant": "acme", "order": str(i)},
        )
        for i in range(64)
    ]
    return [codec._to_avro(r) for r in requests]


def main() -> None:
    codec = request_codec()
    schema = codec.family.latest.parsed
    header = SINGLE_OBJECT_MAGIC + codec.family.latest.fingerprint
    data = datums()

    def fastavro_encode(datum: object) -> bytes:
        buf = io.BytesIO()
        buf.write(header)
        fastavro.schemaless_writer(buf, schema, datum, strict=True)
        return buf.getvalue()

    for datum in data:
        assert codec.encode_datum(datum) == fastavro_encode(datum), "the two writers disagree"
    timings: dict[str, list[float]] = {"compiled": [], "fastavro": []}
    for _ in range(ROUNDS):
        for name, encode in (("compiled", codec.encode_datum), ("fastavro", fastavro_encode)):
            started = time.perf_counter()
            for i in range(PER_ROUND):
                encode(data[i % len(data)])
            timings[name].append((time.perf_counter() - started) / PER_ROUND * 1e6)
    report = {
        "us_per_encode_median": {k: round(statistics.median(v), 2) for k, v in timings.items()},
        "us_per_encode_range": {k: [round(min(v), 2), round(max(v), 2)] for k, v in timings.items()},
        "fastavro_over_compiled": round(
            statistics.median(timings["fastavro"]) / statistics.median(timings["compiled"]), 2
        ),
        "rounds": ROUNDS,
        "encodes_per_round": PER_ROUND,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "avro_writer.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
