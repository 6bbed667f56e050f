"""Scheduled procedure steps as plain data: the request to schedule, validation, MWL items.

Pure: no database, no network. An *item* is the Modality Worklist item a modality
receives (PS3.4 Table K.6-1) as a dict of DICOM keyword -> value, where a value is a
``str`` (multi-values joined by backslash, PN with its ``=`` component groups), an
``int`` (US), or a list of such dicts (sequences).
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from appliance import identifiers
from appliance.errors import ValidationError

Item = dict[str, Any]

STATUSES = ("SCHEDULED", "ARRIVED", "READY", "STARTED", "COMPLETED", "DISCONTINUED", "CANCELED")
FINAL_STATUSES = ("COMPLETED", "DISCONTINUED", "CANCELED")
PRIORITIES = ("", "STAT", "HIGH", "ROUTINE", "MEDIUM", "LOW")
SEXES = ("", "M", "F", "O")

# Keys a modality may ask for at the top level and inside the SPS Sequence (PS3.4 K.6-1).
TOP_KEYS = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientWeight",
    "PatientSize",
    "OtherPatientIDsSequence",
    "ConfidentialityConstraintOnPatientDataDescription",
    "PatientState",
    "PregnancyStatus",
    "MedicalAlerts",
    "Allergies",
    "SpecialNeeds",
    "PatientComments",
    "EthnicGroup",
    "AdditionalPatientHistory",
    "AdmissionID",
    "CurrentPatientLocation",
    "ReferencedPatientSequence",
    "InstitutionName",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "ReferringPhysicianName",
    "RequestingPhysician",
    "RequestingService",
    "ImagingServiceRequestComments",
    "ReasonForTheImagingServiceRequest",
    "RequestedProcedureID",
    "RequestedProcedureDescription",
    "RequestedProcedureCodeSequence",
    "StudyInstanceUID",
    "ReferencedStudySequence",
    "RequestedProcedurePriority",
    "PatientTransportArrangements",
    "ReasonForTheRequestedProcedure",
    "RequestedProcedureLocation",
    "NamesOfIntendedRecipientsOfResults",
    "ScheduledProcedureStepSequence",
)
SPS_KEYS = (
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepEndDate",
    "ScheduledProcedureStepEndTime",
    "Modality",
    "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription",
    "ScheduledProtocolCodeSequence",
    "ScheduledProcedureStepID",
    "ScheduledStationName",
    "ScheduledProcedureStepLocation",
    "PreMedication",
    "ScheduledProcedureStepStatus",
    "RequestedContrastAgent",
    "CommentsOnTheScheduledProcedureStep",
)
CODE_KEYS = ("CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning")

# Type 1 return keys of PS3.4 Table K.6-1: present and non-empty in every stored item.
REQUIRED_TOP = (
    "PatientName",
    "PatientID",
    "StudyInstanceUID",
    "RequestedProcedureID",
    "AccessionNumber",
)
REQUIRED_SPS = (
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "Modality",
    "ScheduledProcedureStepID",
)

_DA = re.compile(r"^\d{8}$")
_TM = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_CS = re.compile(r"^[A-Z0-9_ ]{0,16}$")


@dataclass(frozen=True)
class Code:
    """A coded entry (Code Value, Coding Scheme Designator, Code Meaning)."""

    value: str
    scheme: str
    meaning: str

    def to_item(self) -> Item:
        return {
            "CodeValue": self.value,
            "CodingSchemeDesignator": self.scheme,
            "CodeMeaning": self.meaning,
        }


@dataclass(frozen=True)
class StepRequest:
    """Everything needed to schedule one procedure step (what the web form and importers fill)."""

    patient_id: str
    patient_name: str
    station_ae: str
    modality: str
    start: datetime
    birth_date: str = ""
    sex: str = ""
    issuer_of_patient_id: str = ""
    accession_number: str = ""
    requested_procedure_id: str = ""
    requested_procedure_description: str = ""
    requested_procedure_code: Code | None = None
    study_instance_uid: str = ""
    referring_physician: str = ""
    requesting_physician: str = ""
    priority: str = ""
    sps_id: str = ""
    sps_description: str = ""
    protocol_codes: tuple[Code, ...] = ()
    station_name: str = ""
    location: str = ""
    performing_physician: str = ""
    status: str = "SCHEDULED"
    patient_extra: Item = field(default_factory=dict)
    procedure_extra: Item = field(default_factory=dict)
    step_extra: Item = field(default_factory=dict)

    def replace(self, **changes: Any) -> StepRequest:
        return dataclasses.replace(self, **changes)


def check_length(value: str, name: str, limit: int) -> None:
    if len(value) > limit:
        raise ValidationError(name, f"is longer than {limit} characters")


def validate_pn(value: str, name: str, required: bool = False) -> str:
    """PN: up to three component groups of up to five components, 64 characters each."""
    value = value.strip()
    if required and not value.replace("^", "").replace("=", "").strip():
        raise ValidationError(name, "is required")
    if "\\" in value:
        raise ValidationError(name, "must be a single name (no backslash)")
    groups = value.split("=")
    if len(groups) > 3:
        raise ValidationError(
            name, "has more than three component groups (alphabetic=ideographic=phonetic)"
        )
    for g in groups:
        if len(g.split("^")) > 5:
            raise ValidationError(name, "has more than five components in a group")
        check_length(g, name, 64)
        if any(unicodedata.category(c) == "Cc" for c in g):
            raise ValidationError(name, "contains control characters")
    return value


def validate_uid(value: str, name: str) -> str:
    if not identifiers.is_uid(value, strict=True):
        raise ValidationError(name, f"{value!r} is not a valid UID (digits and dots, at most 64)")
    return value


def validate_text(value: str, name: str, limit: int, required: bool = False) -> str:
    value = value.strip()
    if required and not value:
        raise ValidationError(name, "is required")
    check_length(value, name, limit)
    if "\\" in value:
        raise ValidationError(name, "must not contain a backslash")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ValidationError(name, "contains control characters")
    return value


def validate_date(value: str, name: str) -> str:
    value = value.strip()
    if not value:
        return value
    if not _DA.match(value):
        raise ValidationError(name, f"{value!r} is not a date YYYYMMDD")
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError as exc:
        raise ValidationError(name, f"{value!r} is not a calendar date") from exc
    return value


def validate_request(req: StepRequest) -> StepRequest:
    """Check every field; raise ValidationError naming the first bad one."""
    problem = identifiers.ae_title_problem(req.station_ae)
    if problem is not None:
        raise ValidationError("station_ae", problem)
    station = req.station_ae.strip(" ")
    modality = req.modality.strip().upper()
    if not modality or not _CS.match(modality):
        raise ValidationError("modality", "must be a modality code such as CT, MR, US, CR, DX")
    if req.sex not in SEXES:
        raise ValidationError("sex", "must be M, F, O or empty")
    if req.priority not in PRIORITIES:
        raise ValidationError("priority", f"must be one of {', '.join(p for p in PRIORITIES if p)}")
    if req.status not in STATUSES:
        raise ValidationError("status", f"must be one of {', '.join(STATUSES)}")
    out = req.replace(
        patient_id=validate_text(req.patient_id, "patient_id", 64, required=True),
        patient_name=validate_pn(req.patient_name, "patient_name", required=True),
        issuer_of_patient_id=validate_text(req.issuer_of_patient_id, "issuer_of_patient_id", 64),
        birth_date=validate_date(req.birth_date, "birth_date"),
        accession_number=validate_text(req.accession_number, "accession_number", 16),
        requested_procedure_id=validate_text(
            req.requested_procedure_id, "requested_procedure_id", 16
        ),
        requested_procedure_description=validate_text(
            req.requested_procedure_description, "requested_procedure_description", 64
        ),
        referring_physician=validate_pn(req.referring_physician, "referring_physician"),
        requesting_physician=validate_pn(req.requesting_physician, "requesting_physician"),
        sps_id=validate_text(req.sps_id, "sps_id", 16),
        sps_description=validate_text(req.sps_description, "sps_description", 64),
        station_name=validate_text(req.station_name, "station_name", 16),
        location=validate_text(req.location, "location", 16),
        performing_physician=validate_pn(req.performing_physician, "performing_physician"),
        station_ae=station,
        modality=modality,
    )
    if out.study_instance_uid:
        validate_uid(out.study_instance_uid, "study_instance_uid")
    for i, code in enumerate((out.requested_procedure_code, *out.protocol_codes)):
        if code is None:
            continue
        where = "requested_procedure_code" if i == 0 else f"protocol_codes[{i - 1}]"
        validate_text(code.value, f"{where}.value", 16, required=True)
        validate_text(code.scheme, f"{where}.scheme", 16, required=True)
        validate_text(code.meaning, f"{where}.meaning", 64, required=True)
    if out.start.year < 1900:
        raise ValidationError("start", "is not a plausible date")
    return out


def fold(text: str) -> str:
    """Case- and accent-insensitive form of text, for name matching (NFKD, marks removed)."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFKC", stripped).casefold()


