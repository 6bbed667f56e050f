"""Sign-in, sign-out, first-run setup and the user's own account page."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from appliance import accounts, audit
from appliance.errors import Conflict, ValidationError
from web import gettext, request_store, security

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    """Only same-site paths are followed after sign-in (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//"):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("board.index")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    store = request_store()
    if accounts.setup_pending(store):
        return redirect(url_for("auth.setup"))
    if g.user is not None and request.method == "GET":
        return redirect(_safe_next(request.args.get("next")))
    error = ""
    if session.pop("expired", False):
        error = gettext("Your session has ended; please sign in again.")
    username = ""
    status = 200
    headers: dict[str, str] = {}
    if request.method == "POST":
        username = request.form.get("username", "")
        password = request.form.get("password", "")
        throttle: security.LoginThrottle = current_app.config["LOGIN_THROTTLE"]
        address = request.remote_addr or ""
        wait = math.ceil(throttle.retry_after(username, address))
        if wait > 0:
            # Not checked at all (right or wrong): this address has been failing.
            error = gettext("Too many failed sign-ins; try again in %(s)s seconds.", s=wait)
            status, headers = 429, {"Retry-After": str(wait)}
        else:
            user = accounts.authenticate(store, username, password)
            if user is None:
                known = accounts.find_user(store, username) is not None
                throttle.failed(username, address, known_user=known)
                audit.record_now(
                    store, username[:64] or "?", "login-failed", "", "", security.source()
                )
                error = gettext("Wrong user name or password.")
                status = 401
            else:
                throttle.succeeded(address)
                security.start_session(user)
                audit.record_now(store, user.username, "login", "", "", security.source())
                return redirect(_safe_next(request.args.get("next")))
    page = render_template("login.html", error=error, username=username)
    return page, status, headers


@bp.post("/logout")
def logout() -> Any:
    uid = session.get("uid")
    if uid is not None:
        # The signed cookie alone cannot be revoked: moving the user's epoch on ends it on the
        # server too (a copy saved before logout is refused), in every browser of that user.
        accounts.end_sessions(request_store(), int(uid))
    security.end_session()
    return redirect(url_for("auth.login"))


@bp.route("/setup", methods=["GET", "POST"])
def setup() -> Any:
    store = request_store()
    if not accounts.setup_pending(store):
        return redirect(url_for("auth.login"))
    errors: dict[str, str] = {}
    values = {"username": "admin", "language": ""}
    if request.method == "POST":
        values = {k: request.form.get(k, "") for k in ("username", "language")}
        password = request.form.get("password", "")
        # Every field's message at once (not one per try): each is checked on its own.
        checks = [
            lambda: accounts.validate_username(values["username"]),
            lambda: accounts.validate_password(password, values["username"].strip()),
            lambda: accounts.validate_language(values["language"]),
        ]
        for check in checks:
            try:
                check()
            except ValidationError as exc:
                errors.setdefault(exc.field, exc.reason)
        if not request.form.get("token", "").strip():
            errors["token"] = "is required"
        if password != request.form.get("password2", ""):
            errors["password2"] = "the two passwords differ"
        if not errors:
            try:
                accounts.complete_setup(
                    store,
                    request.form.get("token", ""),
                    values["username"],
                    password,
                    values["language"],
                    source=security.source(),
                )
            except ValidationError as exc:
                errors[exc.field] = exc.reason
            except Conflict:
                return redirect(url_for("auth.login"))
        if not errors:
            user = accounts.find_user(store, values["username"])
            assert user is not None
            security.start_session(user)
            return redirect(url_for("admin.devices"))
    return render_template("setup.html", errors=errors, values=values), 400 if errors else 200


@bp.post("/language/", defaults={"lang": ""})
@bp.post("/language/<lang>")
def language(lang: str) -> Any:
    """Choose a language: for a signed-in user it is saved, for others kept in a cookie.

    A POST with the CSRF token (checked before the view), never a GET: it changes state.
    """
    if lang not in ("en", "ja", ""):
        lang = ""
    user = security.session_user(touch=False)
    if user is not None:
        accounts.set_language(request_store(), user.pk, lang)
    resp = redirect(_safe_next(request.form.get("next")))
    resp.set_cookie(
        "lang", lang, max_age=365 * 86400, samesite="Lax", httponly=True, secure=request.is_secure
    )
    return resp


@bp.route("/account", methods=["GET", "POST"])
def account() -> Any:
    store = request_store()
    errors: dict[str, str] = {}
    if request.method == "POST":
        current = request.form.get("current_password", "")
        new = request.form.get("new_password", "")
        if accounts.authenticate(store, g.user.username, current) is None:
            errors["current_password"] = "Wrong user name or password."
        elif new != request.form.get("new_password2", ""):
            errors["new_password2"] = "the two passwords differ"
        else:
            try:
                accounts.set_password(
                    store, g.user.pk, new, actor=security.actor(), source=security.source()
                )
            except ValidationError as exc:
                errors["new_password"] = exc.reason
        if not errors:
            user = accounts.get_user(store, g.user.pk)
            security.start_session(user)
            flash(gettext("Saved."))
            return redirect(url_for("auth.account"))
    return render_template("account.html", errors=errors), 400 if errors else 200
