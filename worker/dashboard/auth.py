"""Who may press the dashboard's buttons: the token from the environment opens a session (a
signed cookie), and every action is a POST with that session's CSRF token from a same-origin page.

The signing key is made at start-up and never stored, so a restart ends every session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.requests import Request

COOKIE = "pg_llm_dashboard"


@dataclass(frozen=True)
class Guard:
    """The token (None: no actions at all), read-only mode and the session signing key."""

    token: str | None
    read_only: bool = False
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    @property
    def actions(self) -> bool:
        """Whether the dashboard offers actions at all."""
        return self.token is not None and not self.read_only

    def token_matches(self, given: str) -> bool:
        if self.token is None:
            return False
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self.key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    def new_cookie(self) -> str:
        """A fresh session id with its signature, for the cookie after a good token."""
        session = secrets.token_urlsafe(24)
        return f"{session}.{self._sign('session', session)}"

    def session(self, request: Request) -> str | None:
        """The request's session id if its cookie is one this process signed."""
        cookie = request.cookies.get(COOKIE, "")
        session, _, signature = cookie.rpartition(".")
        if not session or not hmac.compare_digest(signature, self._sign("session", session)):
            return None
        return session

    def csrf(self, session: str) -> str:
        """The CSRF token every form of this session carries."""
        return self._sign("csrf", session)

    def refusal(self, request: Request, form_csrf: str | None) -> str | None:
        """Why an action request is refused, or None when it may go ahead."""
        if not self.actions:
            return "actions are off (read-only mode, or no WORKER_DASHBOARD_TOKEN)"
        if not same_origin(request):
            return "the request did not come from this dashboard's own pages (Origin)"
        session = self.session(request)
        if session is None:
            return "not signed in (or the dashboard restarted): sign in with the token"
        if not form_csrf or not hmac.compare_digest(form_csrf, self.csrf(session)):
            return "the form's CSRF token does not match this session; reload the page"
        return None


def same_origin(request: Request) -> bool:
    """Whether the request's Origin (or, lacking one, its Referer) is this server's own
    scheme and host. A POST carrying neither is refused: browsers send Origin on every POST."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return False
    parts = urlsplit(source)
    return (parts.scheme, parts.netloc) == (request.url.scheme, request.url.netloc)


def local_path(target: str | None, default: str = "/") -> str:
    """`target` if it is a path on this server, else `default` (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target
