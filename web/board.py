"""The schedule board: one day by room / station, live status from MPPS, search.

``?station=AE`` shows one room only (a tablet at the scanner).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any

from flask import Blueprint, current_app, jsonify, render_template, request

from appliance import devices
from appliance.worklist.repo import WorklistRepo
from web import clock, request_store

bp = Blueprint("board", __name__)

# Changes are asked for with this overlap so that a commit racing a poll is not missed;
# the page replaces rows idempotently.
POLL_OVERLAP = timedelta(seconds=2)
_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def parse_day(value: str | None) -> date:
    """The board's day from ?date=YYYY-MM-DD; today when absent or malformed."""
    if value:
        try:
            return datetime.strptime(value, "%Y-%m-%d").date()
        except ValueError:
            pass
    return clock.clinic().today()


def db_now() -> str:
    return str(
        request_store().db.execute("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')").fetchone()[0]
    )


def group_by_station(rows: list[dict[str, Any]], only: str | None = None) -> list[dict[str, Any]]:
    """Stations of role modality (in AE title order) plus any others that have steps."""
    groups: dict[str, dict[str, Any]] = {}
    for dev in devices.rows(request_store(), role="modality"):
        if only and dev["ae_title"] != only:
            continue
        groups[dev["ae_title"]] = {"station": dev, "ae_title": dev["ae_title"], "steps": []}
    for row in rows:
        group = groups.setdefault(
            row["station_ae"], {"station": None, "ae_title": row["station_ae"], "steps": []}
        )
        group["steps"].append(row)
    return list(groups.values())


@bp.get("/")
def index() -> Any:
    repo = WorklistRepo(request_store())
    day = parse_day(request.args.get("date"))
    q = request.args.get("q", "").strip()
    results = repo.search(q) if q else None
    station = request.args.get("station", "").strip() or None
    return render_template(
        "board.html",
        day=day,
        prev_day=day - timedelta(days=1),
        next_day=day + timedelta(days=1),
        groups=group_by_station(repo.list_day(day, station), station),
        station=station or "",
        stations=[d["ae_title"] for d in devices.rows(request_store(), role="modality")],
        q=q,
        results=results,
        since=db_now(),
        poll_ms=current_app.config["BOARD_POLL_MS"],
    )


@bp.get("/board/changes")
def changes() -> Any:
    """Steps changed since a stamp, each with its rendered board row for this day.

    A step changed to another day (or cancelled) comes with an empty ``html``: the page
    removes it.
    """
    day = parse_day(request.args.get("date"))
    since = request.args.get("since", "")
    if not _STAMP.match(since):
        return jsonify(error="validation", field="since", message="is not a time stamp"), 400
    asked = datetime.strptime(since[:19], "%Y-%m-%dT%H:%M:%S") - POLL_OVERLAP
    rows = WorklistRepo(request_store()).changed_since(asked.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
    latest = max([since, *(r["updated_at"] for r in rows)])
    today = day.strftime("%Y%m%d")
    only = request.args.get("station", "").strip()
    out = [
        {
            "pk": r["step_pk"],
            "station": r["station_ae"],
            "status": r["status"],
            "start": r["start_dt"],
            "html": ""
            if r["status"] == "CANCELED"
            or r["start_date"] != today
            or (only and r["station_ae"] != only)
            else render_template("_row.html", step=r),
        }
        for r in rows
    ]
    return jsonify(since=latest, rows=out)


@bp.get("/patients.json")
def patients() -> Any:
    """Patients whose name or ID contains the text (the form's 'find a patient')."""
    q = request.args.get("q", "").strip()
    if len(q) < 2:
        return jsonify(patients=[])
    rows = WorklistRepo(request_store()).find_patients(q)
    return jsonify(patients=rows)
