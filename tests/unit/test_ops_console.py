"""The console's web layer with a fake backend: login, sessions, CSRF, host and origin checks,
confirmation, escaping, audio ranges. (The real thing in a browser: tests/e2e/test_console.py.)"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from schemas import dlq
from schemas.model import AudioDescriptor, ResultStatus, SynthesisResult, Timings
from tts_stream.console.app import create_app
from tts_stream.console.auth import CSRF_COOKIE, SESSION_COOKIE, Auth, check_binding, is_loopback
from tts_stream.console.backend import AudioStream, Submitted, parse_range
from tts_stream.ops.dlq import DeadLetter, Decoded, DlqFilter, Listing, PlannedReplay
from tts_stream.ops.errors import BadArgument, NotFound
from tts_stream.ops.kafka_read import Record
from tts_stream.ops.keda import ChartScaling
from tts_stream.ops.lag import LagReport, PartitionState, Snapshot, report

TOKEN = "correct-horse-battery-staple"
AUDIO = bytes(range(256)) * 4
XSS = "<script>alert(1)</script>"


def result(request_id: str = "r-1") -> SynthesisResult:
    return SynthesisResult(
        request_id=request_id,
        status=ResultStatus.SUCCEEDED,
        engine="espeak",
        model_version="1.52",
        timings=Timings(1, 2, 3),
        completed_at_ms=1_700_000_000_000,
        cache_key="a" * 64,
        audio=AudioDescriptor("s3://tts-audio/audio/x.wav", "audio/wav", len(AUDIO), 1.0, 24000, "b" * 64),
    )


def letter() -> DeadLetter:
    headers = ((dlq.SOURCE_TOPIC, b"req"), (dlq.REASON, b"BAD_MAGIC"), (dlq.ERROR, XSS.encode()))
    return DeadLetter(Record("dlq", 0, 7, 1, None, b"\x01", headers))


class FakeBackend:
    def __init__(self) -> None:
        self.replayed: list[str] = []
        self.submitted: list[tuple[str, ...]] = []

    def lanes(self) -> LagReport:
        states = {"interactive": (PartitionState(0, 1, 0, 41),), "bulk": (PartitionState(0, 0, 0, 0),)}
        snap = Snapshot(1.0, "workers", {"interactive": "req", "bulk": "bulk"}, states, 1)
        return report(snap, ChartScaling())

    def recent_results(self, limit: int) -> list[SynthesisResult]:
        return [result()]

    def result(self, request_id: str) -> SynthesisResult | None:
        return result(request_id) if request_id == "r-1" else None

    def audio(self, request_id: str, range_header: str | None) -> AudioStream:
        if request_id != "r-1":
            raise NotFound("no audio")
        wanted = parse_range(range_header, len(AUDIO))
        if wanted is None:
            return AudioStream(200, "audio/wav", len(AUDIO), len(AUDIO), None, iter([AUDIO]))
        first, last = wanted
        body = AUDIO[first : last + 1]
        return AudioStream(
            206, "audio/wav", len(body), len(AUDIO), f"bytes {first}-{last}/{len(AUDIO)}", iter([body])
        )

    def dead_letters(self, flt: DlqFilter, limit: int) -> Listing:
        return Listing([letter()], 1, 1)

    def dead_letter(self, letter_id: str) -> tuple[DeadLetter, Decoded]:
        if letter_id != "0:7":
            raise NotFound(f"no dead letter {letter_id}")
        from schemas.errors import DecodeError, DecodeReason

        return letter(), Decoded(None, DecodeError(DecodeReason.BAD_MAGIC, "first byte", b"\x01"))

    def replay(self, letter_id: str) -> PlannedReplay:
        self.replayed.append(letter_id)
        return PlannedReplay(letter(), "req", None, 1, status="replayed")

    def submit(self, text: str, voice: str, language: str | None, output_format: str, lane: str) -> Submitted:
        if not text.strip():
            raise BadArgument("text: must not be empty")
        self.submitted.append((text, voice, output_format, lane))
        return Submitted("r-1", "req")


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def client(backend: FakeBackend) -> Iterator[TestClient]:
    app = create_app(backend, Auth(TOKEN), allowed_hosts=frozenset({"testserver", "127.0.0.1"}))
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as c:
        yield c


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF field"
    return match[1]


def logged_in(client: TestClient) -> TestClient:
    response = client.get(f"/login?token={TOKEN}")
    assert response.status_code == 303 and response.headers["location"] == "/"
    return client


def test_pages_need_a_login_and_the_token_link_logs_in(client: TestClient) -> None:
    response = client.get("/dlq")
    assert response.status_code == 303 and response.headers["location"] == "/login?next=/dlq"
    assert client.get("/audio/r-1").status_code == 401
    assert client.get("/login?token=wrong").status_code == 401
    logged_in(client)
    assert client.get("/dlq").status_code == 200
    assert client.cookies.get(SESSION_COOKIE) and TOKEN not in client.cookies.get(SESSION_COOKIE, "")


def test_login_form_and_logout(client: TestClient) -> None:
    page = client.get("/login?next=/results")
    wrong = client.post(
        "/login", data={"csrf_token": csrf_of(page.text), "token": "nope", "next": "/results"}
    )
    assert wrong.status_code == 401 and "wrong token" in wrong.text
    ok = client.post("/login", data={"csrf_token": csrf_of(page.text), "token": TOKEN, "next": "/results"})
    assert ok.status_code == 303 and ok.headers["location"] == "/results"
    home = client.get("/")
    out = client.post("/logout", data={"csrf_token": csrf_of(home.text)})
    assert out.status_code == 303
    assert client.get("/").status_code == 303


@pytest.mark.parametrize(("scheme", "secure"), [("http", False), ("https", True)])
def test_cookies_are_secure_when_served_over_tls(backend: FakeBackend, scheme: str, secure: bool) -> None:
    app = create_app(backend, Auth(TOKEN), allowed_hosts=frozenset({"testserver"}))
    with TestClient(app, base_url=f"{scheme}://testserver", follow_redirects=False) as tls_client:
        set_cookies = tls_client.get(f"/login?token={TOKEN}").headers.get_list("set-cookie")
    assert {c.split("=", 1)[0] for c in set_cookies} >= {SESSION_COOKIE, CSRF_COOKIE}
    assert all(("; secure" in c.lower()) is secure for c in set_cookies), set_cookies


def test_the_dead_letter_filter_offers_only_reasons_that_happen(client: TestClient) -> None:
    page = logged_in(client).get("/dlq").text
    assert 'value="CRASH_LOOP"' in page and 'value="TRUNCATED"' in page
    assert 'value="TOO_LARGE"' not in page, "reserved: no worker emits it"
    assert 'value="REGISTRY_UNAVAILABLE"' not in page, "retried, never dead-lettered"


def test_login_never_redirects_off_site(client: TestClient) -> None:
    response = client.get(f"/login?token={TOKEN}&next=//evil.example/x")
    assert response.headers["location"] == "/"


def test_bearer_token_works_for_scripts(client: TestClient) -> None:
    response = client.get("/audio/r-1", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200 and response.content == AUDIO


def test_sessions_expire() -> None:
    now = [1000.0]
    auth = Auth(TOKEN, session_ttl_s=60, clock=lambda: now[0])
    cookie = auth.new_session()
    assert auth.session_valid(cookie)
    now[0] += 61
    assert not auth.session_valid(cookie)
    assert not auth.session_valid("99999999999.forged")
    assert not Auth(TOKEN).session_valid(cookie)  # another process, another secret


def test_posts_without_the_form_token_or_from_another_site_are_refused(
    client: TestClient, backend: FakeBackend
) -> None:
    logged_in(client)
    token = csrf_of(client.get("/dlq/0:7/replay").text)
    assert client.post("/dlq/0:7/replay", data={"confirm": "yes"}).status_code == 403
    assert client.post("/dlq/0:7/replay", data={"confirm": "yes", "csrf_token": "x" * 64}).status_code == 403
    cross = client.post(
        "/dlq/0:7/replay",
        data={"confirm": "yes", "csrf_token": token},
        headers={"Origin": "http://evil.example"},
    )
    assert cross.status_code == 403
    hidden = client.post(
        "/dlq/0:7/replay", data={"confirm": "yes", "csrf_token": token}, headers={"Origin": "null"}
    )
    assert hidden.status_code == 403
    assert backend.replayed == []


def test_replay_needs_the_confirmation_step(client: TestClient, backend: FakeBackend) -> None:
    logged_in(client)
    confirm_page = client.get("/dlq/0:7/replay")
    assert "Confirm replay" in confirm_page.text
    token = csrf_of(confirm_page.text)
    unconfirmed = client.post("/dlq/0:7/replay", data={"csrf_token": token})
    assert unconfirmed.status_code == 400 and backend.replayed == []
    done = client.post(
        "/dlq/0:7/replay",
        data={"csrf_token": token, "confirm": "yes"},
        headers={"Origin": "http://testserver"},
    )
    assert done.status_code == 200 and "Replayed to" in done.text
    assert backend.replayed == ["0:7"]


def test_dead_letter_content_is_escaped(client: TestClient) -> None:
    logged_in(client)
    for path in ("/dlq", "/dlq/0:7"):
        page = client.get(path).text
        assert XSS not in page and "&lt;script&gt;" in page


def test_unknown_and_malformed_dead_letters(client: TestClient) -> None:
    logged_in(client)
    assert client.get("/dlq/0:99").status_code == 404
    assert client.get("/dlq/zero").status_code == 400
    assert client.get("/dlq?reason=NOPE").status_code == 400


def test_submit_redirects_to_the_result_and_reports_bad_input(
    client: TestClient, backend: FakeBackend
) -> None:
    logged_in(client)
    token = csrf_of(client.get("/submit").text)
    response = client.post(
        "/submit",
        data={"csrf_token": token, "text": "Hello", "voice": "preset:en-us", "output_format": "wav"},
    )
    assert response.status_code == 303 and response.headers["location"] == "/results/r-1"
    assert backend.submitted == [("Hello", "preset:en-us", "wav", "interactive")]
    bad = client.post("/submit", data={"csrf_token": token, "text": "  "})
    assert bad.status_code == 400 and "must not be empty" in bad.text


def test_result_page_plays_audio_through_the_console(client: TestClient) -> None:
    logged_in(client)
    page = client.get("/results/r-1").text
    assert 'id="result-audio"' in page and 'src="/audio/r-1"' in page
    assert "X-Amz" not in page and "s3://tts-audio" in page  # the URI is shown, never a credential
    pending = client.get("/results/r-2").text
    assert 'http-equiv="refresh"' in pending and "Waiting" in pending


def test_audio_ranges(client: TestClient) -> None:
    logged_in(client)
    whole = client.get("/audio/r-1")
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    part = client.get("/audio/r-1", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == AUDIO[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(AUDIO)}"
    assert client.get("/audio/r-1", headers={"Range": f"bytes={len(AUDIO)}-"}).status_code == 416
    assert client.get("/audio/nope").status_code == 404


def test_parse_range() -> None:
    assert parse_range(None, 100) is None
    assert parse_range("bytes=0-", 100) == (0, 99)
    assert parse_range("bytes=-10", 100) == (90, 99)
    assert parse_range("bytes=90-200", 100) == (90, 99)
    assert parse_range("bytes=0-1,5-6", 100) is None  # several ranges: the whole object
    with pytest.raises(BadArgument):
        parse_range("bytes=100-", 100)


def test_pages_carry_security_headers_and_overview_shows_keda(client: TestClient) -> None:
    logged_in(client)
    page = client.get("/")
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none': no script
    assert page.headers["x-frame-options"] == "DENY"
    # 40 waiting on one partition: KEDA caps the metric at 1 x 20, so one replica.
    assert "KEDA would ask for" in page.text and 'id="keda-replicas">1<' in page.text
    assert client.get("/results").status_code == 200


def test_unknown_host_names_are_refused(client: TestClient) -> None:
    """DNS rebinding: a page on another name must not reach the loopback console."""
    assert client.get("/healthz", headers={"Host": "attacker.example"}).status_code == 400


def test_csrf_cookie_is_http_only_and_strict(client: TestClient) -> None:
    response = client.get("/login")
    cookie = response.headers["set-cookie"]
    assert CSRF_COOKIE in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie


def test_without_a_token_only_csrf_guards_posts(backend: FakeBackend) -> None:
    app = create_app(backend, Auth(None))
    with TestClient(app, follow_redirects=False) as c:
        assert c.get("/dlq").status_code == 200
        assert c.post("/dlq/0:7/replay", data={"confirm": "yes"}).status_code == 403


def test_binding_rules() -> None:
    assert (
        is_loopback("127.0.0.1")
        and is_loopback("::1")
        and is_loopback("localhost")
        and is_loopback("127.5.0.1")
    )
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("console.internal")
    check_binding("127.0.0.1", None, no_auth=True)
    check_binding("0.0.0.0", TOKEN, no_auth=False)
    for host, token, no_auth in (("0.0.0.0", None, False), ("::", TOKEN, True), ("10.0.0.1", "short", False)):
        with pytest.raises(ValueError, match=r"token|loopback|16"):
            check_binding(host, token, no_auth)