def name_key(pn: str) -> str:
    """The stored search key of a person name: folded, groups kept apart by '='."""
    return fold(pn)


def dt_key(date: str, time: str) -> str:
    """The combined start date-time YYYYMMDDHHMMSS that the SQL index is built on."""
    digits = re.sub(r"[^0-9]", "", time.split(".")[0])
    return date + (digits + "000000")[:6]


def check_item(item: Item) -> None:
    """Every Type 1 return key of PS3.4 K.6-1 is present and non-empty (raises ValidationError)."""
    for key in REQUIRED_TOP:
        if not str(item.get(key, "")).strip():
            raise ValidationError(key, "is required (Type 1 return key of the worklist)")
    sps = item.get("ScheduledProcedureStepSequence") or []
    if len(sps) != 1:
        raise ValidationError("ScheduledProcedureStepSequence", "must hold exactly one item")
    for key in REQUIRED_SPS:
        if not str(sps[0].get(key, "")).strip():
            raise ValidationError(f"ScheduledProcedureStepSequence.{key}", "is required")
    validate_uid(str(item["StudyInstanceUID"]), "StudyInstanceUID")
    if not _TM.match(str(sps[0]["ScheduledProcedureStepStartTime"])):
        raise ValidationError(
            "ScheduledProcedureStepSequence.ScheduledProcedureStepStartTime", "is not HHMM[SS]"
        )
    validate_date(
        str(sps[0]["ScheduledProcedureStepStartDate"]),
        "ScheduledProcedureStepSequence.ScheduledProcedureStepStartDate",
    )
