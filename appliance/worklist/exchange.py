"""Worklist import and export: DICOM JSON (PS3.18 Annex F) and CSV.

JSON: a list of objects in the DICOM JSON Model, one per scheduled step, each the MWL
item a modality receives (what DICOMweb and pydicom's ``Dataset.to_json_dict`` write),
so a list exported from another worklist server imports as it is.

CSV: one row per scheduled step with the columns in ``CSV_COLUMNS`` (documented in
docs/worklist-import.md). Bad records are reported by position with the reason; good
ones are kept.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from appliance.errors import ApplianceError, ValidationError
from appliance.worklist.matching import item_dataset
from appliance.worklist.model import Code, Item, StepRequest, check_item
from appliance.worklist.repo import STEP_COLUMNS, STEP_FROM, WorklistRepo, row_to_item

CSV_COLUMNS = (
    "patient_id", "patient_name", "birth_date", "sex", "accession_number", "requested_procedure_id",
    "requested_procedure_description", "procedure_code", "study_instance_uid", "referring_physician",
    "requesting_physician", "priority", "station_ae", "station_name", "modality", "start", "sps_id",
    "sps_description", "protocol_code", "performing_physician", "location",
)  # fmt: skip
CSV_REQUIRED = ("patient_id", "patient_name", "station_ae", "modality", "start")

# Item keys that map to StepRequest fields; everything else is kept as extra attributes.
_MODELLED_TOP = {
    "SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "AccessionNumber", "RequestedProcedureID", "RequestedProcedureDescription", "RequestedProcedureCodeSequence",
    "StudyInstanceUID", "ReferringPhysicianName", "RequestingPhysician", "RequestedProcedurePriority",
    "ScheduledProcedureStepSequence",
}  # fmt: skip
_MODELLED_SPS = {
    "ScheduledStationAETitle", "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime", "Modality",
    "ScheduledProcedureStepID", "ScheduledProcedureStepDescription", "ScheduledProtocolCodeSequence",
    "ScheduledStationName", "ScheduledProcedureStepLocation", "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepStatus",
}  # fmt: skip


@dataclass
class ImportReport:
    """What an import did: how many steps were scheduled, and each bad record's reason."""

    scheduled: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        steps = "step" if self.scheduled == 1 else "steps"
        refused = "record" if len(self.errors) == 1 else "records"
        out = [f"scheduled {self.scheduled} {steps}, {len(self.errors)} {refused} refused"]
        out += [f"record {pos}: {reason}" for pos, reason in self.errors]
        return out


def _value(value: Any) -> Any:
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        raise ValidationError("value", "binary values are not worklist attributes")
    return value


def dataset_to_item(ds: Dataset) -> Item:
    """A pydicom Dataset (decoded) as an item dict of keyword -> value."""
    item: Item = {}
    for elem in ds:
        if not elem.keyword or elem.tag.group in (0x0000, 0x0002) or elem.tag.is_private:
            continue
        if elem.VR == "SQ":
            item[elem.keyword] = [dataset_to_item(sub) for sub in elem.value]
        elif elem.value is None:
            item[elem.keyword] = ""
        elif elem.VR in ("DS", "IS") and not isinstance(elem.value, MultiValue):
            item[elem.keyword] = str(elem.value)  # decimal strings stay strings
        else:
            item[elem.keyword] = _value(elem.value)
    return item


def _code(items: list[Item] | None, where: str) -> Code | None:
    if not items:
        return None
    first = items[0]
    code = Code(str(first.get("CodeValue", "")), str(first.get("CodingSchemeDesignator", "")),
                str(first.get("CodeMeaning", "")))  # fmt: skip
    if not code.value:
        raise ValidationError(f"{where}.CodeValue", "is required in a code item")
    return code


def _start(date_s: str, time_s: str) -> datetime:
    digits = "".join(c for c in time_s.split(".")[0] if c.isdigit())
    try:
        return datetime.strptime(date_s + (digits + "000000")[:6], "%Y%m%d%H%M%S")
    except ValueError as exc:
        raise ValidationError(
            "ScheduledProcedureStepStartDate", f"{date_s} {time_s} is not a date-time"
        ) from exc


