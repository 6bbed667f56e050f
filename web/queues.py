"""Destinations and their forward queues (admins): per destination the waiting count,
oldest item, last error and throughput; waiting items with why each waits; retry now;
dead letters with reasons and resend; a C-ECHO test; the destinations themselves with
their routing rules (added and edited in web/destinations.py; those of the
configuration file read-only). The overview shows the first rows of each list; the
waiting items of a destination and the dead letters have their own pages to page
through every row."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from appliance import audit, destinations
from appliance.errors import ValidationError
from appliance.forward import queue, sender
from web import clock, gettext, paging, refuse, request_store, runtime, security

bp = Blueprint("queues", __name__, url_prefix="/admin/destinations")

PREVIEW = 10  # rows of each list on the overview; the list pages show them all


@bp.before_request
def _admins_only() -> None:
    if g.user is None or not g.user.is_admin:
        abort(403)


def _configured() -> dict[str, Any]:
    """The destinations now (the file's and the web's), by name, in routing order."""
    return {d.name: d for d in runtime().destinations.current()}


def _known(name: str) -> bool:
    """A current destination, or one that still has queue rows (a removed one)."""
    return name in _configured() or bool(
        request_store().query("SELECT 1 FROM forward_queue WHERE destination = ? LIMIT 1", (name,))
    )


def _back() -> str:
    """Where a form sends the admin back to: the list page it came from (kept with its
    filters and position) when that is one of these pages, else the overview."""
    back = request.form.get("back", "")
    parts = urlsplit(back)
    if parts.scheme or parts.netloc or not parts.path.startswith(bp.url_prefix or "/"):
        return url_for("queues.index")
    return back


@bp.get("", endpoint="index")
def index() -> Any:
    store = request_store()
    configured = _configured()
    rows = queue.summary(store, configured, stall_after=runtime().config.forward.stall_minutes * 60)
    waiting = {r["destination"]: queue.waiting_items(store, r["destination"], PREVIEW)
               for r in rows if r["waiting"]}  # fmt: skip
    return render_template(
        "admin/destinations.html",
        rows=rows,
        configured=configured,
        managed={r["name"]: r["managed_by"] for r in destinations.rows(store)},
        waiting=waiting,
        dead=queue.dead_letters(store, limit=PREVIEW),
        unrouted=queue.unrouted(store, limit=PREVIEW),
        saved=queue.bytes_saved(store),
        unrouted_total=queue.unrouted_count(store),
        dead_total=sum(r["dead"] for r in rows),
    )


@bp.get("/<name>/waiting")
def waiting(name: str) -> Any:
    if not _known(name):
        return refuse(404, "destination", "no such destination")
    try:
        page = queue.waiting_page(request_store(), name, paging.page_request(request.args))
    except ValidationError as exc:
        return refuse(400, exc.field, exc.reason)
    return render_template(
        "admin/waiting.html",
        name=name,
        page=page,
        links=paging.links(page, "queues.waiting", request.args, name=name),
        sizes=paging.SIZES,
    )


@bp.get("/dead")
def dead() -> Any:
    store = request_store()
    destination = request.args.get("destination", "").strip()
    if destination and not _known(destination):
        return refuse(400, "destination", "no such destination")
    try:
        page = queue.dead_letter_page(store, destination or None,
                                      paging.page_request(request.args))  # fmt: skip
    except ValidationError as exc:
        return refuse(400, exc.field, exc.reason)
    return render_template(
        "admin/dead.html",
        destination=destination,
        names=list(dict.fromkeys([*_configured(), *([destination] if destination else [])])),
        page=page,
        links=paging.links(page, "queues.dead", request.args),
        sizes=paging.SIZES,
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
    return redirect(_back())


@bp.post("/unrouted/route", endpoint="route")
def route() -> Any:
    """Queue every unrouted image to the destination chosen (a current one)."""
    name = request.form.get("destination", "").strip()
    if name not in _configured():
        return refuse(400, "destination", "choose one of the configured destinations")
    store = request_store()
    n = queue.route_unrouted(store, name)
    audit.record_now(store, security.actor(), "forward-route", name, f"{n} unrouted images",
                     security.source())  # fmt: skip
    flash(gettext("%(n)s unrouted images will be sent to %(name)s.", n=n, name=name))
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
        "SELECT id FROM forward_queue WHERE destination = ? AND state = 'dead' "
        "AND id IN (SELECT value FROM json_each(?))", (name, json.dumps(ids)))}  # fmt: skip
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
    return redirect(_back())


@bp.post("/<name>/echo")
def echo(name: str) -> Any:
    dest = _configured().get(name)
    if dest is None:
        return refuse(404, "destination", "no such destination")
    when = clock.clinic().from_epoch(time.time())
    ok, what = sender.echo(dest, runtime().config.dicom)
    audit.record_now(request_store(), security.actor(), "forward-echo", name, what,
                     security.source())  # fmt: skip
    # As much as the queue says: the address asked, when, and what failed (or the time).
    where = f"{dest.ae_title}@{dest.host}:{dest.port}"
    params = {"name": name, "where": where, "when": when, "what": what}
    if ok:
        flash(gettext("C-ECHO to %(name)s (%(where)s) at %(when)s: %(what)s.", **params))
    else:
        flash(gettext("C-ECHO to %(name)s (%(where)s) at %(when)s failed: %(what)s",
                      **params), "error")  # fmt: skip
    return redirect(url_for("queues.index"))
