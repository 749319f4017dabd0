"""The console's web layer (Starlette): routing, authentication, CSRF, templates.

Everything that touches Kafka, Redis or S3 is in the backend and runs in a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from schemas.dlq import DlqReason
from schemas.errors import DecodeReason
from tts_stream.console.auth import CSRF_COOKIE, CSRF_FIELD, SESSION_COOKIE, Auth
from tts_stream.console.backend import Backend
from tts_stream.ops import dlq as dlq_ops
from tts_stream.ops.errors import BadArgument, NotFound, OpsError, ServiceUnavailable
from tts_stream.ops.timeparse import format_duration, parse_time_ms

log = logging.getLogger(__name__)

MAX_FORM_BYTES = 64 * 1024
SECURITY_HEADERS = {
    # No script at all: pages refresh themselves with <meta http-equiv="refresh">.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; media-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on form posts,
    # which the origin check must refuse.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
# What a dead letter can carry: registry outages are retried, never dead-lettered, and TOO_LARGE is
# reserved (schemas/dlq.py).
REASONS = sorted(
    ({r.value for r in DecodeReason} - {DecodeReason.REGISTRY_UNAVAILABLE.value})
    | ({r.value for r in DlqReason} - {DlqReason.TOO_LARGE.value})
)
FORMATS = ("wav", "ogg_opus", "flac", "mp3")

Handler = Callable[[Request, "Ctx"], Awaitable[Response]]


@dataclass
class Ctx:
    """Per request: the CSRF cookie (new ones are set on the response)."""

    csrf_cookie: str
    csrf_token: str
    set_csrf: bool
    form: dict[str, str] = field(default_factory=dict)


def _status_of(exc: OpsError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, BadArgument):
        return 400
    if isinstance(exc, ServiceUnavailable):
        return 503
    return 409


def _safe_next(target: str | None) -> str:
    """Only same-site paths: no open redirect through the login page."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class Console:
    def __init__(
        self, backend: Backend, auth: Auth, *, allowed_hosts: frozenset[str] = frozenset(), recent: int = 25
    ) -> None:
        self.backend = backend
        self.auth = auth
        self.allowed_hosts = allowed_hosts
        self.recent = recent
        self.env = Environment(
            loader=PackageLoader("tts_stream.console", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self.env.filters["when"] = dlq_ops.format_ms
        self.env.filters["duration"] = format_duration

    # ------------------------------------------------------------------ plumbing

    def render(self, request: Request, ctx: Ctx, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(
            csrf_field=CSRF_FIELD,
            csrf_token=ctx.csrf_token,
            auth_required=self.auth.required,
            logged_in=self.auth.required and self.auth.session_valid(request.cookies.get(SESSION_COOKIE)),
            path=request.url.path,
            **values,
        )
        return HTMLResponse(html, status_code=status)

    def _host_allowed(self, request: Request) -> bool:
        if not self.allowed_hosts:
            return True
        host = (request.headers.get("host") or "").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name.strip("[]") in self.allowed_hosts

    def _origin_ok(self, request: Request) -> bool:
        """A browser names the page a POST came from; it must be this console."""
        origin = request.headers.get("origin") or request.headers.get("referer")
        if not origin or origin == "null":
            return origin is None  # "null" (sandboxed or privacy-stripped) is refused
        parsed = urlsplit(origin)
        return parsed.netloc.lower() == (request.headers.get("host") or "").lower()

    async def _read_form(self, request: Request) -> dict[str, str]:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
            raise BadArgument("form too large")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise BadArgument("form too large")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise BadArgument("expected an HTML form (application/x-www-form-urlencoded)")
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=32)
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadArgument("unreadable form") from exc
        return {k: v[-1] for k, v in fields.items()}

    def route(self, handler: Handler, *, login: bool = True) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if not self._host_allowed(request):
                return PlainTextResponse("unknown host", status_code=400)
            cookie = request.cookies.get(CSRF_COOKIE)
            ctx = Ctx(cookie or "", "", cookie is None)
            if ctx.set_csrf:
                ctx.csrf_cookie = self.auth.new_csrf_cookie()
            ctx.csrf_token = self.auth.csrf_token(ctx.csrf_cookie)
            response = await self._guarded(request, ctx, handler, login)
            if ctx.set_csrf:
                response.set_cookie(
                    CSRF_COOKIE,
                    ctx.csrf_cookie,
                    httponly=True,
                    samesite="strict",
                    path="/",
                    secure=_over_tls(request),
                )
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return endpoint

    async def _guarded(self, request: Request, ctx: Ctx, handler: Handler, login: bool) -> Response:
        if login and not self.auth.authenticated(
            request.cookies.get(SESSION_COOKIE), request.headers.get("authorization")
        ):
            if request.method == "GET" and not request.url.path.startswith("/audio/"):
                return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
            return PlainTextResponse("authentication required", status_code=401)
        try:
            if request.method == "POST":
                if not self._origin_ok(request):
                    return PlainTextResponse("cross-site request refused", status_code=403)
                ctx.form = await self._read_form(request)
                if not self.auth.csrf_valid(request.cookies.get(CSRF_COOKIE), ctx.form.get(CSRF_FIELD)):
                    return PlainTextResponse(
                        "missing or stale form token: reload the page and try again", status_code=403
                    )
            return await handler(request, ctx)
        except OpsError as exc:
            return self.render(request, ctx, "error.html", status=_status_of(exc), message=str(exc))

    # ------------------------------------------------------------------ pages

    async def overview(self, request: Request, ctx: Ctx) -> Response:
        lanes = await run_in_threadpool(self.backend.lanes)
        return self.render(request, ctx, "overview.html", report=lanes)

    async def results(self, request: Request, ctx: Ctx) -> Response:
        found = await run_in_threadpool(self.backend.recent_results, self.recent)
        return self.render(request, ctx, "results.html", results=found)

    async def result(self, request: Request, ctx: Ctx) -> Response:
        request_id = request.path_params["request_id"]
        found = await run_in_threadpool(self.backend.result, request_id)
        return self.render(request, ctx, "result.html", request_id=request_id, result=found)

    async def audio(self, request: Request, ctx: Ctx) -> Response:
        request_id = request.path_params["request_id"]
        try:
            stream = await run_in_threadpool(self.backend.audio, request_id, request.headers.get("range"))
        except BadArgument as exc:
            return PlainTextResponse(str(exc), status_code=416)
        except NotFound as exc:
            return PlainTextResponse(str(exc), status_code=404)
        headers = {
            "Accept-Ranges": "bytes",
            "Content-Length": str(stream.length),
            "Cache-Control": "private, max-age=300",
        }
        if stream.content_range:
            headers["Content-Range"] = stream.content_range
        return StreamingResponse(
            stream.chunks, status_code=stream.status, media_type=stream.content_type, headers=headers
        )

    async def dlq(self, request: Request, ctx: Ctx) -> Response:
        reason = request.query_params.get("reason") or ""
        since = request.query_params.get("since") or ""
        if reason and reason not in REASONS:
            raise BadArgument(f"unknown reason {reason!r}")
        flt = dlq_ops.DlqFilter(
            since_ms=parse_time_ms(since) if since else None,
            reasons=frozenset({reason}) if reason else frozenset(),
        )
        listing = await run_in_threadpool(self.backend.dead_letters, flt, 100)
        return self.render(
            request, ctx, "dlq.html", listing=listing, reasons=REASONS, reason=reason, since=since
        )

    async def dlq_detail(self, request: Request, ctx: Ctx) -> Response:
        return await self._letter_page(request, ctx, confirm=False)

    async def replay_confirm(self, request: Request, ctx: Ctx) -> Response:
        return await self._letter_page(request, ctx, confirm=True)

    async def _letter_page(self, request: Request, ctx: Ctx, *, confirm: bool) -> Response:
        """One dead letter; with `confirm`, the page that asks before replaying it."""
        letter_id = request.path_params["letter_id"]
        dlq_ops.parse_letter_id(letter_id)
        letter, decoded = await run_in_threadpool(self.backend.dead_letter, letter_id)
        return self.render(
            request, ctx, "dlq_letter.html", letter=letter, request_info=decoded.describe(), confirm=confirm
        )

    async def replay(self, request: Request, ctx: Ctx) -> Response:
        letter_id = request.path_params["letter_id"]
        dlq_ops.parse_letter_id(letter_id)
        if ctx.form.get("confirm") != "yes":
            raise BadArgument("the replay was not confirmed")
        plan = await run_in_threadpool(self.backend.replay, letter_id)
        log.info("dead letter replay from the console", extra={"id": letter_id, "status": plan.status})
        return self.render(
            request, ctx, "replayed.html", plan=plan, status=200 if plan.status == "replayed" else 409
        )

    async def submit_form(self, request: Request, ctx: Ctx) -> Response:
        return self.render(request, ctx, "submit.html", formats=FORMATS, values={}, error=None)

    async def submit(self, request: Request, ctx: Ctx) -> Response:
        form = ctx.form
        values = {k: form.get(k, "") for k in ("text", "voice", "language", "output_format", "lane")}
        try:
            submitted = await run_in_threadpool(
                self.backend.submit,
                values["text"],
                values["voice"] or "preset:en-us",
                values["language"].strip() or None,
                values["output_format"] or "wav",
                values["lane"] or "interactive",
            )
        except BadArgument as exc:
            return self.render(
                request, ctx, "submit.html", status=400, formats=FORMATS, values=values, error=str(exc)
            )
        return RedirectResponse(f"/results/{quote(submitted.request_id)}", status_code=303)

    async def login_form(self, request: Request, ctx: Ctx) -> Response:
        target = _safe_next(request.query_params.get("next"))
        presented = request.query_params.get("token")
        if presented is not None:  # the link printed at start: log in, then drop the token from the URL
            if self.auth.token_matches(presented):
                return self._logged_in(target, secure=_over_tls(request))
            return self.render(request, ctx, "login.html", status=401, next=target, error="wrong token")
        if not self.auth.required:
            return RedirectResponse(target, status_code=303)
        return self.render(request, ctx, "login.html", next=target, error=None)

    async def login(self, request: Request, ctx: Ctx) -> Response:
        target = _safe_next(ctx.form.get("next"))
        if self.auth.token_matches(ctx.form.get("token")):
            return self._logged_in(target, secure=_over_tls(request))
        log.warning("console login refused")
        return self.render(request, ctx, "login.html", status=401, next=target, error="wrong token")

    def _logged_in(self, target: str, *, secure: bool) -> Response:
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            self.auth.new_session(),
            max_age=self.auth.session_ttl_s,
            httponly=True,
            samesite="strict",
            path="/",
            secure=secure,
        )
        return response

    async def logout(self, request: Request, ctx: Ctx) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def stylesheet(self, request: Request, ctx: Ctx) -> Response:
        css = resources.files("tts_stream.console").joinpath("static/console.css").read_text("utf-8")
        return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=3600"})

    async def healthz(self, request: Request, ctx: Ctx) -> Response:
        return PlainTextResponse("ok")


def create_app(
    backend: Backend, auth: Auth, *, allowed_hosts: frozenset[str] = frozenset(), recent: int = 25
) -> Starlette:
    console = Console(backend, auth, allowed_hosts=allowed_hosts, recent=recent)
    r = console.route
    routes = [
        Route("/", r(console.overview)),
        Route("/results", r(console.results)),
        Route("/results/{request_id}", r(console.result)),
        Route("/audio/{request_id}", r(console.audio)),
        Route("/dlq", r(console.dlq)),
        Route("/dlq/{letter_id}", r(console.dlq_detail)),
        Route("/dlq/{letter_id}/replay", r(console.replay_confirm), methods=["GET"]),
        Route("/dlq/{letter_id}/replay", r(console.replay), methods=["POST"]),
        Route("/submit", r(console.submit_form), methods=["GET"]),
        Route("/submit", r(console.submit), methods=["POST"]),
        Route("/login", r(console.login_form, login=False), methods=["GET"]),
        Route("/login", r(console.login, login=False), methods=["POST"]),
        Route("/logout", r(console.logout, login=False), methods=["POST"]),
        Route("/static/console.css", r(console.stylesheet, login=False)),
        Route("/healthz", r(console.healthz, login=False)),
    ]
    return Starlette(routes=routes)


def _over_tls(request: Request) -> bool:
    """Served over TLS (the console's own, `--tls-cert`): cookies are then sent over TLS only."""
    return request.url.scheme == "https"
