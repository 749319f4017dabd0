"""The operator commands as an operator runs them, against a real espeak worker process:
a real dead letter is listed and shown, a crash-looped request is replayed exactly once and
answered, its result is found by id, its cache entry purged, and the lag is read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer

from schemas import dlq
from schemas.codec import request_codec
from tests.support.kafka_io import Lanes, ResultReader, request, send_raw
from tests.support.stack import ROOT, StackAddresses
from tests.support.worker import WorkerProcess


def run_cli(env: dict[str, str], *args: str, timeout_s: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tts_stream", "--log-format", "text", "--log-level", "WARNING", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(check: Callable[[], Any], timeout_s: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def crash_looped(kafka_config: dict[str, Any], lanes: Lanes, value: bytes) -> None:
    """A dead letter exactly as the worker writes one for a request that crashed it three times."""
    headers = [
        (dlq.SOURCE_TOPIC, lanes.requests.encode()),
        (dlq.SOURCE_PARTITION, b"0"),
        (dlq.SOURCE_OFFSET, b"99"),
        (dlq.SOURCE_TIMESTAMP, str(int(time.time() * 1000)).encode()),
        (dlq.REASON, b"CRASH_LOOP"),
        (dlq.ERROR, b"in the engine during 3 worker crashes"),
        (dlq.FAILED_AT, str(int(time.time() * 1000)).encode()),
        (dlq.WORKER, b"gpu-7"),
        (dlq.ATTEMPTS, b"3"),
    ]
    producer = Producer(kafka_config)
    producer.produce(lanes.dlq, value, key=b"k", headers=headers, partition=1)
    assert producer.flush(30) == 0


def test_operator_commands_against_a_real_worker(
    stack: StackAddresses,
    kafka_config: dict[str, Any],
    make_lanes: Callable[..., Lanes],
    make_topic: Callable[..., str],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    lanes = make_lanes()
    markers = make_topic("ops-replays", 1, {"cleanup.policy": "compact"})
    env = {**stack.worker_env(), **lanes.env(), "TTS_TOPICS_DLQ_REPLAYS": markers}
    start_worker(lanes, "ops-w1", {"TTS_TOPICS_DLQ_REPLAYS": markers})
    results = ResultReader(kafka_config, lanes.results)

    # A real dead letter: bytes that are not a request.
    send_raw(kafka_config, lanes.requests, b"\x07 not avro", key=b"junk")
    listing = wait_for(
        lambda: json_of(run_cli(env, "dlq", "list", "--json"))["dead_letters"],
        what="the worker's dead letter",
    )
    (junk,) = listing
    assert (junk["reason"], junk["source_topic"], junk["replay_count"]) == ("BAD_MAGIC", lanes.requests, 0)
    assert junk["worker"] == "ops-w1"
    shown = json_of(run_cli(env, "dlq", "show", junk["id"], "--json"))
    assert shown["request"] == {
        "decodable": False,
        "decode_reason": "BAD_MAGIC",
        "decode_error": shown["request"]["decode_error"],
    }
    table = run_cli(env, "dlq", "list", "--reason", "BAD_MAGIC", "--since", "10m")
    assert junk["id"] in table.stdout and "BAD_MAGIC" in table.stdout
    assert json_of(run_cli(env, "dlq", "list", "--json", "--reason", "CRASH_LOOP"))["dead_letters"] == []

    # A crash-looped request, replayed after "the fix": answered once, however often replayed.
    req = request("The replay worked.")
    crash_looped(kafka_config, lanes, request_codec().encode(req))
    (letter,) = json_of(run_cli(env, "dlq", "list", "--json", "--reason", "CRASH_LOOP"))["dead_letters"]
    shown = json_of(run_cli(env, "dlq", "show", letter["id"], "--json"))
    assert shown["request"]["request_id"] == req.request_id and "text" not in shown["request"]
    assert (
        json_of(run_cli(env, "dlq", "show", letter["id"], "--json", "--text"))["request"]["text"] == req.text
    )

    first = run_cli(env, "dlq", "replay", letter["id"], "--yes")
    assert first.returncode == 0, first.stderr
    assert f"{letter['id']}: replayed -> {lanes.requests}" in first.stdout
    answered = results.poll_until([req.request_id], timeout_s=60)
    assert answered[req.request_id][0].succeeded

    second = run_cli(env, "dlq", "replay", letter["id"], "--yes")
    assert second.returncode == 1 and "already replayed" in second.stdout
    assert "nothing was replayed" in second.stderr
    assert len(results.poll_for(3.0)[req.request_id]) == 1

    found = wait_for(
        lambda: (
            (r := run_cli(env, "results", "get", req.request_id, "--json")).returncode == 0
            and json.loads(r.stdout)
        ),
        what="the result index entry",
    )
    assert found["status"] == "SUCCEEDED" and found["audio_uri"].startswith(f"s3://{stack.audio_bucket}/")
    assert found["found_in"] == "index" and found["total_ms"] >= found["synthesis_ms"]
    text = run_cli(env, "results", "get", req.request_id)
    assert "status: SUCCEEDED" in text.stdout and "audio_uri: s3://" in text.stdout
    missing = run_cli(env, "results", "get", "no-such-request")
    assert missing.returncode == 1 and "no result for no-such-request" in missing.stderr

    # The replayed junk dead-letters again, and the new dead letter says it was a replay.
    replay_junk = run_cli(env, "dlq", "replay", junk["id"], "--yes")
    assert replay_junk.returncode == 0, replay_junk.stderr
    again = wait_for(
        lambda: [
            d
            for d in json_of(run_cli(env, "dlq", "list", "--json"))["dead_letters"]
            if d["replay_count"] == 1
        ],
        what="the replayed junk to be dead-lettered again",
    )
    assert again[0]["reason"] == "BAD_MAGIC" and again[0]["replayed_at_ms"] is not None

    # Cache: the replayed request's entry is there, and a purge by its key removes it.
    stats = json_of(run_cli(env, "cache", "stats", "--json"))
    assert stats["entries"] >= 1 and stats["misses"] >= 1
    cache_key = answered[req.request_id][0].cache_key
    assert cache_key
    purged = json_of(run_cli(env, "cache", "purge", "--cache-key", cache_key, "--yes", "--json"))
    assert purged["deleted"] == 1

    # Lag: everything answered, one member, and KEDA's answer for the chart defaults.
    lag = json_of(run_cli(env, "lag", "--window", "1s", "--json"))
    assert lag["group"] == lanes.group and lag["members"] == 1
    assert [lane["lag"] for lane in lag["lanes"]] == [0, 0]
    assert lag["keda_desired_replicas"] == 1  # chart default minReplicas
    human = run_cli(env, "lag", "--window", "0")
    assert "KEDA would ask for 1 replica(s)" in human.stdout
    results.close()
