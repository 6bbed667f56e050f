"""Destinations and their forward queues (admins): per destination the waiting count,
oldest item, last error and throughput; waiting items with why each waits; retry now;
dead letters with reasons and resend; a C-ECHO test; the routing rules (read-only,
from the configuration file)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from appliance import audit
from appliance.forward import queue, sender
from web import gettext, request_store, runtime, security
from web.prints import refuse

bp = Blueprint("queues", __name__, url_prefix="/admin/destinations")

ITEMS_SHOWN = 100


@bp.before_request
def _admins_only() -> None:
    if g.user is None or not g.user.is_admin:
        abort(403)


def _configured() -> dict[str, Any]:
    return {d.name: d for d in runtime().config.destinations}


def _known(name: str) -> bool:
    """A destination of the configuration, or one that still has queue rows."""
    return name in _configured() or bool(
        request_store().query("SELECT 1 FROM forward_queue WHERE destination = ? LIMIT 1", (name,))
    )


@bp.get("", endpoint="index")
def index() -> Any:
    store = request_store()
    configured = _configured()
    rows = queue.summary(store, configured)
    waiting = {r["destination"]: queue.waiting_items(store, r["destination"], ITEMS_SHOWN)
               for r in rows if r["waiting"]}  # fmt: skip
    return render_template(
        "admin/destinations.html",
        rows=rows,
        configured=configured,
        waiting=waiting,
        dead=queue.dead_letters(store, limit=ITEMS_SHOWN),
    )


@bp.post("/<name>/retry")
def retry(name: str) -> Any:
    if not _known(name):
        return refuse(404, "destination", "no such destination")
    store = request_store()
    n = queue.retry_now(store, name)
    audit.record_now(store, security.actor(), "forward-retry", name, f"{n} items",
                     security.source())  # fmt: skip
    flash(gettext("%(n)s waiting items will be sent now.", n=n))
    return redirect(url_for("queues.index"))


@bp.post("/<name>/resend")
def resend(name: str) -> Any:
    if not _known(name):
        return refuse(404, "destination", "no such destination")
    store = request_store()
    raw = request.form.getlist("id")
    if not raw:
        return refuse(400, "id", "choose at least one dead letter")
    try:
        ids = sorted({int(v) for v in raw})
    except ValueError:
        return refuse(400, "id", "is not a whole number")
    dead = {r["id"] for r in store.query(
        "SELECT id FROM forward_queue WHERE destination = ? AND state = 'dead'", (name,))}  # fmt: skip
    unknown = [i for i in ids if i not in dead]
    if unknown:
        return refuse(404, "id", "is not a dead letter of this destination")
    n = queue.resend(store, ids)
    audit.record_now(store, security.actor(), "forward-resend", name,
                     "queue ids " + ",".join(map(str, ids)), security.source())  # fmt: skip
    if n < len(ids):
        flash(gettext("%(n)s of the dead letters were sent again; the others' files are gone.",
                      n=n), "error")  # fmt: skip
    else:
        flash(gettext("%(n)s dead letters will be sent again.", n=n))
    return redirect(url_for("queues.index"))


@bp.post("/<name>/echo")
def echo(name: str) -> Any:
    dest = _configured().get(name)
    if dest is None:
        return refuse(404, "destination", "no such destination")
    ok, what = sender.echo(dest, runtime().config.dicom)
    audit.record_now(request_store(), security.actor(), "forward-echo", name, what,
                     security.source())  # fmt: skip
    if ok:
        flash(gettext("C-ECHO to %(name)s: success.", name=name))
    else:
        flash(gettext("C-ECHO to %(name)s failed: %(what)s", name=name, what=what), "error")
    return redirect(url_for("queues.index"))
