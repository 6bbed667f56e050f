"""Adding, changing and removing PACS destinations (admins), as devices are edited.

Destinations of the configuration file are read-only here; the web's are validated
with the file's rules (``appliance.destinations.validate``), written with an audit row,
and pushed to the live list, which the forwarder's senders, routing and Storage
Commitment follow at once (another process notices within a few seconds).
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from appliance import destinations, managed
from appliance.config import COMMITMENT_POLICIES, DestinationSettings
from appliance.errors import NotFound, ValidationError
from web import gettext, request_store, runtime, security

bp = Blueprint("destinations", __name__, url_prefix="/admin/destinations")

_SEPARATORS = re.compile(r"[,\n]")  # AE titles may hold spaces; lists are comma-separated


@bp.before_request
def _admins_only() -> None:
    if g.user is None or not g.user.is_admin:
        abort(403)


def _list(raw: Any) -> tuple[str, ...]:
    """A list field from a form (comma- or line-separated text) or JSON (a list)."""
    parts = raw if isinstance(raw, list | tuple) else _SEPARATORS.split(str(raw or ""))
    return tuple(s for s in (str(p).strip() for p in parts) if s)


def destination_from(data: Any) -> tuple[DestinationSettings | None, dict[str, str]]:
    """A DestinationSettings from form data; errors name the field."""
    values: dict[str, Any] = {
        name: str(data.get(name, "") or "").strip() for name in ("name", "ae_title", "host")
    }
    values["commitment"] = str(data.get("commitment", "") or "").strip() or "pacs"
    values["transfer_syntax"] = str(data.get("transfer_syntax", "") or "").strip()
    values["tls"] = data.get("tls") in (True, "1", "on", "true")
    values["tls_ca"] = str(data.get("tls_ca", "") or "").strip()
    for name in destinations.LISTS:
        values[name] = _list(data.get(name, ""))
    raw = data.get("port", "")
    try:
        if isinstance(raw, bool) or raw in ("", None):
            raise ValueError
        values["port"] = int(raw)
    except (TypeError, ValueError):
        return None, {"port": "is not a whole number"}
    try:
        return destinations.validate(DestinationSettings(**values)), {}
    except ValidationError as exc:
        return None, {exc.field: exc.reason}


def _form(values: dict[str, Any], errors: dict[str, str], original: str | None) -> Any:
    shown = dict(values)
    for name in destinations.LISTS:
        if not isinstance(shown.get(name, ""), str):
            shown[name] = ", ".join(shown[name])
    return render_template(
        "admin/destination_form.html",
        values=shown,
        errors=errors,
        original=original,
        policies=COMMITMENT_POLICIES,
    ), (400 if errors else 200)


@bp.route("/new", methods=["GET", "POST"])
def new() -> Any:
    return _save(None)


@bp.route("/<name>/edit", methods=["GET", "POST"])
def edit(name: str) -> Any:
    return _save(name)


def _save(original: str | None) -> Any:
    store = request_store()
    if request.method == "GET":
        if original is None:
            return _form({"port": 104, "commitment": "pacs"}, {}, None)
        try:
            row = destinations.get(store, original)
        except NotFound:
            abort(404)
        if row["managed_by"] == managed.CONFIG:
            abort(404)  # read-only: the file's entries have no form
        return _form(row, {}, original)
    dest, errors = destination_from(request.form)
    if dest is not None:
        try:
            destinations.save(store, dest, original, security.actor(), security.source())
        except ValidationError as exc:
            errors = {exc.field: exc.reason}
        except NotFound:
            abort(404)
    if errors:
        return _form(dict(request.form), errors, original)
    destinations.publish(store, runtime().destinations)
    flash(gettext("Saved."))
    return redirect(url_for("queues.index"))


@bp.post("/<name>/delete")
def delete(name: str) -> Any:
    store = request_store()
    try:
        destinations.delete(store, name, security.actor(), security.source())
    except NotFound:
        abort(404)
    except ValidationError as exc:
        flash(f"{name}: {gettext(exc.reason)}", "error")
        return redirect(url_for("queues.index"))
    destinations.publish(store, runtime().destinations)
    flash(gettext("%(name)s removed; its waiting items stay until it is added again.", name=name))
    return redirect(url_for("queues.index"))
