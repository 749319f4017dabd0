"""The HTTP gateway as clients use it: `tts-stream gateway` processes in front of a real espeak
worker on real Kafka, Redis and S3, called with httpx and with the official `openai` client.

One worker and two gateway replicas serve the whole module (starting them is most of its cost);
every test uses its own texts so no test depends on another's cache entries.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf

from schemas.codec import request_codec
from tests.support.gateway import GatewayProcess, Keys, write_keys
from tests.support.kafka_io import Lanes, create_lanes, delete_lanes, subscriber
from tests.support.stack import StackAddresses
from tests.support.voices import TRANSCRIPT, prompt_file
from tests.support.worker import WorkerProcess

PROMPT_LIMIT_BYTES = 400_000
BODY_LIMIT_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway")


@pytest.fixture(scope="module")
def gw_lanes(kafka_config: dict[str, Any]) -> Iterator[Lanes]:
    lanes = create_lanes(kafka_config, partitions=3)
    yield lanes
    delete_lanes(kafka_config, lanes)


@pytest.fixture(scope="module")
def keys(module_dir: Path) -> Keys:
    return write_keys(
        module_dir,
        {
            "alice": "rate=1000 burst=1000 scopes=tts,voices",
            "bob": "rate=1000 burst=1000",
            "slow": "rate=0.5 burst=2",
        },
    )


@pytest.fixture(scope="module")
def worker(
    stack: StackAddresses, gw_lanes: Lanes, module_dir: Path, redis_client: Any
) -> Iterator[WorkerProcess]:
    process = WorkerProcess(
        stack,
        {
            **gw_lanes.env(),
            "TTS_ENGINE": "espeak",
            "TTS_ESPEAK_PROCESSES": "1",
            "TTS_SCHEMA_REGISTRY_URL": "",
        },
        module_dir,
        instance_id=f"gw-worker-{uuid.uuid4().hex[:6]}",
    )
    process.start()
    process.wait_ready()
    yield process
    process.stop(30)


def _gateway(
    stack: StackAddresses, lanes: Lanes, keys: Keys, directory: Path, name: str, **env: str
) -> GatewayProcess:
    return GatewayProcess(
        stack,
        lanes,
        keys,
        directory,
        name,
        {
            "TTS_GATEWAY_OPENAI_VOICES": "alloy=preset:en-us,echo=preset:en-gb",
            "TTS_GATEWAY_MAX_BODY_BYTES": str(BODY_LIMIT_BYTES),
            "TTS_MAX_PROMPT_AUDIO_BYTES": str(PROMPT_LIMIT_BYTES),
            **env,
        },
    )


@pytest.fixture(scope="module")
def replicas(
    stack: StackAddresses, gw_lanes: Lanes, keys: Keys, module_dir: Path, worker: WorkerProcess
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    pair = (
        _gateway(stack, gw_lanes, keys, module_dir, "a").start(),
        _gateway(stack, gw_lanes, keys, module_dir, "b").start(),
    )
    try:
        for gateway in pair:
            gateway.wait_ready()
        yield pair
    finally:
        for gateway in pair:
            gateway.stop()


@pytest.fixture(scope="module")
def gateway(replicas: tuple[GatewayProcess, GatewayProcess]) -> GatewayProcess:
    return replicas[0]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def unique(text: str) -> str:
    return f"{text} Run {uuid.uuid4().hex[:8]}."


def decoded(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    return samples, rate


def until(call: Any, done: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        answer = call()
        if done(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


# ------------------------------------------------------------------------------ OpenAI client


def test_the_openai_client_gets_real_speech(gateway: GatewayProcess, keys: Keys) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=keys["alice"], max_retries=0)
    wav = client.audio.speech.create(
        model="tts-1", voice="alloy", input=unique("Hello from the OpenAI client."), response_format="wav"
    )
    samples, rate = decoded(wav.content)
    assert rate == 22_050
    assert len(samples) / rate > 1.0
    assert float(np.sqrt(np.mean(np.square(samples)))) > 0.01  # speech, not silence

    mp3 = client.audio.speech.create(model="tts-1", voice="echo", input=unique("An MP3 this time."))
    assert mp3.response.headers["content-type"] == "audio/mpeg"
    assert len(decoded(mp3.content)[0]) > 0

    pcm = client.audio.speech.create(
        model="tts-1", voice="alloy", input=unique("Raw samples."), response_format="pcm"
    )
    assert pcm.response.headers["content-type"] == "audio/pcm"
    assert len(pcm.content) % 2 == 0 and len(pcm.content) > 24_000  # 16-bit at 24 kHz, > 0.5 s

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="tts_wrong", max_retries=0).audio.speech.create(
            model="tts-1", voice="alloy", input="Hello."
        )
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.speech.create(model="tts-1", voice="alloy", input="x" * 5001)
    assert refused.value.code == "TEXT_TOO_LONG"


# ------------------------------------------------------------------------------ /v1/tts


def test_a_synchronous_call_returns_the_result_and_its_audio(gateway: GatewayProcess, keys: Keys) -> None:
    text = unique("A synchronous request through the gateway.")
    with httpx.Client(base_url=gateway.url, headers=auth(keys["alice"]), timeout=60) as http:
        answer = http.post(
            "/v1/tts",
            json={"text": text, "voice": "preset:en-us", "format": "flac", "attributes": {"ticket": "T-1"}},
            headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "succeeded" and body["cache_hit"] is False
        assert body["attributes"] == {"ticket": "T-1"}  # the gateway's own attribute is not shown
        assert body["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
        audio = body["audio"]
        assert audio["content_type"] == "audio/flac" and audio["duration_seconds"] > 1.0
        fetched = http.get(audio["url"])
        assert fetched.status_code == 200
        assert hashlib.sha256(fetched.content).hexdigest() == audio["sha256"]

        again = http.post("/v1/tts", json={"text": text, "voice": "preset:en-us", "format": "flac"})
        assert again.json()["cache_hit"] is True
        assert again.json()["audio"]["sha256"] == audio["sha256"]

        # The same id, looked up later (from the Redis result index).
        looked_up = until(
            lambda: http.get(f"/v1/tts/{body['id']}"), lambda r: r.json()["status"] != "pending"
        )
        assert looked_up.json()["audio"]["sha256"] == audio["sha256"]

        failed = http.post("/v1/tts", json={"text": text, "voice": "preset:no-such-voice"})
        assert failed.status_code == 400
        assert failed.json()["error"]["code"] == "VOICE_NOT_FOUND"


def test_async_mode_answers_202_and_the_location_gives_the_result(
    gateway: GatewayProcess, keys: Keys
) -> None:
    with httpx.Client(base_url=gateway.url, headers=auth(keys["alice"]), timeout=30) as http:
        accepted = http.post(
            "/v1/tts",
            json={"text": unique("Fire and forget."), "voice": "preset:en-us", "format": "ogg_opus"},
            headers={"Prefer": "respond-async"},
        )
        assert accepted.status_code == 202, accepted.text
        location = accepted.headers["location"]
        assert location.endswith(f"/v1/tts/{accepted.json()['id']}")
        done = until(lambda: http.get(location), lambda r: r.json()["status"] != "pending")
        assert done.json()["status"] == "succeeded"
        assert done.json()["audio"]["content_type"].startswith("audio/ogg")
        assert http.get(done.json()["audio"]["url"]).content[:4] == b"OggS"

        # Another key cannot see it, nor can anyone see an id that was never submitted.
        other = http.get(location, headers=auth(keys["bob"]))
        assert other.status_code == 404 and other.json()["error"]["code"] == "NOT_FOUND"
        assert http.get(f"/v1/tts/{uuid.uuid4()}").status_code == 404


def test_the_http_timeout_becomes_the_request_deadline(
    gateway: GatewayProcess, gw_lanes: Lanes, keys: Keys, kafka_config: dict[str, Any]
) -> None:
    reader = subscriber(kafka_config, gw_lanes.requests, name="gw-deadlines")
    codec = request_codec()
    with httpx.Client(base_url=gateway.url, headers=auth(keys["alice"]), timeout=30) as http:
        ok = http.post(
            "/v1/tts",
            json={"text": unique("Seven seconds."), "voice": "preset:en-us"},
            headers={"Prefer": "wait=7"},
        )
        assert ok.status_code == 200, ok.text
        late = http.post(
            "/v1/tts",
            json={"text": unique("Nobody waits this little for speech."), "voice": "preset:en-us"},
            headers={"Prefer": "wait=0.001"},
        )
        assert late.status_code == 504, late.text
        assert late.json()["error"]["code"] == "TIMEOUT"
        # The worker answers it anyway (EXPIRED, or the audio if it had already started).
        outcome = until(
            lambda: http.get(f"/v1/tts/{late.json()['id']}"), lambda r: r.json()["status"] != "pending"
        )
        assert outcome.json()["status"] in ("failed", "succeeded")
        if outcome.json()["status"] == "failed":
            assert outcome.json()["error"]["code"] == "EXPIRED"
    wanted = {ok.json()["id"], late.json()["id"]}
    deadlines: dict[str, int] = {}
    until_s = time.monotonic() + 20
    while not wanted <= set(deadlines) and time.monotonic() < until_s:
        message = reader.poll(0.5)
        if message is None or message.error():
            continue
        request = codec.decode(message.value())
        if request.request_id in wanted:
            assert request.deadline_ms is not None
            deadlines[request.request_id] = request.deadline_ms - request.created_at_ms
    reader.close()
    assert deadlines[ok.json()["id"]] == 7000
    assert deadlines[late.json()["id"]] == 1  # the millisecond asked for


# ------------------------------------------------------------------------------ voices


@pytest.fixture
def cloning_gateway(
    stack: StackAddresses, kafka_config: dict[str, Any], keys: Keys, module_dir: Path
) -> Iterator[GatewayProcess]:
    """A gateway in front of a worker that accepts cloned voices (the null engine: espeak has
    presets only and refuses every registered voice as UNSUPPORTED before resolving it)."""
    lanes = create_lanes(kafka_config, partitions=1)
    worker = WorkerProcess(
        stack,
        {**lanes.env(), "TTS_ENGINE": "null", "TTS_SCHEMA_REGISTRY_URL": ""},
        module_dir,
        instance_id=f"gw-null-{uuid.uuid4().hex[:6]}",
    )
    gateway = _gateway(stack, lanes, keys, module_dir, "cloning")
    try:
        worker.start()
        gateway.start()
        worker.wait_ready()
        yield gateway.wait_ready()
    finally:
        gateway.stop()
        worker.stop(30)
        delete_lanes(kafka_config, lanes)


def test_a_voice_uploaded_over_http_is_registered_and_usable(
    cloning_gateway: GatewayProcess, keys: Keys, module_dir: Path, object_store: Any, stack: StackAddresses
) -> None:
    from consumer.voices.registry import VoiceRegistry

    name = f"gw-voice-{uuid.uuid4().hex[:8]}"
    audio = prompt_file(module_dir).read_bytes()  # eSpeak speech at 22.05 kHz: resampled on upload
    registry = VoiceRegistry(object_store, stack.voices_bucket)
    upload = {
        "data": {"name": name, "transcript": TRANSCRIPT},
        "files": {"audio": ("prompt.wav", audio, "audio/wav")},
    }
    with httpx.Client(base_url=cloning_gateway.url, timeout=60) as http:
        refused = http.post("/v1/voices", headers=auth(keys["bob"]), **upload)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"
        added = http.post("/v1/voices", headers=auth(keys["alice"]), **upload)
        assert added.status_code == 201, added.text
        voice_id = added.json()["voice_id"]
        try:
            assert registry.voice_id_of(name) == voice_id
            assert hashlib.sha256(registry.audio(voice_id)).hexdigest() == voice_id
            listed = http.get("/v1/voices", headers=auth(keys["bob"])).json()["voices"]
            assert any(v["voice_id"] == voice_id and name in v["names"] for v in listed)

            used = http.post(
                "/v1/tts",
                headers=auth(keys["alice"]),
                json={"text": unique("Cloned."), "voice": f"registered:{name}"},
            )
            assert used.status_code == 200, used.text
            assert used.json()["audio"]["duration_seconds"] > 0
            unknown = http.post(
                "/v1/tts",
                headers=auth(keys["alice"]),
                json={"text": unique("Cloned."), "voice": f"registered:{name}-missing"},
            )
            assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "VOICE_NOT_FOUND"

            silent = io.BytesIO()
            sf.write(silent, np.zeros(24_000 * 2, np.float32), 24_000, format="WAV", subtype="PCM_16")
            bad = http.post(
                "/v1/voices",
                headers=auth(keys["alice"]),
                data={"name": f"{name}-silent", "transcript": TRANSCRIPT},
                files={"audio": ("silence.wav", silent.getvalue(), "audio/wav")},
            )
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "VOICE_INVALID"
        finally:
            registry.remove(voice_id)


# ------------------------------------------------------------------------------ refusals


def test_missing_and_wrong_keys_are_refused(gateway: GatewayProcess) -> None:
    body = {"text": "Hello.", "voice": "preset:en-us"}
    missing = httpx.post(f"{gateway.url}/v1/tts", json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["code"] == "UNAUTHENTICATED"
    wrong = httpx.post(f"{gateway.url}/v1/tts", json=body, headers=auth("tts_not-a-key"))
    assert wrong.status_code == 401
    assert httpx.get(f"{gateway.url}/v1/voices", headers={"X-API-Key": "nope"}).status_code == 401
    # Neither key ever reaches the log.
    assert "tts_not-a-key" not in gateway.log_text()


def test_oversized_text_bodies_and_audio_are_refused(gateway: GatewayProcess, keys: Keys) -> None:
    with httpx.Client(base_url=gateway.url, headers=auth(keys["alice"]), timeout=30) as http:
        too_long = http.post("/v1/tts", json={"text": "word " * 1200, "voice": "preset:en-us"})
        assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "TEXT_TOO_LONG"
        huge = http.post("/v1/tts", json={"text": "x" * (BODY_LIMIT_BYTES + 1), "voice": "preset:en-us"})
        assert huge.status_code == 413 and huge.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"text": "'
            for _ in range(BODY_LIMIT_BYTES // 1024 + 1):
                yield b"y" * 1024
            yield b'", "voice": "preset:en-us"}'

        streamed = http.post("/v1/tts", content=chunks())
        assert streamed.status_code == 413
        big_audio = http.post(
            "/v1/voices",
            data={"name": "too-big", "transcript": TRANSCRIPT},
            files={"audio": ("big.wav", b"RIFF" + b"\0" * PROMPT_LIMIT_BYTES, "audio/wav")},
        )
        assert big_audio.status_code == 413 and big_audio.json()["error"]["code"] == "VOICE_INVALID"
        unknown = http.post("/v1/tts", json={"text": "Hi.", "voice": "preset:en-us", "colour": "blue"})
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "colour"


def test_a_flood_gets_429_with_retry_after(
    stack: StackAddresses, gw_lanes: Lanes, keys: Keys, module_dir: Path, gateway: GatewayProcess
) -> None:
    # The key's own rate: two at once, then one every two seconds.
    with httpx.Client(base_url=gateway.url, headers=auth(keys["slow"]), timeout=30) as http:
        codes = [
            http.post("/v1/tts", json={"text": unique("Rate."), "voice": "preset:en-us"}).status_code
            for _ in range(5)
        ]
        assert codes[:2] == [200, 200] and codes[2:] == [429, 429, 429]
        limited = http.post("/v1/tts", json={"text": "Again.", "voice": "preset:en-us"})
        assert limited.json()["error"]["code"] == "RATE_LIMITED"
        assert 1 <= int(limited.headers["retry-after"]) <= 2

    # The replica's own bound: a gateway allowed 3 waiters, flooded by 30 concurrent callers.
    small = _gateway(stack, gw_lanes, keys, module_dir, "small", TTS_GATEWAY_MAX_WAITERS="3").start()
    try:
        small.wait_ready()

        async def flood() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=small.url, headers=auth(keys["alice"]), timeout=60) as http:
                calls = [
                    http.post("/v1/tts", json={"text": unique(f"Flood {i}."), "voice": "preset:en-us"})
                    for i in range(30)
                ]
                return list(await asyncio.gather(*calls))

        answers = asyncio.run(flood())
    finally:
        small.stop()
    refused = [a for a in answers if a.status_code == 429]
    served = [a for a in answers if a.status_code == 200]
    assert len(refused) + len(served) == 30, [a.status_code for a in answers]
    assert refused and served
    assert all(a.json()["error"]["code"] == "OVERLOADED" and a.headers["retry-after"] == "1" for a in refused)
    assert all(a.json()["status"] == "succeeded" for a in served)


# ------------------------------------------------------------------------------ two replicas


def test_two_replicas_answer_concurrent_clients_with_nothing_crossed_or_lost(
    replicas: tuple[GatewayProcess, GatewayProcess], keys: Keys
) -> None:
    run = uuid.uuid4().hex[:6]
    # 24 distinct texts, each asked twice (once per replica), all at once.
    texts = [
        f"Replica check {run}, sentence number {i}, {'with a longer tail ' * (i % 4)}end." for i in range(24)
    ]

    async def ask() -> list[tuple[int, int, httpx.Response]]:
        async with (
            httpx.AsyncClient(base_url=replicas[0].url, headers=auth(keys["alice"]), timeout=90) as a,
            httpx.AsyncClient(base_url=replicas[1].url, headers=auth(keys["alice"]), timeout=90) as b,
        ):

            async def one(
                client: httpx.AsyncClient, index: int, copy: int
            ) -> tuple[int, int, httpx.Response]:
                response = await client.post(
                    "/v1/tts",
                    json={"text": texts[index], "voice": "preset:en-us", "attributes": {"n": str(index)}},
                )
                return index, copy, response

            calls = [one(a, i, 0) for i in range(len(texts))] + [one(b, i, 1) for i in range(len(texts))]
            return list(await asyncio.gather(*calls))

    answers = asyncio.run(ask())
    assert len(answers) == 48
    by_text: dict[int, list[dict[str, Any]]] = {}
    for index, _copy, response in answers:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["attributes"]["n"] == str(index)  # the worker's echo of this very request
        by_text.setdefault(index, []).append(body)
    ids = [body["id"] for bodies_ in by_text.values() for body in bodies_]
    assert len(set(ids)) == 48
    for bodies_ in by_text.values():
        # Both copies of a text got the same audio; different texts got different audio.
        assert bodies_[0]["audio"]["sha256"] == bodies_[1]["audio"]["sha256"]
    assert len({bodies_[0]["audio"]["sha256"] for bodies_ in by_text.values()}) == len(texts)

    # Any replica answers for a request another one took (the Redis result index).
    first = by_text[0][0]
    with httpx.Client(base_url=replicas[1].url, headers=auth(keys["alice"]), timeout=30) as http:
        seen = until(lambda: http.get(f"/v1/tts/{first['id']}"), lambda r: r.json()["status"] != "pending")
    assert seen.json()["audio"]["sha256"] == first["audio"]["sha256"]


def test_metrics_and_probes(gateway: GatewayProcess) -> None:
    assert httpx.get(f"{gateway.url}/livez").status_code == 200
    assert httpx.get(f"{gateway.url}/readyz").status_code == 200
    text = httpx.get(f"{gateway.url}/metrics").text
    assert 'tts_gateway_requests_total{route="/v1/tts",status="200"}' in text
    assert "tts_gateway_result_wait_seconds_bucket" in text
    assert "tts_gateway_waiters" in text
