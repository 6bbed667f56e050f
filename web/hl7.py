"""HL7 (admins): the last messages received from the RIS with their ACK code and why an
order failed, and the status messages sent back (the outbox) with a resend."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from appliance.errors import NotFound
from appliance.hl7 import inbox, outbound
from web import gettext, refuse, request_store, runtime, security

bp = Blueprint("hl7", __name__, url_prefix="/admin/hl7")

SHOWN = 100


@bp.before_request
def _admins_only() -> None:
    if g.user is None or not g.user.is_admin:
        abort(403)


@bp.get("", endpoint="index")
def index() -> Any:
    store = request_store()
    failed = request.args.get("failed") == "1"
    return render_template(
        "admin/hl7.html",
        enabled=runtime().config.hl7.enabled,
        failed=failed,
        messages=inbox.recent(store, SHOWN, failed),
        outbox=outbound.recent(store, SHOWN),
    )


@bp.post("/outbox/<int:pk>/resend")
def resend(pk: int) -> Any:
    try:
        outbound.resend(request_store(), pk, actor=security.actor())
    except NotFound:
        return refuse(404, "pk", "no such outbox message")
    flash(gettext("The status message will be sent again."))
    return redirect(url_for("hl7.index"))
