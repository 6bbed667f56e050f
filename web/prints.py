"""Printers and print history: live printer state, searchable jobs a page at a time
(newest first, with the total), page previews, the PDF and reprint. Front desk and admins
may use every page here (a reprint changes no configuration); files are found from the
job's UID in the database, never from a path in the request."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, send_file, url_for

from appliance import audit
from appliance.errors import NotFound, ValidationError
from appliance.printing import history
from web import clock, gettext, paging, request_store, runtime, security

bp = Blueprint("prints", __name__)

UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def refuse(code: int, field: str, reason: str) -> Any:
    """An error page that names what is wrong: the field and the (translated) reason."""
    return render_template("error.html", code=code, message=f"{field}: {gettext(reason)}"), code


def _bad_uid(uid: str) -> bool:
    return len(uid) > 64 or not UID_RE.match(uid)


def _when(raw: str, end: bool) -> str | None:
    """A date (YYYY-MM-DD) or date-time from the search form, in the clinic's zone, as
    stored (UTC ISO); None when it is not one. An end date counts its whole day."""
    if not raw:
        return ""
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        return None
    if end and len(raw) == 10:
        when += dt.timedelta(days=1)
    return clock.clinic().to_stored(when)


@bp.get("/printers")
def printers() -> Any:
    return render_template("prints/printers.html", printers=history.printers(runtime().config))


@bp.get("/prints")
def jobs() -> Any:
    args = {k: request.args.get(k, "").strip() for k in ("device", "label", "state", "since",
                                                          "until", "printer")}  # fmt: skip
    errors: dict[str, str] = {}
    since, until = _when(args["since"], end=False), _when(args["until"], end=True)
    for name, value in (("since", since), ("until", until)):
        if value is None:
            errors[name] = "is not a date YYYY-MM-DD"
    if args["state"] and args["state"] not in history.JOB_STATES:
        errors["state"] = "must be one of " + ", ".join(history.JOB_STATES)
    page = None
    try:
        req = paging.page_request(request.args)
    except ValidationError as exc:
        errors[exc.field] = exc.reason
        req = paging.page_request({})
    if not errors:
        flt = history.JobFilter(
            calling_ae=args["device"].upper(),
            label=args["label"],
            state=args["state"],
            since=since or "",
            until=until or "",
            printer=args["printer"],
        )
        try:
            page = history.job_page(request_store(), flt, req)
        except ValidationError as exc:
            errors[exc.field] = exc.reason
    return render_template(
        "prints/jobs.html",
        page=page,
        rows=page.rows if page else [],
        links=paging.links(page, "prints.jobs", request.args) if page else None,
        size=req.size,
        sizes=paging.SIZES,
        args=args,
        errors=errors,
        states=history.JOB_STATES,
        printer_names=history.printer_names(runtime().config),
    ), (400 if errors else 200)


@bp.get("/prints/<uid>")
def job(uid: str) -> Any:
    if _bad_uid(uid):
        return refuse(404, "uid", "no such print job")
    try:
        row = history.get_job(request_store(), uid)
    except NotFound:
        return refuse(404, "uid", "no such print job")
    return render_template(
        "prints/job.html",
        job=row,
        pages=range(1, max(row["pages"] or 0, 0) + 1),
        printer_names=history.printer_names(runtime().config),
    )


@bp.get("/prints/<uid>/page/<int:page>")
def page_png(uid: str, page: int) -> Any:
    if _bad_uid(uid):
        return refuse(404, "uid", "no such print job")
    try:
        path = history.page_preview_path(runtime().config, request_store(), uid, page)
    except NotFound:
        return refuse(404, "page", "no such page of this print job")
    return send_file(path, mimetype="image/png", max_age=0)


@bp.get("/prints/<uid>/document.pdf")
def document(uid: str) -> Any:
    if _bad_uid(uid):
        return refuse(404, "uid", "no such print job")
    try:
        path = history.document_path(runtime().config, request_store(), uid)
    except NotFound:
        return refuse(404, "uid", "no such print job or no document yet")
    if not path.is_file():
        return refuse(404, "uid", "no such print job or no document yet")
    return send_file(
        path, mimetype="application/pdf", as_attachment=True, download_name=f"print-{uid}.pdf"
    )


@bp.post("/prints/<uid>/reprint")
def reprint(uid: str) -> Any:
    if _bad_uid(uid):
        return refuse(404, "uid", "no such print job")
    store = request_store()
    printer = request.form.get("printer", "").strip()
    try:
        new = history.reprint(runtime().config, store, uid, printer)
    except NotFound:
        return refuse(404, "uid", "no such print job")
    except ValidationError as exc:
        return refuse(400, exc.field, exc.reason)
    target = history.get_job(store, new)["printer"]
    audit.record_now(
        store, security.actor(), "print-reprint", uid, f"new job {new} to {target}",
        security.source(),
    )  # fmt: skip
    flash(gettext("Reprint queued to %(printer)s.", printer=target))
    return redirect(url_for("prints.job", uid=new))
