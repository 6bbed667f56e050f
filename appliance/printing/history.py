"""Print history for the web pages: search jobs, page previews, the PDF, reprint, printers.

Everything here works from the configuration, the database and the prints/ folder, so
the web part can run in its own process: a reprint is a queued job row that the DICOM
process's job runner picks up (it looks for new jobs every second).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance import paging
from appliance.config import Config
from appliance.db import Store
from appliance.errors import NotFound, ValidationError
from appliance.printing import output as output_mod
from appliance.printing import printers as printer_list
from appliance.printing.jobs import now_iso
from appliance.printing.repo import JOBS_DIR
from appliance.printing.service import PRINTS_DIR, new_uid

JOB_STATES = ("PENDING", "PRINTING", "DONE", "FAILURE")
MAX_LIMIT = 500


@dataclass(frozen=True)
class JobFilter:
    """What the history page searches by; empty fields match everything."""

    calling_ae: str = ""
    label: str = ""  # substring of the Film Session Label
    state: str = ""
    since: str = ""  # ISO date or date-time, inclusive
    until: str = ""  # ISO date or date-time, exclusive
    printer: str = ""
    patient: str = ""  # part of the Patient Name, Patient ID or Accession Number


def _prints(config: Config) -> Path:
    return Path(config.data_dir) / PRINTS_DIR


_JOB_COLUMNS = (
    "SELECT uid, calling_ae, called_ae, label, printer, priority, copies, state, "
    "state_info, films, pages, media, warnings, error, attempts, reprint_of, render_ms, "
    "created_at, ready_at, finished_at, patient_name, patient_id, accession_number "
    "FROM print_jobs"
)
# Newest first; the job UID breaks ties (the rowid of a table without an INTEGER PRIMARY
# KEY may change in a VACUUM, so a cursor must not hold it).
JOB_ORDER = paging.Order(("created_at", "uid"), ("created_at", "uid"), (str, str), descending=True)


def _conditions(flt: JobFilter) -> tuple[list[str], list[Any]]:
    """The WHERE conditions and their parameters for a filter."""
    if flt.state and flt.state not in JOB_STATES:
        raise ValidationError("state", f"{flt.state!r} is not one of {', '.join(JOB_STATES)}")
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("calling_ae", flt.calling_ae), ("state", flt.state),
                          ("printer", flt.printer)):  # fmt: skip
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    if flt.label:
        where.append("label LIKE ? ESCAPE '\\'")
        params.append(f"%{_like(flt.label)}%")
    if flt.patient:
        # A name is stored as DICOM PN (Yamada^Tarou=山田^太郎): words match across '^'.
        term = "%" + "%".join(_like(w) for w in flt.patient.split()) + "%"
        where.append(
            "(patient_name LIKE ? ESCAPE '\\' OR patient_id LIKE ? ESCAPE '\\' "
            "OR accession_number LIKE ? ESCAPE '\\')"
        )
        params += [term, term, term]
    if flt.since:
        where.append("created_at >= ?")
        params.append(flt.since)
    if flt.until:
        where.append("created_at < ?")
        params.append(flt.until)
    return where, params


def _like(text: str) -> str:
    """Text for a LIKE pattern, its wildcards escaped (ESCAPE '\\')."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_jobs(
    store: Store, flt: JobFilter | None = None, limit: int = 50, offset: int = 0
) -> list[dict[str, Any]]:
    """Jobs, newest first, matching the filter (uses the created_at/calling_ae indexes)."""
    where, params = _conditions(flt or JobFilter())
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise ValidationError("limit", f"must be 1-{MAX_LIMIT}, offset not negative")
    sql = (
        _JOB_COLUMNS
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY created_at DESC, uid DESC LIMIT ? OFFSET ?"
    )
    return store.query(sql, (*params, limit, offset))


def job_page(store: Store, flt: JobFilter, req: paging.PageRequest) -> paging.Page:
    """A page of the jobs matching the filter, newest first, with the count of them all."""
    where, params = _conditions(flt)
    listing = paging.Listing(_JOB_COLUMNS, "print_jobs", where, params, JOB_ORDER)
    return paging.fetch(store, listing, req)


