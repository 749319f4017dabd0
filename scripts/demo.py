"""`make demo`: the main job, end to end, on the local stack.

Starts a worker on the espeak engine, submits sample requests through the client library
(English, Chinese, a duplicate, an expired one, and ones only the worker can refuse), prints a
table of the results, downloads the audio into ./demo-output/ and stops the worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import boto3
from botocore.config import Config

from producer import (
    InvalidRequest,
    ResultSubscriber,
    ResultTimeout,
    SynthesisResult,
    TtsProducer,
    build_request,
)

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "demo-output"
PORT = int(os.environ.get("TTS_DEMO_HTTP_PORT", "8090"))
BOOTSTRAP = os.environ.get("TTS_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


def start_worker(log_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TTS_ENGINE": "espeak",
        "TTS_GROUP_ID": "tts-demo-workers",
        "TTS_INSTANCE_ID": "demo-worker-1",
        "TTS_HTTP_PORT": str(PORT),
        "TTS_S3_ENDPOINT_URL": os.environ.get("TTS_S3_ENDPOINT_URL", "http://127.0.0.1:7070"),
        "TTS_S3_ACCESS_KEY_ID": os.environ.get("TTS_S3_ACCESS_KEY_ID", "ttsstream-local"),
        "TTS_S3_SECRET_ACCESS_KEY": os.environ.get("TTS_S3_SECRET_ACCESS_KEY", "ttsstream-local-secret"),
    }
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tts_stream", "--log-format", "json", "worker"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the worker exited during start-up; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/readyz", timeout=2) as response:
                if response.status == 200:
                    return proc
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    proc.kill()
    sys.exit(f"the worker did not become ready in 120 s; see {log_path}")


def submit_samples(tts: TtsProducer) -> dict[str, str]:
    """request id -> what the sample shows."""
    samples: dict[str, str] = {}
    greeting = "Hello from tts-stream. This sentence was synthesised by a Kafka worker."
    samples[tts.submit(greeting, voice="preset:en-us", attributes={"tenant": "demo"})] = "English"
    samples[
        tts.submit("你好，欢迎使用语音合成服务。今天天气很好。", voice="preset:cmn", language="zh-CN")
    ] = "Chinese"
    samples[tts.submit(greeting, voice="preset:en-us")] = "duplicate of English"
    samples[
        tts.submit(
            "A podcast intro at broadcast loudness.",
            voice="preset:en-gb",
            loudness_lufs=-23,
            output_format="OGG_OPUS",
        )
    ] = "Opus, -23 LUFS"
    late = build_request("This request waited too long in the queue.", "preset:en-us", ttl_s=60)
    expired = replace(late, deadline_ms=late.created_at_ms - 1_000)  # as if queued past its deadline
    samples[tts.submit_request(expired)] = "expired"
    samples[tts.submit("Bonjour", voice="preset:en-us", language="tlh")] = "language the engine lacks"
    samples[tts.submit("Clone me", voice="registered:narrator")] = "cloning on espeak"
    try:
        tts.submit("Far too fast", voice="preset:en-us", speed=5.0)
    except InvalidRequest as exc:
        print(f"client-side validation refused a request before producing it: {exc}\n")
    tts.flush()
    return samples


def print_table(samples: dict[str, str], results: dict[str, SynthesisResult]) -> None:
    print(f"{'sample':<28} {'status':<10} {'cache':<6} {'seconds':>7}  object or error")
    print("-" * 140)
    for request_id, label in samples.items():
        result = results.get(request_id)
        if result is None:
            print(f"{label:<28} {'(none)':<10}")
            continue
        hit = ("hit" if result.cache_hit else "miss") if result.audio is not None else "-"
        if result.audio is not None:
            detail = result.audio.uri
            seconds = f"{result.audio.duration_seconds:.2f}"
        else:
            assert result.error is not None
            detail = f"{result.error.code.value}: {result.error.message}"[:90]
            seconds = "-"
        print(f"{label:<28} {result.status.value:<10} {hit:<6} {seconds:>7}  {detail}")


def download(results: dict[str, SynthesisResult], samples: dict[str, str]) -> list[Path]:
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ.get("TTS_S3_ENDPOINT_URL", "http://127.0.0.1:7070"),
        aws_access_key_id=os.environ.get("TTS_S3_ACCESS_KEY_ID", "ttsstream-local"),
        aws_secret_access_key=os.environ.get("TTS_S3_SECRET_ACCESS_KEY", "ttsstream-local-secret"),
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    OUTPUT.mkdir(exist_ok=True)
    saved = []
    for request_id, result in results.items():
        if result.audio is None:
            continue
        bucket, _, key = result.audio.uri.removeprefix("s3://").partition("/")
        name = samples[request_id].split(",")[0].replace(" ", "-").lower()
        path = OUTPUT / f"{name}-{request_id[:8]}.{key.rsplit('.', 1)[-1]}"
        path.write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        saved.append(path)
    return saved


def main() -> int:
    log_path = ROOT / ".infra" / "demo-worker.log"
    log_path.parent.mkdir(exist_ok=True)
    print(f"starting a worker on the espeak engine (log: {log_path.relative_to(ROOT)})")
    worker = start_worker(log_path)
    try:
        with (
            ResultSubscriber(bootstrap_servers=BOOTSTRAP) as results,
            TtsProducer(bootstrap_servers=BOOTSTRAP) as tts,
        ):
            samples = submit_samples(tts)
            print(f"submitted {len(samples)} requests; waiting for their results...\n")
            try:
                answered = results.wait_for(samples, timeout_s=120)
            except ResultTimeout as exc:
                answered = dict(exc.results)
                print(f"timed out waiting for {len(exc.missing)} results")
        print_table(samples, answered)
        saved = download(answered, samples)
        print(f"\nsaved {len(saved)} audio files into {OUTPUT.relative_to(ROOT)}/:")
        for path in saved:
            print(f"  {path.relative_to(ROOT)}  ({path.stat().st_size} bytes)")
        return 0 if len(answered) == len(samples) else 1
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
        print(f"\nworker stopped (exit code {code})")


if __name__ == "__main__":
    sys.exit(main())
