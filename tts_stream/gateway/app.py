"""The gateway's web layer (Starlette): routes, authentication, size limits, answers.

Starlette rather than FastAPI: the project already ships it (the console), and what FastAPI
would add does not fit here. Its validation answers 422 in its own shape, where ours must carry
the contract's codes (the rules already live in `producer.requests` and `schemas.validation`,
shared with the Python client and the worker); and its per-request dependency and
serialisation layers cost CPU on the path the 2,000 requests/s target measures. The API is
small and documented in docs/gateway.md.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive

from consumer.core.tracing import child_span, parse_traceparent
from schemas.model import SynthesisResult
from schemas.validation import REQUEST_ID
from tts_stream.gateway import bodies
from tts_stream.gateway.errors import ApiError, GatewayCode, from_result, too_large, unavailable
from tts_stream.gateway.keys import ApiKey, KeyFile
from tts_stream.gateway.service import Gateway

log = logging.getLogger(__name__)
access = logging.getLogger("tts_stream.gateway.access")

Handler = Callable[[Request, "Call"], Awaitable[Response]]
# Room for the multipart framing and the form's small fields around the audio file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


class Call:
    """Per request: who called, and what the access log should say about it."""

    __slots__ = ("key", "request_id")

    def __init__(self) -> None:
        self.key: ApiKey | None = None
        self.request_id: str | None = None


def _limited(receive: Receive, limit: int) -> Receive:
    """Count the body as it arrives: a chunked upload cannot slip past the limit."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large("the request body", limit)
        return message

    return wrapped


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


