"""Schedule form and API input -> StepRequest, with a message per bad field.

The HTML form and the JSON API take the same field names and go through ``parse``, so
both reject the same input. Every field is checked here (all errors at once); the domain
then checks again (first error) and its ValidationError is mapped back to a field.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from appliance.errors import ValidationError
from appliance.worklist.model import PRIORITIES, SEXES, StepRequest

NAME_PARTS = (
    ("alpha", "Alphabetic"),
    ("ideo", "Ideographic (kanji)"),
    ("phon", "Phonetic (kana)"),
)
TEXT_FIELDS = (
    "patient_id",
    "patient_name",
    "birth_date",
    "sex",
    "accession_number",
    "procedure",
    "station_ae",
    "modality",
    "start",
    "referring_physician",
    "requesting_physician",
    "performing_physician",
    "priority",
    "sps_description",
) + tuple(f"name_{g}_{p}" for g, _ in NAME_PARTS for p in ("family", "given"))
# What each field is called on the form (the messages name it: "Patient ID is required.").
LABELS: dict[str, tuple[str, ...]] = {
    "patient_id": ("Patient ID",),
    "patient_name": ("Patient name",),
    "birth_date": ("Birth date",),
    "sex": ("Sex",),
    "accession_number": ("Accession number",),
    "procedure": ("Requested procedure",),
    "station_ae": ("Room / station",),
    "modality": ("Modality",),
    "start": ("Start",),
    "referring_physician": ("Referring physician",),
    "requesting_physician": ("Requesting physician",),
    "performing_physician": ("Performing physician",),
    "priority": ("Priority",),
    "sps_description": ("Step description",),
    "correction_reason": ("Reason for the correction",),
} | {
    f"name_{g}_{p}": (label, "Family name" if p == "family" else "Given name")
    for g, label in NAME_PARTS
    for p in ("family", "given")
}
_MODALITY = re.compile(r"^[A-Z0-9_]{1,16}$")

# Domain field names -> the form field that shows the message.
DOMAIN_FIELDS = {
    "requested_procedure_code": "procedure",
    "requested_procedure_description": "procedure",
    "sps_id": "accession_number",
    "requested_procedure_id": "accession_number",
    "study_instance_uid": "accession_number",
    "status": "station_ae",
}


@dataclass
class Lookups:
    """What the parser needs to know about the box: stations, catalog, patients, accessions."""

    station: Callable[[str], Mapping[str, Any] | None]
    procedure: Callable[[str], Any]  # catalog.Procedure or None
    patient: Callable[[str], Mapping[str, Any] | None] = lambda _id: None
    accession_taken: Callable[[str], bool] = lambda _acc: False


def _yes(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "on", "true", "yes")


def patient_conflict(stored: Mapping[str, Any], name: str, birth: str, sex: str) -> bool:
    """True when a known patient ID comes with another name, birth date or sex."""
    return (
        stored["name"] != name
        or bool(birth and stored["birth_date"] and birth != stored["birth_date"])
        or bool(sex and stored["sex"] and sex != stored["sex"])
    )


@dataclass
class Parsed:
    request: StepRequest | None
    errors: dict[str, str] = field(default_factory=dict)


def form_field(domain_field: str) -> str:
    """The input that shows a domain ValidationError about ``domain_field``."""
    root = domain_field.split(".")[0].split("[")[0]
    if root.startswith("protocol_codes"):
        return "procedure"
    return DOMAIN_FIELDS.get(root, root)


def compose_name(data: Mapping[str, str], errors: dict[str, str]) -> str:
    """Patient name as DICOM PN: alphabetic=ideographic=phonetic, each family^given."""
    if "patient_name" in data and not any(
        data.get(f"name_{g}_family") or data.get(f"name_{g}_given") for g, _ in NAME_PARTS
    ):
        return str(data.get("patient_name") or "").strip()
    groups = []
    for g, _ in NAME_PARTS:
        family = str(data.get(f"name_{g}_family") or "").strip()
        given = str(data.get(f"name_{g}_given") or "").strip()
        for part, value in (("family", family), ("given", given)):
            if any(c in value for c in "^=\\"):
                errors[f"name_{g}_{part}"] = "must not contain ^, = or \\"
            elif len(value) > 30:
                errors[f"name_{g}_{part}"] = "is longer than 30 characters"
        groups.append(f"{family}^{given}".rstrip("^") if given else family)
    if not any(groups):
        errors["patient_name"] = "is required"
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def split_name(pn: str) -> dict[str, str]:
    """The six name inputs of a DICOM PN (for filling the form)."""
    out: dict[str, str] = {}
    groups = (pn or "").split("=")
    for i, (g, _) in enumerate(NAME_PARTS):
        comps = groups[i].split("^") if i < len(groups) else []
        out[f"name_{g}_family"] = comps[0] if comps else ""
        out[f"name_{g}_given"] = " ".join(c for c in comps[1:] if c) if len(comps) > 1 else ""
    return out


def parse_date(value: str) -> str:
    """YYYY-MM-DD or YYYYMMDD -> YYYYMMDD; raises ValueError."""
    value = value.strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(value, fmt).strftime("%Y%m%d")
        except ValueError:
            continue
    raise ValueError(value)


def parse_start(value: str) -> datetime:
    """An HTML datetime-local value (YYYY-MM-DDTHH:MM[:SS]) or 'YYYY-MM-DD HH:MM'."""
    value = value.strip().replace(" ", "T")
    for fmt in ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            continue
    raise ValueError(value)


def _clean(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _text(errors: dict[str, str], name: str, value: str, limit: int, required: bool = False) -> str:
    if required and not value:
        errors[name] = "is required"
    elif len(value) > limit:
        errors[name] = f"is longer than {limit} characters"
    elif "\\" in value:
        errors[name] = "must not contain a backslash"
    elif any(unicodedata.category(c) == "Cc" for c in value):
        errors[name] = "contains control characters"
    return value


def parse(
    data: Mapping[str, Any],
    lookups: Lookups,
    today: date | None = None,
    new: bool = True,
    current_patient_id: str | None = None,
) -> Parsed:
    """Check every field of a schedule request; the StepRequest only when all are good.

    For a new step, the accession number must be free (a double submit cannot schedule
    twice), and a known patient ID with another name, birth date or sex is refused unless
    ``confirm_patient`` is set: the change would rename that patient everywhere. An edit
    (``new`` False) is checked the same way when it moves the step to another patient ID.
    """
    today = today or date.today()
    errors: dict[str, str] = {}
    get = {k: _clean(data.get(k)) for k in TEXT_FIELDS}
    patient_id = _text(errors, "patient_id", get["patient_id"], 64, required=True)
    patient_name = compose_name({k: v for k, v in get.items() if k in data}, errors)
    birth = ""
    if get["birth_date"]:
        try:
            birth = parse_date(get["birth_date"])
            if birth > today.strftime("%Y%m%d"):
                errors["birth_date"] = "is in the future"
        except ValueError:
            errors["birth_date"] = "is not a date"
    if get["sex"] not in SEXES:
        errors["sex"] = "must be M, F, O or empty"
    accession = _text(errors, "accession_number", get["accession_number"], 16)
    if (
        new
        and accession
        and "accession_number" not in errors
        and lookups.accession_taken(accession)
    ):
        errors["accession_number"] = "is already in use"
    check_patient = new or patient_id != current_patient_id
    if check_patient and patient_id and "patient_id" not in errors and "patient_name" not in errors:
        stored = lookups.patient(patient_id)
        if stored is not None and not _yes(data.get("confirm_patient")):
            if patient_conflict(stored, patient_name, birth, get["sex"]):
                errors["patient_id"] = "is registered with another name, birth date or sex"
    proc = None
    if not get["procedure"]:
        errors["procedure"] = "is required"
    else:
        proc = lookups.procedure(get["procedure"])
        if proc is None:
            errors["procedure"] = "is not in the catalog"
    station = None
    if not get["station_ae"]:
        errors["station_ae"] = "is required"
    else:
        station = lookups.station(get["station_ae"])
        if station is None:
            errors["station_ae"] = "is not a known station"
    modality = get["modality"].upper()
    if not modality and station is not None:
        modality = str(station.get("modality") or "")
    if not modality and proc is not None:
        modality = proc.modality
    if not modality and "station_ae" not in errors:
        errors["modality"] = "is required"
    elif modality and not _MODALITY.match(modality):
        errors["modality"] = "is not a modality code"
    start = None
    if not get["start"]:
        errors["start"] = "is required"
    else:
        try:
            start = parse_start(get["start"])
        except ValueError:
            errors["start"] = "is not a date and time"
    if get["priority"] not in PRIORITIES:
        errors["priority"] = f"must be one of {', '.join(p for p in PRIORITIES if p)}"
    for name in ("referring_physician", "requesting_physician", "performing_physician"):
        _text(errors, name, get[name], 64)
        if "=" in get[name]:
            errors[name] = "must not contain ^, = or \\"
    sps_description = _text(errors, "sps_description", get["sps_description"], 64)
    if errors or proc is None or start is None or station is None:
        return Parsed(None, errors)
    request = StepRequest(
        patient_id=patient_id,
        patient_name=patient_name,
        station_ae=str(station["ae_title"]),
        modality=modality,
        start=start,
        birth_date=birth,
        sex=get["sex"],
        accession_number=accession,
        requested_procedure_description=proc.meaning,
        requested_procedure_code=proc.code,
        protocol_codes=(proc.protocol,) if proc.protocol else (),
        sps_description=sps_description or (proc.protocol_meaning or proc.meaning),
        referring_physician=get["referring_physician"],
        requesting_physician=get["requesting_physician"],
        performing_physician=get["performing_physician"],
        priority=get["priority"],
    )
    return Parsed(request, errors)


SLOT_MINUTES = 15  # the schedule's grid: one step per station per slot
DAY_HOURS = (8, 18)  # the first slot of a day, and the hour no slot starts at or after
SLOT_SEARCH_DAYS = 14


def next_free_slot(taken: list[datetime], after: datetime) -> datetime | None:
    """The first slot at or after ``after`` (on the grid, in opening hours) that no step
    starts within SLOT_MINUTES of; None when the next SLOT_SEARCH_DAYS are full."""
    step = timedelta(minutes=SLOT_MINUTES)
    at = after.replace(second=0, microsecond=0)
    if at < after:
        at += timedelta(minutes=1)
    if at.minute % SLOT_MINUTES:
        at += timedelta(minutes=SLOT_MINUTES - at.minute % SLOT_MINUTES)
    end = after + timedelta(days=SLOT_SEARCH_DAYS)
    taken = sorted(taken)
    while at < end:
        if at.hour < DAY_HOURS[0]:
            at = at.replace(hour=DAY_HOURS[0], minute=0)
        if at.hour >= DAY_HOURS[1]:
            at = (at + timedelta(days=1)).replace(hour=DAY_HOURS[0], minute=0)
            continue
        if all(abs(t - at) >= step for t in taken):
            return at
        at += step
    return None


def domain_error(exc: ValidationError) -> dict[str, str]:
    """A domain ValidationError as {form field: message}."""
    return {form_field(exc.field): exc.reason}


def values_of(row: Mapping[str, Any]) -> dict[str, str]:
    """Form values of a stored step (for the edit form)."""
    code = json.loads(row["procedure_code"]) if row.get("procedure_code") else {}
    start = datetime.strptime(row["start_dt"], "%Y%m%d%H%M%S")
    birth = row.get("birth_date") or ""
    out = {
        "patient_id": row["patient_id"],
        "birth_date": f"{birth[:4]}-{birth[4:6]}-{birth[6:8]}" if len(birth) == 8 else "",
        "sex": row.get("sex") or "",
        "accession_number": row["accession_number"],
        "procedure": code.get("CodeValue", ""),
        "station_ae": row["station_ae"],
        "modality": row["modality"],
        "start": start.strftime("%Y-%m-%dT%H:%M"),
        "referring_physician": row.get("referring_physician") or "",
        "requesting_physician": row.get("requesting_physician") or "",
        "performing_physician": row.get("performing_physician") or "",
        "priority": row.get("priority") or "",
        "sps_description": row.get("sps_description") or "",
    }
    out.update(split_name(row["patient_name"]))
    return out
