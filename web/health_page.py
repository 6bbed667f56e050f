"""The service health page: what /healthz and ``appliance status`` know, in words, for
every signed-in user: each service and its state, the last errors, what waits in the
queues, the data folder's disk and the TLS certificate's fingerprint."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, current_app, render_template

from web import gettext, runtime

bp = Blueprint("health", __name__)

SERVICES = {
    "dicom": "DICOM listener",
    "dicom_tls": "DICOM over TLS",
    "worklist": "Worklist and MPPS",
    "print": "Print",
    "forward": "Store and forward",
    "qr": "Query/Retrieve",
    "hl7": "HL7 orders",
    "web": "Web server",
    "database": "Database",
}
WORDS = {
    "ae_title": "AE title",
    "port": "Port",
    "associations": "Associations",
    "fingerprint_sha256": "Certificate fingerprint (SHA-256)",
    "queries": "Queries since start",
    "last_query_s_ago": "Last query",
    "queued": "Jobs queued",
    "jobs": "Jobs by state",
    "printers": "Printers",
    "spool_free_mb": "Spool free space",
    "received_since_start": "Images received since start",
    "destinations": "Destinations",
    "unrouted": "Images no destination takes",
    "waiting": "Waiting",
    "held": "Held",
    "dead": "Could not be sent",
    "delivered": "Delivered",
    "delivered_last_minute": "Delivered in the last minute",
    "oldest_waiting_s": "Oldest waiting for",
    "stalled_s": "No progress for",
    "last_error": "Last error",
    "error": "Error",
    "commitment": "Storage commitment",
    "retention": "Spool clean-up",
    "pending": "Connections not yet associated",
    "addresses": "Addresses connected",
    "deleted_since_start": "Deleted since start",
    "freed_mb": "Freed",
    "find": "C-FIND requests",
    "move": "C-MOVE requests",
    "get": "C-GET requests",
    "size_mb": "Size",
    "last_backup_s_ago": "Last backup",
}
HEALTHY = ("running", "not in this process")


@dataclass
class Line:
    """One fact about a service, in words; ``lines`` for a group (one destination)."""

    label: str
    value: str = ""
    lines: list[Line] = field(default_factory=list)


@dataclass
class Part:
    key: str
    name: str
    state: str
    ok: bool
    lines: list[Line]


def _key(key: str) -> str:
    return gettext(WORDS.get(key, key.replace("_", " ").capitalize()))


def duration(seconds: float) -> str:
    """Seconds in words: '45 s', '12 min', '3 h 5 min', '2 d 4 h'."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def value_words(key: str, value: Any) -> str:
    """A health value for people: durations, sizes, lists and yes/no in words."""
    if key == "last_backup_s_ago" and value is None:
        return gettext("never")
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return gettext("yes" if value else "no")
    if isinstance(value, int | float) and key.endswith("_s_ago"):
        return gettext("%(t)s ago", t=duration(value))
    if isinstance(value, int | float) and key.endswith("_s"):
        return duration(value)
    if isinstance(value, int | float) and key.endswith("_mb"):
        return f"{value:,} MB"
    if isinstance(value, list):
        if not value:
            return gettext("none")
        return "; ".join(value_words(key, v) for v in value)
    if isinstance(value, dict):
        shown = [(k, v) for k, v in value.items() if v not in (None, "", [], {})]
        return ", ".join(f"{_key(k)}: {value_words(k, v)}" for k, v in shown) or "—"
    return str(value)


def lines_of(part: dict[str, Any]) -> list[Line]:
    out = []
    for key, value in part.items():
        if key == "state":
            continue
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            group = [Line(name, lines=lines_of(sub)) for name, sub in value.items()]
            out.append(Line(_key(key), lines=group))
        else:
            out.append(Line(_key(key), value_words(key, value)))
    return out


def errors_of(name: str, part: Any, where: str = "") -> list[tuple[str, str]]:
    """Every non-empty error in a service's report: (where, text)."""
    found: list[tuple[str, str]] = []
    if isinstance(part, dict):
        for key, value in part.items():
            if "error" in key and isinstance(value, str) and value:
                found.append((where or name, value))
            elif isinstance(value, dict | list):
                found += errors_of(name, value, f"{where or name} · {key}")
    elif isinstance(part, list):
        for item in part:
            found += errors_of(name, item, where)
    state = part.get("state") if isinstance(part, dict) else None
    if not where and isinstance(state, str) and state not in HEALTHY:
        found.insert(0, (name, state))
    return found


def disk(path: Any) -> dict[str, Any] | None:
    """The data folder's disk: free and total bytes, None when it cannot be read."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return {"free": usage.free, "total": usage.total, "pct": round(100 * usage.free / usage.total)}


@bp.get("/health")
def index() -> Any:
    health: Callable[[], dict[str, Any]] | None = current_app.extensions.get("health")
    report: dict[str, Any] = health() if health is not None else {"status": "ok", "services": {}}
    parts = []
    errors: list[tuple[str, str]] = []
    for key, part in report.get("services", {}).items():
        name = gettext(SERVICES.get(key, key))
        state = str(part.get("state", "unknown"))
        parts.append(Part(key, name, state, state in HEALTHY, lines_of(part)))
        errors += errors_of(name, part)
    data_dir = runtime().config.data_dir
    return render_template(
        "health.html",
        report=report,
        parts=parts,
        errors=errors,
        uptime=duration(report.get("uptime_s") or 0),
        disk=disk(data_dir),
        data_dir=data_dir,
    )