def item_to_request(item: Item) -> StepRequest:
    """The StepRequest for an MWL item, keeping attributes the model does not know as extras."""
    check_item(item)
    sps = item["ScheduledProcedureStepSequence"][0]
    status = str(sps.get("ScheduledProcedureStepStatus") or "SCHEDULED")
    return StepRequest(
        patient_id=str(item["PatientID"]),
        patient_name=str(item["PatientName"]),
        issuer_of_patient_id=str(item.get("IssuerOfPatientID", "")),
        birth_date=str(item.get("PatientBirthDate", "")),
        sex=str(item.get("PatientSex", "")),
        accession_number=str(item.get("AccessionNumber", "")),
        requested_procedure_id=str(item.get("RequestedProcedureID", "")),
        requested_procedure_description=str(item.get("RequestedProcedureDescription", "")),
        requested_procedure_code=_code(
            item.get("RequestedProcedureCodeSequence"), "RequestedProcedureCodeSequence"
        ),
        study_instance_uid=str(item.get("StudyInstanceUID", "")),
        referring_physician=str(item.get("ReferringPhysicianName", "")),
        requesting_physician=str(item.get("RequestingPhysician", "")),
        priority=str(item.get("RequestedProcedurePriority", "")).upper(),
        station_ae=str(sps["ScheduledStationAETitle"]),
        modality=str(sps["Modality"]),
        start=_start(
            str(sps["ScheduledProcedureStepStartDate"]), str(sps["ScheduledProcedureStepStartTime"])
        ),
        sps_id=str(sps.get("ScheduledProcedureStepID", "")),
        sps_description=str(sps.get("ScheduledProcedureStepDescription", "")),
        protocol_codes=tuple(
            c
            for c in (
                _code([x], "ScheduledProtocolCodeSequence")
                for x in sps.get("ScheduledProtocolCodeSequence", [])
            )
            if c
        ),  # fmt: skip
        station_name=str(sps.get("ScheduledStationName", "")),
        location=str(sps.get("ScheduledProcedureStepLocation", "")),
        performing_physician=str(sps.get("ScheduledPerformingPhysicianName", "")),
        status=status if status in ("SCHEDULED", "ARRIVED", "READY") else "SCHEDULED",
        procedure_extra={k: v for k, v in item.items() if k not in _MODELLED_TOP},
        step_extra={k: v for k, v in sps.items() if k not in _MODELLED_SPS},
    )


def _schedule_each(
    repo: WorklistRepo, records: Iterable[tuple[int, Any]], actor: str
) -> ImportReport:
    report = ImportReport()
    for pos, build in records:
        try:
            repo.schedule(build(), actor=actor, source="import")
        except ApplianceError as exc:
            report.errors.append((pos, str(exc)))
        except (ValueError, KeyError, TypeError) as exc:
            report.errors.append((pos, f"unreadable record: {exc}"))
        else:
            report.scheduled += 1
    return report


