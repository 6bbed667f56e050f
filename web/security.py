"""Sign-in, sessions, CSRF and the sign-in throttle for the web edge.

Sessions are Flask's signed cookies keyed by a secret kept in the database. A session
holds the user's pk and *session epoch*; changing a password, role or active flag moves
the epoch on and so ends that user's sessions. Sessions end after ``IDLE_TIMEOUT_S``
without a page view and ``ABSOLUTE_TIMEOUT_S`` after sign-in.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    until: float = 0.0  # no attempt before this time (the clock's)


class _FailureTable:
    """Recent failures by key; the least recently failing key goes first when full."""

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self.rows: OrderedDict[str, _Failures] = OrderedDict()

    def get(self, key: str, now: float, forget_s: float) -> _Failures | None:
        row = self.rows.get(key)
        if row is not None and now - row.last > forget_s:
            del self.rows[key]
            return None
        return row

    def fail(self, key: str, now: float, forget_s: float, free: int, cap_s: float) -> None:
        """One more failure: past ``free`` of them, each waits twice as long (capped)."""
        row = self.get(key, now, forget_s) or _Failures()
        row.count += 1
        row.last = now
        if row.count > free:
            row.until = now + min(cap_s, 2.0 ** min(row.count - free - 1, 16))
        self.rows[key] = row
        self.rows.move_to_end(key)
        while len(self.rows) > self.max_keys:
            self.rows.popitem(last=False)

    def clear(self, key: str) -> None:
        self.rows.pop(key, None)


class LoginThrottle:
    """Failed sign-ins slow the failing client down; nobody is locked out.

    After ``address_free`` failures from one address, each further attempt from it must
    wait 1, 2, 4 ... s (at most ``address_cap_s``). After ``user_free`` failures for one
    user name from anywhere, each attempt for it waits up to ``user_cap_s``, but only
    from addresses that are failing themselves: the right password from an address
    without recent failures signs in at once, however many guesses come from elsewhere.
    A sign-in clears its address. An IPv6 address counts as its /64. Failures are forgotten ``forget_s`` after the last
    one; each table keeps at most ``max_keys`` keys (the oldest go), so memory stays
    bounded however many addresses an attacker has.
    """

    def __init__(
        self,
        address_free: int = 5,
        address_cap_s: float = 60.0,
        user_free: int = 10,
        user_cap_s: float = 30.0,
        forget_s: float = 900.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address_free = address_free
        self.address_cap_s = address_cap_s
        self.user_free = user_free
        self.user_cap_s = user_cap_s
        self.forget_s = forget_s
        self.clock = clock
        self._lock = threading.Lock()
        self._addresses = _FailureTable(max_keys)
        self._users = _FailureTable(max_keys)

    @staticmethod
    def _user_key(username: str) -> str:
        return username.strip().casefold()[:64]

    @staticmethod
    def _address_key(address: str) -> str:
        """An IPv4 address, or the /64 of an IPv6 one (one host usually has a whole /64)."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address[:64]
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ipaddress.IPv6Network((ip, 64), strict=False))
        return str(ip)

    def retry_after(self, username: str, address: str) -> float:
        """Seconds until this address may try this user name again (0 = now)."""
        now = self.clock()
        with self._lock:
            failing = self._addresses.get(self._address_key(address), now, self.forget_s)
            if failing is None:
                return 0.0
            wait = failing.until - now
            user = self._users.get(self._user_key(username), now, self.forget_s)
            if user is not None:
                wait = max(wait, user.until - now)
        return max(wait, 0.0)

    def failed(self, username: str, address: str, known_user: bool = True) -> None:
        """A wrong password (user names that do not exist count for the address only)."""
        now = self.clock()
        with self._lock:
            key = self._address_key(address)
            self._addresses.fail(key, now, self.forget_s, self.address_free, self.address_cap_s)
            if known_user:
                self._users.fail(
                    self._user_key(username), now, self.forget_s, self.user_free, self.user_cap_s
                )

    def succeeded(self, address: str) -> None:
        """A sign-in: this address starts afresh (the user name's count decays by itself)."""
        with self._lock:
            self._addresses.clear(self._address_key(address))

    def sizes(self) -> tuple[int, int]:
        """How many addresses and user names are remembered (for tests and health)."""
        with self._lock:
            return len(self._addresses.rows), len(self._users.rows)
