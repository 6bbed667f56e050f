"""Adding, changing and removing PACS destinations (admins), as devices are edited.

Destinations of the configuration file are read-only here; the web's are validated
with the file's rules (``appliance.destinations.validate``), written with an audit row,
and pushed to the live list, which the forwarder's senders, routing and Storage
Commitment follow at once (another process notices within a few seconds).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from appliance import destinations, managed
from appliance.config import COMMITMENT_POLICIES
from appliance.errors import NotFound, ValidationError
from web import gettext, request_store
from web.entries import DESTINATIONS

bp = Blueprint("destinations", __name__, url_prefix="/admin/destinations")


@bp.before_request
def _admins_only() -> None:
    if g.user is None or not g.user.is_admin:
        abort(403)


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
    try:
        dest, errors = DESTINATIONS.write(request.form, original)
    except NotFound:
        abort(404)
    if dest is None:
        return _form(dict(request.form), errors, original)
    flash(gettext("Saved."))
    return redirect(url_for("queues.index"))


@bp.post("/<name>/delete")
def delete(name: str) -> Any:
    try:
        DESTINATIONS.remove(name)
    except NotFound:
        abort(404)
    except ValidationError as exc:
        flash(f"{name}: {gettext(exc.reason)}", "error")
        return redirect(url_for("queues.index"))
    flash(gettext("%(name)s removed; its waiting items stay until it is added again.", name=name))
    return redirect(url_for("queues.index"))