def get_job(store: Store, uid: str) -> dict[str, Any]:
    """One job with its film list (film size, layout, images per film)."""
    rows = store.query("SELECT * FROM print_jobs WHERE uid = ?", (uid,))
    if not rows:
        raise NotFound(f"no print job {uid}")
    job = rows[0]
    spec = json.loads(job.pop("spec"))
    job["film_list"] = [
        {
            "film_size": f["attrs"]["FilmSizeID"],
            "orientation": f["attrs"]["FilmOrientation"],
            "layout": f["attrs"]["ImageDisplayFormat"],
            "images": len(f["boxes"]),
        }
        for f in spec["films"]
    ]
    return job


def page_preview_path(config: Config, store: Store, uid: str, page: int) -> Path:
    """The PNG preview of page ``page`` (1-based) of a job, exactly as it was sent."""
    job = get_job(store, uid)
    if not 1 <= page <= max(job["pages"], 0):
        raise NotFound(f"print job {uid} has no page {page}")
    path = _prints(config) / JOBS_DIR / uid / f"page-{page}.png"
    if not path.exists():
        raise NotFound(f"preview of page {page} of {uid} is missing")
    return path


def document_path(config: Config, store: Store, uid: str) -> Path:
    """The job's PDF, for download."""
    job = get_job(store, uid)
    if not job["document"]:
        raise NotFound(f"print job {uid} has no document yet")
    return _prints(config) / job["document"]


def printer_names(store: Store) -> list[str]:
    """Names of the printers now (the file's and the web's; the built-in folder when there
    is none), read from the database so that a web-only process sees every edit."""
    return [p.name for p in printer_list.effective(printer_list.TABLE.load(store))]


def printers(config: Config, store: Store) -> list[dict[str, Any]]:
    """Every printer with its live state (DICOM Printer Status and Status Info) and who
    manages it (``config`` / ``web``; ``builtin`` for the prints folder used when none)."""
    managed = {r["name"]: r["managed_by"] for r in printer_list.rows(store)}
    out = []
    for p in printer_list.effective(printer_list.TABLE.load(store)):
        state = output_mod.make_output(p.name, p.uri, Path(config.data_dir)).state()
        out.append(
            {"name": p.name, "uri": p.uri, "status": state.status, "info": state.info,
             "detail": state.detail, "managed_by": managed.get(p.name, "builtin")}
        )  # fmt: skip
    return out


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def reprint(config: Config, store: Store, uid: str, printer: str = "") -> str:
    """Queue the same document again, to the same printer or another; returns the new job."""
    rows = store.query("SELECT * FROM print_jobs WHERE uid = ?", (uid,))
    if not rows:
        raise NotFound(f"no print job {uid}")
    job = rows[0]
    if not job["document"]:
        raise ValidationError("uid", "the job has no document to reprint yet")
    target = printer or job["printer"]
    if target not in printer_names(store):
        raise ValidationError("printer", f"no printer named {target!r}")
    new = new_uid()
    src_dir = _prints(config) / JOBS_DIR / uid
    dst_dir = _prints(config) / JOBS_DIR / new
    dst_dir.mkdir(parents=True)
    for f in src_dir.iterdir():
        if f.suffix in (".pdf", ".png"):
            _link_or_copy(f, dst_dir / f.name)
    copied = {
        k: job[k]
        for k in ("session_uid", "calling_ae", "called_ae", "label", "priority", "copies",
                  "spec", "films", "pages", "media", "warnings", "patient_name",
                  "patient_id", "accession_number")
    }  # fmt: skip
    with store.write() as db:
        db.table("print_jobs").insert(
            {
                **copied,
                "uid": new,
                "printer": target,
                "state": "PENDING",
                "document": f"{JOBS_DIR}/{new}/document.pdf",
                "reprint_of": uid,
                "ready_at": now_iso(),
            }
        )
    return new
