"""Tokens, sessions and CSRF for the console; no web framework in here (unit-tested alone).

* Login: the operator presents the console token once (form or the link printed at start);
  the console answers with a session cookie `<expiry>.<HMAC(expiry)>` keyed by a per-process
  secret: HttpOnly, SameSite=Strict, no token inside. Restarting the console ends sessions.
* CSRF: every browser gets a random `csrf` cookie; forms carry HMAC(secret, cookie) and a POST
  must present it (double submit, signed), besides SameSite=Strict cookies and an Origin check.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SESSION_COOKIE = "tts_console_session"
CSRF_COOKIE = "tts_console_csrf"
CSRF_FIELD = "csrf_token"
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the console on this machine."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def generate_token() -> str:
    return secrets.token_urlsafe(32)


class ExposedWithoutToken(ValueError):
    """Binding beyond loopback without a token is refused."""


def check_binding(host: str, token: str | None, no_auth: bool) -> None:
    """Refuse the combinations that would expose the console without authentication."""
    if no_auth and not is_loopback(host):
        raise ExposedWithoutToken(
            f"--no-auth is only allowed on a loopback address; {host} is reachable from other machines"
        )
    if not is_loopback(host) and not token:
        raise ExposedWithoutToken(
            f"the console would listen on {host} without a token: set TTS_CONSOLE_TOKEN "
            "(or --token-file) to a secret of at least 16 characters"
        )
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ExposedWithoutToken(f"the console token must have at least {MIN_TOKEN_CHARS} characters")


@dataclass
class Auth:
    """`token` None: no login (allowed on loopback only); CSRF is checked either way."""

    token: str | None
    session_ttl_s: int = 12 * 3600
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    clock: Callable[[], float] = time.time

    @property
    def required(self) -> bool:
        return self.token is not None

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self.secret, f"{purpose}|{value}".encode(), hashlib.sha256).hexdigest()

    def token_matches(self, presented: str | None) -> bool:
        if self.token is None or not presented:
            return False
        return hmac.compare_digest(presented.encode(), self.token.encode())

    def new_session(self) -> str:
        expires = str(int(self.clock()) + self.session_ttl_s)
        return f"{expires}.{self._sign('session', expires)}"

    def session_valid(self, cookie: str | None) -> bool:
        if not cookie or "." not in cookie:
            return False
        expires, _, signature = cookie.partition(".")
        if not expires.isdigit() or int(expires) < self.clock():
            return False
        return hmac.compare_digest(signature, self._sign("session", expires))

    def bearer_valid(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(value.strip())

    def authenticated(self, session_cookie: str | None, authorization: str | None) -> bool:
        if not self.required:
            return True
        return self.session_valid(session_cookie) or self.bearer_valid(authorization)

    @staticmethod
    def new_csrf_cookie() -> str:
        return secrets.token_urlsafe(24)

    def csrf_token(self, csrf_cookie: str) -> str:
        return self._sign("csrf", csrf_cookie)

    def csrf_valid(self, csrf_cookie: str | None, presented: str | None) -> bool:
        if not csrf_cookie or not presented:
            return False
        return hmac.compare_digest(presented, self.csrf_token(csrf_cookie))