def import_json(repo: WorklistRepo, text: str, actor: str = "import") -> ImportReport:
    """Schedule every object of a DICOM JSON list (or a single object); positions start at 1."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError("file", f"is not JSON: {exc}") from exc
    objects = data if isinstance(data, list) else [data]

    def builder(obj: Any) -> Any:
        def build() -> StepRequest:
            if not isinstance(obj, dict):
                raise ValidationError("record", "is not a JSON object")
            return item_to_request(dataset_to_item(Dataset.from_json(obj)))

        return build

    return _schedule_each(repo, ((i, builder(o)) for i, o in enumerate(objects, 1)), actor)


def _split_code(text: str, where: str) -> Code | None:
    text = text.strip()
    if not text:
        return None
    parts = text.split("^")
    if len(parts) != 3:
        raise ValidationError(where, "must be VALUE^SCHEME^MEANING")
    return Code(*parts)


def _csv_request(row: dict[str, str]) -> StepRequest:
    for name in CSV_REQUIRED:
        if not (row.get(name) or "").strip():
            raise ValidationError(name, "is required")
    try:
        start = datetime.fromisoformat(row["start"].strip().replace(" ", "T"))
    except ValueError as exc:
        raise ValidationError("start", f"{row['start']!r} is not YYYY-MM-DD HH:MM") from exc
    code = _split_code(row.get("procedure_code") or "", "procedure_code")
    protocol = _split_code(row.get("protocol_code") or "", "protocol_code")
    return StepRequest(
        patient_id=row["patient_id"], patient_name=row["patient_name"], birth_date=row.get("birth_date") or "",
        sex=(row.get("sex") or "").upper(), accession_number=row.get("accession_number") or "",
        requested_procedure_id=row.get("requested_procedure_id") or "",
        requested_procedure_description=row.get("requested_procedure_description") or "",
        requested_procedure_code=code, study_instance_uid=row.get("study_instance_uid") or "",
        referring_physician=row.get("referring_physician") or "",
        requesting_physician=row.get("requesting_physician") or "",
        priority=(row.get("priority") or "").upper(), station_ae=row["station_ae"],
        station_name=row.get("station_name") or "", modality=row["modality"], start=start,
        sps_id=row.get("sps_id") or "", sps_description=row.get("sps_description") or "",
        protocol_codes=(protocol,) if protocol else (), performing_physician=row.get("performing_physician") or "",
        location=row.get("location") or "",
    )  # fmt: skip


def import_csv(repo: WorklistRepo, text: str, actor: str = "import") -> ImportReport:
    """Schedule every row of a CSV file with a header row; positions are line numbers."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    unknown = [c for c in reader.fieldnames or [] if c not in CSV_COLUMNS]
    if unknown:
        raise ValidationError(
            unknown[0], f"is not a known column (known: {', '.join(CSV_COLUMNS)})"
        )
    return _schedule_each(
        repo, ((reader.line_num, lambda r=row: _csv_request(r)) for row in reader), actor
    )


def _rows(repo: WorklistRepo, first: date | None, last: date | None) -> Iterator[dict[str, Any]]:
    sql = "SELECT * FROM (SELECT {cols} {frm}) WHERE status != 'CANCELED'"
    params: list[str] = []
    if first:
        sql += " AND start_date >= ?"
        params.append(first.strftime("%Y%m%d"))
    if last:
        sql += " AND start_date <= ?"
        params.append(last.strftime("%Y%m%d"))
    yield from repo.store.query(
        sql.format(cols=STEP_COLUMNS, frm=STEP_FROM) + " ORDER BY start_dt", tuple(params)
    )


def export_json(repo: WorklistRepo, first: date | None = None, last: date | None = None) -> str:
    """The scheduled steps as a DICOM JSON list of MWL items."""
    out = []
    for row in _rows(repo, first, last):
        ds = item_dataset({k: v for k, v in row_to_item(row).items() if v not in ("", [], None)})
        ds.SpecificCharacterSet = "ISO_IR 192"
        out.append(ds.to_json_dict())
    return json.dumps(out, ensure_ascii=False, indent=1)


def _join_code(code_json: str) -> str:
    if not code_json:
        return ""
    c = json.loads(code_json)
    return (
        f"{c.get('CodeValue', '')}^{c.get('CodingSchemeDesignator', '')}^{c.get('CodeMeaning', '')}"
    )


def export_csv(repo: WorklistRepo, first: date | None = None, last: date | None = None) -> str:
    """The scheduled steps as CSV with the documented columns."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in _rows(repo, first, last):
        protocols = json.loads(r["protocol"] or "[]")
        start = datetime.strptime(r["start_dt"], "%Y%m%d%H%M%S")
        writer.writerow({
            "patient_id": r["patient_id"], "patient_name": r["patient_name"], "birth_date": r["birth_date"],
            "sex": r["sex"], "accession_number": r["accession_number"],
            "requested_procedure_id": r["requested_procedure_id"],
            "requested_procedure_description": r["procedure_description"],
            "procedure_code": _join_code(r["procedure_code"]), "study_instance_uid": r["study_instance_uid"],
            "referring_physician": r["referring_physician"], "requesting_physician": r["requesting_physician"],
            "priority": r["priority"], "station_ae": r["station_ae"], "station_name": r["station_name"],
            "modality": r["modality"], "start": start.strftime("%Y-%m-%d %H:%M:%S"), "sps_id": r["sps_id"],
            "sps_description": r["sps_description"],
            "protocol_code": _join_code(json.dumps(protocols[0])) if protocols else "",
            "performing_physician": r["performing_physician"], "location": r["location"],
        })  # fmt: skip
    return buf.getvalue()
