"""Baseline (b): the seed's approach — the engine behind a synchronous HTTP endpoint.

One request at a time (like the demo web page's default queue), synthesis, post-processing,
the audio written to a local outputs folder, the answer in the response. Concurrent clients
queue on the server. Run as its own process: `python -m bench.baselines.http_server --port N`.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from consumer.app import build_finisher
from consumer.engine import AudioBuffer, SynthesisTask
from consumer.engines import create_engine
from consumer.ports import FinishSpec
from consumer.settings import WorkerSettings
from schemas.model import AudioFormat


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = WorkerSettings(http_port=0)
    engine = create_engine(settings)
    engine.load()
    engine.warm_up()
    finisher = build_finisher(settings)
    outputs = Path(tempfile.mkdtemp(prefix="tts-baseline-outputs-"))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body: dict[str, Any] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            started = time.perf_counter()
            (audio,) = engine.synthesize(
                [SynthesisTask(body["id"], body["text"], preset=body.get("voice", "en-us"))]
            )
            assert isinstance(audio, AudioBuffer)
            (encoded,) = finisher.finish([(audio, FinishSpec(AudioFormat.WAV, None, -16.0))])
            path = outputs / f"{body['id']}.wav"
            path.write_bytes(encoded.data)
            reply = json.dumps(
                {
                    "path": str(path),
                    "seconds": encoded.duration_seconds,
                    "took": time.perf_counter() - started,
                }
            )
            data = reply.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    HTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
