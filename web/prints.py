"""Printers and print history: live printer state, searchable jobs a page at a time
(newest first, with the total; by patient name, ID or accession too), page previews, the
PDF and reprint. Front desk and admins may use these pages (a reprint changes no
configuration); files are found from the job's UID in the database, never from a path in
the request. Admins add, change and remove printers here (those of the file read-only, as
with devices and destinations) and print a test page through a printer's own output."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, send_file, url_for

from appliance import audit, identifiers, managed
from appliance import printers as printer_list
from appliance.errors import NotFound, ValidationError
from appliance.printing import history, testpage
from appliance.printing.output import DeliveryError
from appliance.printing.service import PRINTS_DIR, new_uid
from web import clock, gettext, paging, refuse, request_store, runtime, security
from web.entries import PRINTERS

bp = Blueprint("prints", __name__)


def _bad_uid(uid: str) -> bool:
    return not identifiers.is_uid(uid)


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
    config = runtime().config
    test = request.args.get("test", "")  # the test page just sent, to show its preview
    shown = (test if test and not _bad_uid(test) and g.user is not None and g.user.is_admin
             and _test_preview(test).is_file() else "")  # fmt: skip
    return render_template(
        "prints/printers.html", printers=history.printers(config, request_store()), test=shown
    )


def _test_preview(uid: str) -> Path:
    return Path(runtime().config.data_dir) / PRINTS_DIR / testpage.TEST_DIR / uid / "page-1.png"


@bp.get("/printers/test/<uid>.png")
def printer_test_png(uid: str) -> Any:
    """The preview of a test page, as it was sent (the last few are kept)."""
    _admin()
    if _bad_uid(uid) or not _test_preview(uid).is_file():
        return refuse(404, "uid", "no such test page")
    return send_file(_test_preview(uid), mimetype="image/png", max_age=0)


def _admin() -> None:
    """Adding, changing, removing and testing printers is for admins."""
    if g.user is None or not g.user.is_admin:
        abort(403)


def _printer_form(values: dict[str, Any], errors: dict[str, str], original: str | None) -> Any:
    return render_template(
        "prints/printer_form.html", values=values, errors=errors, original=original
    ), (400 if errors else 200)


@bp.route("/printers/new", methods=["GET", "POST"])
def printer_new() -> Any:
    return _save_printer(None)


@bp.route("/printers/<name>/edit", methods=["GET", "POST"])
def printer_edit(name: str) -> Any:
    return _save_printer(name)


def _save_printer(original: str | None) -> Any:
    _admin()
    store = request_store()
    if request.method == "GET":
        if original is None:
            return _printer_form({"uri": "ipp://"}, {}, None)
        try:
            row = printer_list.get(store, original)
        except NotFound:
            return refuse(404, "printer", "no such printer")
        if row["managed_by"] == managed.CONFIG:
            return refuse(404, "printer", "is managed by the configuration file")
        return _printer_form(row, {}, original)
    try:
        printer, errors = PRINTERS.write(request.form, original)
    except NotFound:
        return refuse(404, "printer", "no such printer")
    if printer is None:
        return _printer_form(dict(request.form), errors, original)
    flash(gettext("Saved."))
    return redirect(url_for("prints.printers"))


@bp.post("/printers/<name>/delete")
def printer_delete(name: str) -> Any:
    _admin()
    try:
        PRINTERS.remove(name)
    except NotFound:
        return refuse(404, "printer", "no such printer")
    except ValidationError as exc:
        flash(f"{name}: {gettext(exc.reason)}", "error")
        return redirect(url_for("prints.printers"))
    flash(gettext("%(name)s removed; its print jobs stay in the history.", name=name))
    return redirect(url_for("prints.printers"))


@bp.post("/printers/<name>/test")
def printer_test(name: str) -> Any:
    """Render a test page and send it through the printer's output; show what it said."""
    _admin()
    store = request_store()
    found = [p for p in printer_list.effective(printer_list.TABLE.load(store)) if p.name == name]
    if not found:
        return refuse(404, "printer", "no such printer")
    config = runtime().config
    data_dir = Path(config.data_dir)
    uid = new_uid()
    try:
        detail = testpage.print_test_page(found[0], data_dir / PRINTS_DIR, data_dir, uid)
    except (DeliveryError, OSError) as exc:
        audit.record_now(store, security.actor(), "printer-test", f"printer {name}",
                         f"failed: {exc}"[:200], security.source())  # fmt: skip
        flash(gettext("Test page to %(name)s failed: %(what)s", name=name, what=str(exc)),
              "error")  # fmt: skip
        return redirect(url_for("prints.printers", test=uid))
    audit.record_now(store, security.actor(), "printer-test", f"printer {name}", detail[:200],
                     security.source())  # fmt: skip
    flash(gettext("Test page sent to %(name)s: %(what)s", name=name, what=detail))
    return redirect(url_for("prints.printers", test=uid))


@bp.get("/prints")
def jobs() -> Any:
    args = {k: request.args.get(k, "").strip() for k in ("device", "label", "state", "since",
                                                          "until", "printer", "patient")}  # fmt: skip
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
            patient=args["patient"],
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
        printer_names=history.printer_names(request_store()),
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
        printer_names=history.printer_names(request_store()),
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
