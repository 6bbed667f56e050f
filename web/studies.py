"""Studies (signed-in users): the held studies, newest first, searchable; each with a
thumbnail, its series and image counts and its delivery state per destination; "Send
to" a destination or a device with host and port, queued on the forward queue
(``queue.send_study``: durable rows and the audit row in one transaction, then the
senders' retries and dead letters, shown on the queue pages)."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Any

import numpy as np
from flask import Blueprint, Response, abort, flash, g, redirect, render_template, request, url_for
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.pixels import pixel_array

from appliance import destinations, devices
from appliance.errors import ValidationError
from appliance.forward import queue
from appliance.forward.spool import Spool
from appliance.qr import studies
from image import display
from web import gettext, paging, request_store, runtime, security
from web.prints import refuse

bp = Blueprint("studies", __name__, url_prefix="/studies")

UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
THUMBNAIL = (160, 160)
CACHE = "private, max-age=86400"  # a held instance's pixels never change under its UID
SEARCH_ARGS = ("name", "patient_id", "accession", "date", "modality")
READ_ERRORS = (InvalidDicomError, OSError, ValueError, KeyError, TypeError, EOFError)
DECODE_ERRORS = (RuntimeError, NotImplementedError, ValueError, KeyError, TypeError, AttributeError)


@bp.before_request
def _signed_in() -> None:
    if g.user is None:
        abort(403)


def _bad_uid(uid: str) -> bool:
    return len(uid) > 64 or not UID_RE.match(uid)


def _date(raw: str) -> str | None:
    """YYYY-MM-DD (the date input) or YYYYMMDD as stored; None when it is neither."""
    if not raw:
        return ""
    try:
        return dt.date.fromisoformat(raw).strftime("%Y%m%d")
    except ValueError:
        return None


def targets() -> list[tuple[str, str]]:
    """Where a study can be sent: (value of the form's "to", label): every destination,
    then every device with host and port."""
    out = [(d.name, d.name) for d in runtime().destinations.current()]
    for d in sorted(devices.load(request_store()), key=lambda d: d.ae_title):
        if d.host and d.port:
            out.append((destinations.device_key(d.ae_title), f"{d.ae_title} ({d.host})"))
    return out


@bp.get("", endpoint="index")
def index() -> Any:
    args = {k: request.args.get(k, "").strip() for k in SEARCH_ARGS}
    errors: dict[str, str] = {}
    date = _date(args["date"])
    if date is None:
        errors["date"] = "is not a date YYYY-MM-DD"
    page = None
    try:
        req = paging.page_request(request.args)
    except ValidationError as exc:
        errors[exc.field] = exc.reason
        req = paging.page_request({})
    if not errors:
        try:
            flt = studies.StudyFilter(
                patient_name=args["name"],
                patient_id=args["patient_id"],
                accession_number=args["accession"],
                study_date=date or "",
                modality=args["modality"].upper(),
            )
            page = studies.study_page(request_store(), flt, req)
        except ValidationError as exc:
            field = {"patient_name": "name", "accession_number": "accession",
                     "study_date": "date"}.get(exc.field, exc.field)  # fmt: skip
            errors[field] = exc.reason
    rows = page.rows if page else []
    return render_template(
        "studies.html",
        page=page,
        rows=rows,
        deliveries=studies.deliveries(request_store(), (r["study_uid"] for r in rows)),
        links=paging.links(page, "studies.index", request.args) if page else None,
        size=req.size,
        sizes=paging.SIZES,
        args=args,
        errors=errors,
        targets=targets(),
        today=dt.date.today().isoformat(),
    ), (400 if errors else 200)


@bp.get("/<uid>/thumbnail.png", endpoint="thumbnail")
def thumbnail(uid: str) -> Any:
    """The middle image of the study's first series, rendered (``image.display``) as a
    PNG; cached by the browser, revalidated by its ETag (the instance's UID)."""
    if _bad_uid(uid):
        return refuse(400, "study", "is not a UID")
    held = studies.thumbnail_file(request_store(), uid)
    if held is None:
        return refuse(404, "study", "no such study is held")
    etag = hashlib.sha256(f"{held.sop_instance_uid}/{held.file}".encode()).hexdigest()[:32]
    if request.if_none_match.contains(etag):
        return _cached(Response(status=304), etag)
    picture = _render(held)
    if picture is None:
        return refuse(404, "study", "the image cannot be rendered")
    return _cached(Response(picture, mimetype="image/png"), etag)


def _cached(rsp: Response, etag: str) -> Response:
    rsp.set_etag(etag)
    rsp.headers["Cache-Control"] = CACHE
    return rsp


def _render(held: Any) -> bytes | None:
    """One frame (the first) of a held file through its stored window, fit to the box."""
    spool = Spool(runtime().config.data_dir / "spool")
    try:
        with spool.open(held.file) as fh:  # a file or a journal record
            ds = dcmread(fh)
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            arr = pixel_array(ds, index=0 if frames > 1 else None)
    except READ_ERRORS + DECODE_ERRORS:
        return None
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    slope = _first(ds.get("RescaleSlope")) or 1.0
    intercept = _first(ds.get("RescaleIntercept")) or 0.0
    try:
        im = display.window(np.asarray(arr), photometric, center, width, slope, intercept)
    except display.RenderError:
        return None
    return display.encode(display.fit(im, *THUMBNAIL), "image/png")


def _first(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


@bp.post("/<uid>/send", endpoint="send")
def send(uid: str) -> Any:
    """Queue the held study to the destination or device the form names ("to")."""
    if _bad_uid(uid):
        return refuse(400, "study", "is not a UID")
    to = request.form.get("to", "").strip()
    if to not in dict(targets()):
        return refuse(400, "to", "is not a destination or a device with host and port")
    store = request_store()
    if studies.held(store, uid) is None:
        return refuse(404, "study", "no such study is held")
    total, queued = queue.send_study(store, uid, to, g.user.username, security.source())
    label = destinations.device_ae(to) or to
    flash(gettext("%(n)s of %(total)s images queued to %(to)s.", n=queued, total=total,
                  to=label), "ok")  # fmt: skip
    return redirect(_back())


def _back() -> str:
    back = request.form.get("back", "")
    if not back.startswith("/studies") or back.startswith("//"):
        return url_for("studies.index")
    return back