class GatewayApp:
    def __init__(self, gateway: Gateway, keys: KeyFile) -> None:
        self.gateway = gateway
        self.keys = keys
        self.settings = gateway.settings

    # ------------------------------------------------------------------ plumbing

    def endpoint(
        self, route: str, handler: Handler, *, body_limit: int
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler: body limit, errors as JSON, metrics, one access-log line."""
        metrics = self.gateway.metrics

        async def run(request: Request) -> Response:
            started = time.perf_counter()
            call = Call()
            declared = request.headers.get("content-length")
            try:
                if declared is not None and declared.isdigit() and int(declared) > body_limit:
                    raise too_large("the request body", body_limit)
                limited = Request(request.scope, _limited(request.receive, body_limit))
                response = await handler(limited, call)
            except ApiError as exc:
                response = _json(exc.body(), exc.status, exc.headers)
            except Exception:
                log.exception("unexpected error", extra={"route": route, "request_id": call.request_id})
                error = ApiError(500, "INTERNAL", "unexpected error in the gateway (logged)")
                response = _json(error.body(), 500)
            elapsed = time.perf_counter() - started
            metrics.answered(route, response.status_code, elapsed)
            if self.settings.access_log:
                access.info(
                    "%s %s %d",
                    request.method,
                    route,
                    response.status_code,
                    extra={
                        "route": route,
                        "status": response.status_code,
                        "duration_ms": round(elapsed * 1000, 2),
                        "key": call.key.name if call.key else None,
                        "request_id": call.request_id,
                    },
                )
            return response

        return run

    def authenticate(self, request: Request, call: Call, scope: str) -> ApiKey:
        header = request.headers.get("authorization")
        presented = request.headers.get("x-api-key")
        if header is not None:
            kind, _, value = header.partition(" ")
            presented = value.strip() if kind.lower() == "bearer" else None
        if not presented:
            raise ApiError(
                401,
                GatewayCode.UNAUTHENTICATED.value,
                "an API key is required: Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        key = self.keys.authenticate(presented)
        if key is None:
            raise ApiError(
                401,
                GatewayCode.UNAUTHENTICATED.value,
                "invalid API key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        call.key = key
        if scope not in key.scopes:
            raise ApiError(403, GatewayCode.FORBIDDEN.value, f"this key may not use {scope} endpoints")
        return key

    def base_url(self, request: Request) -> str:
        return (self.settings.public_base_url or str(request.base_url)).rstrip("/")

    @staticmethod
    def traceparent(request: Request) -> str:
        """The caller's trace continues into the Kafka request (a new span of it, or a new trace)."""
        return child_span(parse_traceparent(request.headers.get("traceparent"))).traceparent

    async def result_body(self, request: Request, result: SynthesisResult) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": result.request_id,
            "status": "succeeded" if result.succeeded else "failed",
            "cache_hit": result.cache_hit,
            "engine": result.engine,
            "model_version": result.model_version,
            "timings": {
                "queued_ms": result.timings.queued_ms,
                "synthesis_ms": result.timings.synthesis_ms,
                "total_ms": result.timings.total_ms,
            },
            "attributes": {k: v for k, v in result.attributes.items() if not k.startswith("gateway.")},
            "traceparent": result.traceparent,
        }
        if result.audio is not None:
            url, expires = await self.gateway.audio_url(result, self.base_url(request))
            audio = result.audio
            body["audio"] = {
                "url": url,
                "url_expires_at_ms": expires,
                "content_type": audio.content_type,
                "size_bytes": audio.size_bytes,
                "duration_seconds": audio.duration_seconds,
                "sample_rate_hz": audio.sample_rate_hz,
                "sha256": audio.sha256,
            }
        if result.error is not None:
            body["error"] = {
                "code": result.error.code.value,
                "message": result.error.message,
                "retryable": result.error.retryable,
            }
        return body

    # ------------------------------------------------------------------ synthesis

    async def post_tts(self, request: Request, call: Call) -> Response:
        key = self.authenticate(request, call, "tts")
        body = bodies.parse_json(await request.body())
        is_async = bodies.respond_async(request.headers)
        wait = None
        if not is_async:
            wait = bodies.wait_seconds(
                request.headers, default_s=self.settings.default_timeout_s, max_s=self.settings.max_timeout_s
            )
        synthesis = bodies.tts_request(body, key_name=key.name, limits=self.gateway.limits, ttl_s=wait)
        call.request_id = synthesis.request_id
        traceparent = self.traceparent(request)
        with self.gateway.slot():
            await self.gateway.admit(key, synthesis, durable=is_async)
            if wait is None:
                await self.gateway.submit(synthesis, traceparent)
                location = f"{self.base_url(request)}/v1/tts/{synthesis.request_id}"
                return _json(
                    {"id": synthesis.request_id, "status": "pending", "url": location},
                    202,
                    {"Location": location, "Preference-Applied": "respond-async"},
                )
            result = await self.gateway.call(synthesis, traceparent, wait)
        if result.error is not None:
            raise from_result(result.error, result.request_id)
        return _json(await self.result_body(request, result))

    async def lookup(self, request: Request, call: Call) -> tuple[str, SynthesisResult | None]:
        key = self.authenticate(request, call, "tts")
        request_id = request.path_params["request_id"]
        if not REQUEST_ID.fullmatch(request_id):
            raise ApiError(404, GatewayCode.NOT_FOUND.value, "no such request")
        call.request_id = request_id
        found = await self.gateway.lookup(key, request_id)
        if found is None:
            raise ApiError(404, GatewayCode.NOT_FOUND.value, "no such request (or it was forgotten)")
        return request_id, found.result

    async def get_tts(self, request: Request, call: Call) -> Response:
        request_id, result = await self.lookup(request, call)
        if result is None:
            return _json({"id": request_id, "status": "pending"}, 200, {"Retry-After": "1"})
        return _json(await self.result_body(request, result))

    async def get_tts_audio(self, request: Request, call: Call) -> Response:
        _, result = await self.lookup(request, call)
        if result is None or result.audio is None:
            raise ApiError(404, GatewayCode.NOT_FOUND.value, "the request has no audio (pending or failed)")
        data = await self.gateway.audio_bytes(result)
        return Response(data, media_type=result.audio.content_type, headers={"Cache-Control": "private"})

    async def post_speech(self, request: Request, call: Call) -> Response:
        """OpenAI's `POST /v1/audio/speech`: always synchronous, answers the audio bytes."""
        key = self.authenticate(request, call, "tts")
        body = bodies.parse_json(await request.body())
        wait = bodies.wait_seconds(
            request.headers, default_s=self.settings.default_timeout_s, max_s=self.settings.max_timeout_s
        )
        speech = bodies.speech_request(
            body,
            key_name=key.name,
            limits=self.gateway.limits,
            ttl_s=wait,
            voice_map=self.settings.openai_voice_map,
        )
        call.request_id = speech.request.request_id
        with self.gateway.slot():
            await self.gateway.admit(key, speech.request, durable=False)
            result = await self.gateway.call(speech.request, self.traceparent(request), wait)
        if result.error is not None:
            raise from_result(result.error, result.request_id)
        assert result.audio is not None
        data = await self.gateway.audio_bytes(result)
        media_type = result.audio.content_type
        if speech.pcm:
            data, media_type = _pcm_of_wav(data), "audio/pcm"
        return Response(data, media_type=media_type, headers={"X-Request-Id": result.request_id})

    # ------------------------------------------------------------------ voices

    async def post_voice(self, request: Request, call: Call) -> Response:
        from consumer.errors import WorkerError
        from consumer.voices.errors import VoiceError

        key = self.authenticate(request, call, "voices")
        await self.gateway.admit(key, None, durable=False)
        limit = self.gateway.registry.limits.max_bytes
        async with request.form(max_files=1, max_fields=4, max_part_size=64 * 1024) as form:
            name, transcript, upload = form.get("name"), form.get("transcript"), form.get("audio")
            if not isinstance(name, str) or not name:
                raise ApiError(400, "INVALID_REQUEST", "name: is required (a form field)", param="name")
            if not isinstance(transcript, str) or not transcript:
                raise ApiError(
                    400,
                    "VOICE_INVALID",
                    "transcript: the exact words spoken in the audio",
                    param="transcript",
                )
            if upload is None or isinstance(upload, str):
                raise ApiError(400, "VOICE_INVALID", "audio: a file part is required", param="audio")
            data = await upload.read(limit + 1)
            if len(data) > limit:
                raise too_large("the prompt audio", limit, code="VOICE_INVALID")
            filename = (upload.filename or "upload")[:200]
        try:
            outcome = await run_in_threadpool(
                self.gateway.registry.add, name, data, transcript, source_name=f"gateway:{filename}"
            )
        except VoiceError as exc:
            raise ApiError(400, exc.code.value, exc.message, param="audio") from exc
        except WorkerError as exc:
            raise unavailable(f"object storage: {type(exc).__name__}") from exc
        record = outcome.record
        return _json(
            {
                "voice_id": record.voice_id,
                "name": name,
                "voice": f"registered:{name}",
                "duration_seconds": record.duration_seconds,
                "sample_rate_hz": record.sample_rate_hz,
                "new_voice": outcome.new_voice,
                "previous_voice_id": outcome.previous_voice_id,
            },
            201,
            {"Location": f"{self.base_url(request)}/v1/voices"},
        )

    async def get_voices(self, request: Request, call: Call) -> Response:
        from consumer.errors import WorkerError

        self.authenticate(request, call, "tts")
        try:
            found = await run_in_threadpool(self.gateway.registry.voices)
        except WorkerError as exc:
            raise unavailable(f"object storage: {type(exc).__name__}") from exc
        return _json(
            {
                "voices": [
                    {
                        "voice_id": record.voice_id,
                        "names": aliases,
                        "duration_seconds": record.duration_seconds,
                        "created_at_ms": record.created_at_ms,
                    }
                    for record, aliases in found
                ]
            }
        )

    # ------------------------------------------------------------------ operations

    async def livez(self, request: Request) -> Response:
        if self.gateway.ready and not self.gateway.alive():
            return PlainTextResponse("a background thread stopped\n", 503)
        return PlainTextResponse("ok\n")

    async def readyz(self, request: Request) -> Response:
        if not self.gateway.ready or self.gateway.draining:
            return PlainTextResponse("not ready\n", 503)
        return PlainTextResponse("ready\n")

    async def metrics(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        gateway = self.gateway
        gateway.metrics.waiters.set(gateway.waiters)
        if gateway.lag.reading is not None:
            gateway.metrics.lane_lag.set(gateway.lag.reading.lag)
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ the app

    def routes(self) -> list[Route]:
        json_limit = self.settings.max_body_bytes
        voice_limit = self.gateway.shared.max_prompt_audio_bytes + MULTIPART_OVERHEAD_BYTES
        ep = self.endpoint
        return [
            Route("/v1/tts", ep("/v1/tts", self.post_tts, body_limit=json_limit), methods=["POST"]),
            Route("/v1/tts/{request_id}", ep("/v1/tts/{id}", self.get_tts, body_limit=0), methods=["GET"]),
            Route(
                "/v1/tts/{request_id}/audio",
                ep("/v1/tts/{id}/audio", self.get_tts_audio, body_limit=0),
                methods=["GET"],
            ),
            Route(
                "/v1/audio/speech",
                ep("/v1/audio/speech", self.post_speech, body_limit=json_limit),
                methods=["POST"],
            ),
            Route("/v1/voices", ep("/v1/voices", self.post_voice, body_limit=voice_limit), methods=["POST"]),
            Route("/v1/voices", ep("/v1/voices", self.get_voices, body_limit=0), methods=["GET"]),
            Route("/livez", self.livez, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]


def _pcm_of_wav(data: bytes) -> bytes:
    """The samples of a PCM WAV file without its header (OpenAI's `pcm` format)."""
    with wave.open(io.BytesIO(data)) as reader:
        frames: bytes = reader.readframes(reader.getnframes())
    return frames


def create_app(gateway: Gateway, keys: KeyFile) -> Starlette:
    web = GatewayApp(gateway, keys)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            gateway.draining = True
            await gateway.stop()

    middleware = []
    if gateway.settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=gateway.settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type", "prefer", "traceparent", "x-api-key"],
                expose_headers=["location", "retry-after", "x-request-id"],
            )
        )
    return Starlette(routes=web.routes(), middleware=middleware, lifespan=lifespan)
