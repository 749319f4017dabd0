"""The console in headless Chromium (Debian's, driven by Playwright) against the real stack and a
real espeak worker: log in, see the lanes, submit a test request and hear its result, replay a
dead letter through the confirmation step, and be refused a second replay."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from schemas import dlq
from schemas.codec import request_codec
from tests.support.kafka_io import Lanes, ResultReader, request
from tests.support.stack import ROOT, StackAddresses
from tests.support.worker import WorkerProcess, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "e2e-console-token-0123456789"


class ConsoleProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tts_stream",
                    "--log-format",
                    "text",
                    "console",
                    "--port",
                    str(self.port),
                ],
                cwd=ROOT,
                env={**os.environ, **env, "TTS_CONSOLE_TOKEN": TOKEN},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"console exited:\n{self.log_path.read_text()}"
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"console not ready:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def browser_page() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-chromium.sh (make test does)")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="tts-console-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        context.set_default_timeout(30_000)
        try:
            yield context.new_page()
        finally:
            context.close()


def crash_looped_dead_letter(kafka_config: dict[str, Any], lanes: Lanes, value: bytes) -> None:
    headers = [
        (dlq.SOURCE_TOPIC, lanes.requests.encode()),
        (dlq.SOURCE_PARTITION, b"0"),
        (dlq.SOURCE_OFFSET, b"5"),
        (dlq.REASON, b"CRASH_LOOP"),
        (dlq.ERROR, b"in the engine during 3 worker crashes"),
        (dlq.FAILED_AT, str(int(time.time() * 1000)).encode()),
        (dlq.WORKER, b"gpu-3"),
        (dlq.ATTEMPTS, b"3"),
    ]
    producer = Producer(kafka_config)
    producer.produce(lanes.dlq, value, key=b"k", headers=headers, partition=0)
    assert producer.flush(30) == 0


AUDIO_READY = """() => {
  const a = document.querySelector('#result-audio');
  return a !== null && a.readyState >= 1 && Number.isFinite(a.duration) && a.duration > 0;
}"""


def hear_result(page: Any) -> float:
    """Wait (the result page reloads itself until the result exists) for the audio metadata."""
    page.wait_for_selector("#result-audio", timeout=60_000)
    page.wait_for_function(AUDIO_READY, timeout=30_000)
    return float(page.evaluate("() => document.querySelector('#result-audio').duration"))


def test_console_in_a_browser(
    stack: StackAddresses,
    kafka_config: dict[str, Any],
    make_lanes: Callable[..., Lanes],
    make_topic: Callable[..., str],
    start_worker: Callable[..., WorkerProcess],
    browser_page: Any,
    tmp_path: Path,
) -> None:
    lanes = make_lanes()
    markers = make_topic("console-replays", 1, {"cleanup.policy": "compact"})
    start_worker(lanes, "console-w1", {"TTS_TOPICS_DLQ_REPLAYS": markers})
    console = ConsoleProcess(
        {**stack.worker_env(), **lanes.env(), "TTS_TOPICS_DLQ_REPLAYS": markers}, tmp_path / "console.log"
    )
    page = browser_page
    try:
        console.wait_ready()

        # Unauthenticated: the login page, and a wrong token is refused.
        page.goto(f"{console.url}/dlq")
        assert page.url.startswith(f"{console.url}/login")
        page.fill("input[name=token]", "not-the-token")
        page.click("#login")
        assert "wrong token" in page.inner_text("main")
        page.fill("input[name=token]", TOKEN)
        page.click("#login")
        page.wait_for_url(f"{console.url}/dlq")

        # Lanes and lag.
        page.goto(f"{console.url}/")
        assert page.inner_text("tr[data-lane=interactive] td:nth-child(2)") == lanes.requests
        assert page.inner_text("#keda-replicas") == "1"

        # Submit a test request from the page and hear the result.
        page.goto(f"{console.url}/submit")
        page.fill("textarea[name=text]", "Hello from the operator console.")
        page.select_option("select[name=output_format]", "wav")
        page.click("#submit-request")
        page.wait_for_url(f"{console.url}/results/*")
        request_id = page.url.rsplit("/", 1)[-1]
        duration = hear_result(page)
        assert 0.5 < duration < 10, duration
        assert page.inner_text("#status") == "SUCCEEDED"
        page.goto(f"{console.url}/results")
        assert page.locator(f"tr[data-request-id='{request_id}'] audio").count() == 1

        # Replay a dead letter: the button leads to a confirmation, the confirmation replays.
        results = ResultReader(kafka_config, lanes.results)
        req = request("Replayed from the console.")
        crash_looped_dead_letter(kafka_config, lanes, request_codec().encode(req))
        page.goto(f"{console.url}/dlq?reason=CRASH_LOOP")
        row = page.locator("tr[data-letter-id='0:0']")
        assert "CRASH_LOOP" in row.inner_text()
        row.locator("a.button").click()
        page.wait_for_url(f"{console.url}/dlq/0:0/replay")
        assert req.request_id in page.inner_text("main")
        page.click("#confirm-replay")
        assert "Replayed to" in page.inner_text("#replay-outcome")
        page.click(f"a[href='/results/{req.request_id}']")
        assert hear_result(page) > 0
        assert len(results.poll_until([req.request_id], timeout_s=30, settle_s=2.0)[req.request_id]) == 1

        # A second replay of the same dead letter is refused and answers nothing.
        page.goto(f"{console.url}/dlq/0:0/replay")
        page.click("#confirm-replay")
        assert "already replayed" in page.inner_text("#replay-outcome")
        assert len(results.poll_for(3.0)[req.request_id]) == 1
        results.close()

        # Logging out ends the session.
        page.goto(f"{console.url}/")
        page.click("#logout")
        page.goto(f"{console.url}/results")
        assert page.url.startswith(f"{console.url}/login")
    finally:
        console.stop()
    assert TOKEN not in console.log_path.read_text(), "the token must never reach the log"
