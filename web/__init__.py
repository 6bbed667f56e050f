"""The web application: a Flask app factory over the appliance's runtime.

Blueprints (listed in ``appliance.app.BLUEPRINTS``, handed to ``create_app``): ``auth``
(sign-in, first-run setup, own account), ``board`` (the schedule board and its live
updates), ``steps`` (schedule form), ``admin`` (devices, users, catalog, audit log),
``prints``, ``queues``, ``destinations``, ``hl7``, ``api`` (JSON under /api/v1/) and
``dicomweb``. This package imports none of them: they import it (``gettext``, ``runtime``,
``refuse``). ``create_app`` writes nothing; ``start(app)`` does, once, before it serves.
Every page but sign-in, setup, static files and ``/healthz`` needs a signed-in user; the API also takes Bearer tokens.
``/healthz`` tells anonymous callers only up or down.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.exceptions import HTTPException

from appliance import accounts
from appliance.db import Store
from appliance.runtime import Runtime
from web import clock, i18n, security

PUBLIC_ENDPOINTS = {"healthz", "static", "auth.login", "auth.setup", "auth.language"}


def _announce_setup(token: str) -> None:
    """Print the one-time setup token once, to stderr (the box's log), never to a page."""
    print(
        "appliance: no admin account yet. Open the web page, choose 'First start' and enter "
        f"this one-time setup token: {token}",
        file=sys.stderr,
        flush=True,
    )


def create_app(
    runtime: Runtime,
    blueprints: Sequence[Blueprint],
    admin_menu: Sequence[tuple[str, str | None]] = (),
    health: Callable[[], dict[str, Any]] | None = None,
    test_config: dict[str, Any] | None = None,
    announce: Callable[[str], None] = _announce_setup,
    health_key: str = "",
) -> Flask:
    """Build the Flask app for this runtime (config, store, access) with these blueprints
    and admin menu entries (label, endpoint: ``appliance.app.BLUEPRINTS`` and
    ``ADMIN_MENU``); it writes nothing: ``start(app)`` does, before it serves.

    ``health_key``: the box's status key (appliance.statuskey); a caller sending it as a
    Bearer token sees the full /healthz report, as a signed-in user or an API token does.
    """
    app = Flask(__name__)
    app.config.update(
        SESSION_COOKIE_NAME="appliance_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # Over HTTPS (the default) the browser sends the session cookie only over HTTPS.
        SESSION_COOKIE_SECURE=bool(runtime.config.web.https),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        IDLE_TIMEOUT_S=30 * 60,
        ABSOLUTE_TIMEOUT_S=12 * 3600,
        BOARD_POLL_MS=3000,
        MAX_CONTENT_LENGTH=4 * 1024 * 1024,
        LOGIN_THROTTLE=security.LoginThrottle(),
        HEALTH_KEY=health_key,
    )
    app.config.update(test_config or {})
    app.extensions["appliance"] = runtime
    app.extensions["admin_menu"] = list(admin_menu)
    app.extensions["announce_setup"] = announce
    app.extensions["health"] = health  # the service health page reads it (web/health_page.py)

    for bp in blueprints:
        app.register_blueprint(bp)

    @app.get("/healthz")
    def healthz() -> Any:
        """Up or down for anyone; each part's state only for a user, an API token or the
        box's own status key (names, hosts and ports are not for anonymous callers)."""
        report = health() if health is not None else {"status": "ok", "services": {}}
        code = 200 if report["status"] == "ok" else 503
        if not security.may_see_health():
            report = {"status": report["status"]}
        return jsonify(report), code

    app.before_request(_authenticate)
    app.after_request(_security_headers)
    app.register_error_handler(HTTPException, _http_error)

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {
            "_": gettext,
            "csrf_token": security.csrf_token,
            "current_user": g.get("user"),
            "lang": g.get("lang", i18n.DEFAULT),
            "admin_menu": app.extensions["admin_menu"],
        }

    app.jinja_env.filters["pn"] = pn_display
    app.jinja_env.filters["pn_alpha"] = pn_alphabetic
    app.jinja_env.filters["birth"] = birth_display
    clock.install(app, runtime)  # the filters epoch and when, the footer's clock
    return app


def start(app: Flask) -> Flask:
    """The web app's writes, made once before it serves: the session signing key (made
    on the first start, kept in the database) and, while there is no admin account, a
    one-time setup token handed to ``announce``."""
    store = app.extensions["appliance"].store
    app.config["SECRET_KEY"] = accounts.secret_key(store)
    token = accounts.issue_setup_token(store)
    if token is not None:
        app.extensions["announce_setup"](token)
    return app


def gettext(text: str, **params: Any) -> str:
    """The text in the request's language."""
    return i18n.translate(text, g.get("lang", i18n.DEFAULT), **params)


def refuse(code: int, field: str, reason: str) -> Any:
    """An error page that names what is wrong: the field and the (translated) reason."""
    return render_template("error.html", code=code, message=f"{field}: {gettext(reason)}"), code


def pn_display(pn: str) -> str:
    """A person name for people: the ideographic group if any, else alphabetic, else phonetic."""
    groups = [*(pn or "").split("="), "", ""]
    main = groups[1] or groups[0] or groups[2]
    return " ".join(p for p in main.split("^") if p)


def birth_display(birth_date: str, on: str = "") -> str:
    """A DA birth date as 'YYYY-MM-DD (N y)', the age on the DA date ``on`` (else today);
    '' when there is none, the value as stored when it is not a date."""
    b = (birth_date or "").strip()
    if not b:
        return ""
    try:
        born = datetime.strptime(b, "%Y%m%d").date()
    except ValueError:
        return b
    try:
        day = datetime.strptime(on, "%Y%m%d").date() if on else clock.clinic().today()
    except ValueError:
        day = clock.clinic().today()
    age = day.year - born.year - ((day.month, day.day) < (born.month, born.day))
    return f"{born.isoformat()} ({age} y)" if age >= 0 else born.isoformat()


def pn_alphabetic(pn: str) -> str:
    """The alphabetic group when another group is shown as the main name."""
    groups = (pn or "").split("=")
    if len(groups) > 1 and groups[1]:
        return " ".join(p for p in groups[0].split("^") if p)
    return ""


def _is_api() -> bool:
    """JSON errors, Bearer tokens, 401 for anonymous: the API and DICOMweb."""
    return request.path.startswith(("/api/", "/dicomweb/"))


def _authenticate() -> Any:
    """Every request: who is it, which language, is the form genuine."""
    g.user = None
    g.api_token = False
    is_polling = request.endpoint in ("board.changes", "api.changes")
    if _is_api():
        user = security.bearer_user()
        if user is not None:
            g.user, g.api_token = user, True
    if g.user is None:
        g.user = security.session_user(touch=not is_polling)
    g.lang = i18n.pick(
        g.user.language if g.user else "", request.accept_languages, request.cookies.get("lang")
    )
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        if request.method in security.UNSAFE_METHODS and request.endpoint != "healthz":
            if not security.csrf_ok():
                return _csrf_failed()
        return None
    if g.user is None:
        if _is_api() or is_polling:
            return jsonify(error="unauthorized", message="sign in or send a Bearer token"), 401
        if accounts.setup_pending(request_store()):
            return redirect(url_for("auth.setup"))
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    if request.method in security.UNSAFE_METHODS and not g.api_token and not security.csrf_ok():
        return _csrf_failed()
    return None


def _security_headers(resp: Any) -> Any:
    """No framing, no MIME sniffing, scripts and styles only from this box's files (no inline
    script, event handler or style attribute); pages are never cached."""
    resp.headers.setdefault("X-Frame-Options", "DENY")
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "same-origin")
    resp.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    )
    if request.endpoint != "static":
        resp.headers.setdefault("Cache-Control", "no-store")
    if request.is_secure:  # RFC 6797: browsers take it only from a trusted HTTPS answer
        resp.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return resp


def _csrf_failed() -> Any:
    if _is_api():
        return jsonify(error="csrf", message="missing or wrong X-CSRF-Token header"), 400
    return (
        render_template(
            "error.html", code=400, message=gettext("The form has expired; please try again.")
        ),
        400,
    )


def _http_error(exc: HTTPException) -> Any:
    code = exc.code or 500
    if _is_api():
        return jsonify(error=exc.name.lower().replace(" ", "_"), message=exc.description), code
    message = {403: "Forbidden", 404: "Not found"}.get(code, exc.name)
    if not hasattr(g, "lang"):
        g.lang = i18n.DEFAULT
    return render_template("error.html", code=code, message=gettext(message)), code


def request_store() -> Store:
    """The appliance's database (each thread has its own connection)."""
    return runtime().store


def runtime() -> Runtime:
    """The appliance's runtime: config, store, access, destinations."""
    rt: Runtime = current_app.extensions["appliance"]
    return rt
