"""Help: a short text per page (English and Japanese, in web/i18n.py), served at /help,
and the header's help link of every page pointing at the text of that page."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request, url_for

bp = Blueprint("help", __name__)

# (topic, title, text): one per page group, in menu order.
TOPICS: list[tuple[str, str, str]] = [
    (
        "board",
        "Schedule board",
        "One day of procedures by room. It updates by itself from the modalities' MPPS "
        "(scheduled, started, completed); a red banner says when it has lost the appliance. "
        "Search finds a patient by name (also kana), patient ID or accession number; the "
        "search is in the address, so Back and a shared link keep it.",
    ),
    (
        "schedule",
        "Schedule form",
        "Fields marked * are required. Start is empty until you choose it: after choosing the "
        "room, the button offers its next free 15-minute slot. The accession number is "
        "assigned when saved. A completed or discontinued procedure opens read-only; Correct "
        "changes its record and asks for a reason, which goes to the audit log.",
    ),
    (
        "prints",
        "Print history",
        "Every film the modalities printed, newest first, with its state; a job page shows "
        "its pages and can print it again. Dates are the clinic's days.",
    ),
    (
        "printers",
        "Printers",
        "Where films are printed: the printers of the configuration file.",
    ),
    (
        "devices",
        "Devices",
        "The modalities and peers allowed to talk to the appliance, by AE title (at most 16 "
        "characters). C-ECHO tests that a device answers at its host and port.",
    ),
    (
        "users",
        "Users",
        "Who may sign in: front desk (board and schedule) or admin (also these pages). API "
        "tokens let other programs use /api/v1/.",
    ),
    (
        "catalog",
        "Procedure catalog",
        "The procedures the schedule form offers. Import a CSV file (UTF-8 or Excel's "
        "Shift_JIS) with the header row code_value,scheme,meaning,...; a bad line is named "
        "and nothing is imported.",
    ),
    (
        "audit",
        "Audit log",
        "Who did what and when: sign-ins, schedule changes and corrections, worklist "
        "queries, MPPS, refused associations. Filter by action.",
    ),
    (
        "destinations",
        "Destinations and queues",
        "The PACS images are forwarded to, what waits for each and why, images no "
        "destination takes (send them later), and those that could not be sent.",
    ),
    ("hl7", "HL7", "Orders received from the RIS over HL7 (MLLP) and the answer each got."),
    (
        "backup",
        "Backup",
        "Download the database, print jobs and certificates as one file; restore on the "
        "box with appliance restore FILE.",
    ),
    (
        "health",
        "Service health",
        "Each service of the appliance and its state, the last errors, what waits in the "
        "queues, the data folder's free disk space and the TLS certificate's fingerprint "
        "(compare it with what a modality shows). The page refreshes itself.",
    ),
    ("account", "My account", "Your password, language and API tokens."),
    (
        "clock",
        "Times",
        "Every time is shown in the clinic's time zone, named at the foot of each page "
        "beside the appliance's own clock. A red banner warns when this computer's clock "
        "differs from the appliance's by more than 2 minutes.",
    ),
]

# Endpoint (or blueprint) -> topic.
PAGES = {
    "board": "board",
    "steps": "schedule",
    "prints.printers": "printers",
    "prints": "prints",
    "admin.devices": "devices",
    "admin.device_new": "devices",
    "admin.device_edit": "devices",
    "admin.users": "users",
    "admin.catalog": "catalog",
    "admin.audit": "audit",
    "admin.backup": "backup",
    "queues": "destinations",
    "destinations": "destinations",
    "hl7": "hl7",
    "health": "health",
    "auth.account": "account",
    "help": "clock",
}


def topic_of(endpoint: str | None) -> str:
    """The help topic of a page's endpoint ('' when it has none)."""
    if not endpoint:
        return ""
    return PAGES.get(endpoint) or PAGES.get(endpoint.split(".")[0], "")


@bp.app_context_processor
def _help_link() -> dict[str, Any]:
    topic = topic_of(request.endpoint)
    return {"help_url": url_for("help.index", _anchor=f"help-{topic}" if topic else None)}


@bp.get("/help")
def index() -> Any:
    return render_template("help.html", topics=TOPICS)
