"""Sign-in, sessions, CSRF and login rate limiting for the web edge.

Sessions are Flask's signed cookies keyed by a secret kept in the database. A session
holds the user's pk and *session epoch*; changing a password, role or active flag moves
the epoch on and so ends that user's sessions. Sessions end after ``IDLE_TIMEOUT_S``
without a page view and ``ABSOLUTE_TIMEOUT_S`` after sign-in.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import abort, current_app, g, request, session

from appliance import accounts
from appliance.errors import NotFound

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def csrf_token() -> str:
    """This session's CSRF token (made on first use); every form posts it back."""
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return str(token)


def csrf_ok() -> bool:
    """True when an unsafe request carries this session's CSRF token (form field or header)."""
    expected = session.get("csrf")
    sent = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    return bool(expected) and hmac.compare_digest(str(expected), sent)


def start_session(user: accounts.User) -> None:
    """Sign a user in: a fresh session (new CSRF token) bound to the user's epoch."""
    session.clear()
    session.permanent = True
    now = time.time()
    session.update(
        uid=user.pk, epoch=user.session_epoch, born=now, seen=now, csrf=secrets.token_urlsafe(32)
    )


def end_session() -> None:
    session.clear()


def session_user(touch: bool = True) -> accounts.User | None:
    """The signed-in user of this session, or None when absent, expired or revoked."""
    uid = session.get("uid")
    if uid is None:
        return None
    cfg = current_app.config
    now = time.time()
    if (
        now - float(session.get("seen", 0)) > cfg["IDLE_TIMEOUT_S"]
        or now - float(session.get("born", 0)) > cfg["ABSOLUTE_TIMEOUT_S"]
    ):
        session.clear()
        session["expired"] = True  # the sign-in page says why
        return None
    try:
        user = accounts.get_user(current_app.extensions["appliance"].store, int(uid))
    except NotFound:
        session.clear()
        return None
    if not user.active or user.session_epoch != session.get("epoch"):
        session.clear()
        return None
    if touch:
        session["seen"] = now
    return user


def bearer_user() -> accounts.User | None:
    """The user of an ``Authorization: Bearer`` API token, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return accounts.user_for_token(current_app.extensions["appliance"].store, token.strip())


def may_see_health() -> bool:
    """True for a signed-in user, an API token or the box's status key (``HEALTH_KEY``)."""
    if getattr(g, "user", None) is not None:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    key = current_app.config.get("HEALTH_KEY") or ""
    if scheme.lower() == "bearer" and key and hmac.compare_digest(key, token.strip()):
        return True
    return bearer_user() is not None


def admin_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Only admins may use this view (403 for others)."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if g.user is None or not g.user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapped


def actor() -> str:
    return g.user.username if getattr(g, "user", None) else "anonymous"


def source() -> str:
    return f"web {request.remote_addr or ''}".strip()


class LoginLimiter:
    """Failed sign-ins per user name and per client address in a sliding window."""

    def __init__(
        self,
        per_user: int = 5,
        per_address: int = 20,
        window_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_user = per_user
        self.per_address = per_address
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def retry_after(self, username: str, address: str) -> float:
        """Seconds until another attempt is allowed (0 = allowed now)."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key, limit in (
                (f"u:{username.strip().casefold()}", self.per_user),
                (f"a:{address}", self.per_address),
            ):
                q = self._recent(key, now)
                if len(q) >= limit:
                    wait = max(wait, self.window_s - (now - q[0]))
        return wait

    def failed(self, username: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            for key in (f"u:{username.strip().casefold()}", f"a:{address}"):
                self._recent(key, now).append(now)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(f"u:{username.strip().casefold()}", None)
