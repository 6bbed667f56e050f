"""ORM^O01 / OMI^O23 orders as worklist changes (the table in docs/hl7.md).

Pure: the catalog and the station table are passed in as functions. Each ORC group of a
message (ORC with the TQ1, OBR, IPC and ZDS segments that follow it) becomes one ``Order``;
an error names the field as an ERR-2 location (HL7 v2.5.1 2.15.5.2) with a Table 0357 code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import hl7

from appliance.catalog import Procedure
from appliance.errors import ApplianceError
from appliance.worklist.model import Code, StepRequest, validate_uid

# HL7 Table 0357 (message error condition codes).
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT_CODE = "201"
UNSUPPORTED_VERSION = "203"
UNKNOWN_KEY = "204"
DUPLICATE_KEY = "205"
INTERNAL_ERROR = "207"
ERROR_TEXT = {
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    TABLE_VALUE_NOT_FOUND: "Table value not found",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    UNSUPPORTED_VERSION: "Unsupported version id",
    UNKNOWN_KEY: "Unknown key identifier",
    DUPLICATE_KEY: "Duplicate key identifier",
    INTERNAL_ERROR: "Application internal error",
}

MESSAGE_TYPES = {("ORM", "O01"), ("OMI", "O23")}
ORDER_CONTROLS = ("NW", "XO", "CA", "DC", "SC")
# ORC-5 (Table 0038) of an SC message -> step status.
ORDER_STATUSES = {
    "SC": "SCHEDULED",
    "IP": "STARTED",
    "CM": "COMPLETED",
    "DC": "DISCONTINUED",
    "CA": "CANCELED",
}
# TQ1-9 / TQ-6 priority (Table 0485) -> Requested Procedure Priority (PS3.3 C.4.11).
PRIORITIES = {"S": "STAT", "A": "HIGH", "R": "ROUTINE", "P": "MEDIUM", "T": "MEDIUM", "C": "LOW"}
SEXES = {"M": "M", "F": "F", "O": "O", "A": "O", "U": "", "N": "", "": ""}
_DTM = re.compile(r"^(\d{8})(\d{2})?(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4})?$")


# HL7 v2.5.1 2.7.4: the delimiters in text, written as escape sequences (escape first).
_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))


def escape(text: str) -> str:
    """Text as field content with the default delimiters ``|^~\\&`` escaped; other
    characters stay as they are (python-hl7's ``escape`` writes non-ASCII as hex)."""
    for char, sequence in _ESCAPES:
        text = text.replace(char, sequence)
    return text.replace("\r", " ").replace("\n", " ")


@dataclass(frozen=True)
class Location:
    """ERR-2 Error Location (ERL): segment ID ^ sequence ^ field ^ repetition ^ component."""

    segment: str
    sequence: int = 1
    field: int = 0
    component: int = 0

    def __str__(self) -> str:
        parts = [self.segment, str(self.sequence)]
        if self.field:
            parts.append(str(self.field))
            if self.component:
                parts += ["1", str(self.component)]
        return "^".join(parts)


class OrderError(ApplianceError):
    """A message that cannot be applied: where, the Table 0357 code, and why."""

    def __init__(self, location: Location, code: str, reason: str) -> None:
        super().__init__(f"{location}: {reason}")
        self.location = location
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Order:
    """One ORC group: the order control, its keys, and the steps it schedules (NW, XO)."""

    control: str
    placer: str
    filler: str
    accession: str
    status: str = ""
    requests: tuple[StepRequest, ...] = ()
    sequence: int = 1
    placer_ei: str = ""  # the whole EI (number^namespace^universal ID^type), escaped
    filler_ei: str = ""


@dataclass
class Context:
    """What the mapping looks up outside the message."""

    procedure: Callable[[str], Procedure | None]
    station_for: Callable[[str], str]


def value(seg: hl7.Segment | None, fld: int, rep: int = 1, comp: int = 1, sub: int = 1) -> str:
    """One leaf value, unescaped, '' when absent."""
    if seg is None:
        return ""
    try:
        return str(seg.extract_field(1, fld, rep, comp, sub)).strip()
    except (IndexError, KeyError):
        return ""


def entity_identifier(seg: hl7.Segment | None, fld: int) -> str:
    """An EI field as written back to its sender: components escaped, joined with '^'."""
    return "^".join(escape(value(seg, fld, 1, i)) for i in range(1, 5)).rstrip("^")


def repetitions(seg: hl7.Segment | None, fld: int) -> int:
    if seg is None or len(seg) <= fld:
        return 0
    return len(seg(fld))


def message_type(msg: hl7.Message) -> tuple[str, str]:
    msh = msg.segment("MSH")
    return value(msh, 9, 1, 1).upper(), value(msh, 9, 1, 2).upper()


def check_type(msg: hl7.Message) -> None:
    """ORM^O01 or OMI^O23 of v2.x, else an OrderError (answered AR)."""
    kind, event = message_type(msg)
    if kind not in {k for k, _ in MESSAGE_TYPES}:
        raise OrderError(
            Location("MSH", 1, 9), UNSUPPORTED_MESSAGE_TYPE, f"message type {kind!r} not supported"
        )
    if (kind, event) not in MESSAGE_TYPES:
        raise OrderError(
            Location("MSH", 1, 9, 2), UNSUPPORTED_EVENT_CODE, f"event {kind}^{event} not supported"
        )
    version = value(msg.segment("MSH"), 12)
    if version and not version.startswith("2."):
        raise OrderError(
            Location("MSH", 1, 12), UNSUPPORTED_VERSION, f"version {version!r} not supported"
        )


def person_name(seg: hl7.Segment | None, fld: int, first: int = 1) -> str:
    """XPN (PID-5) or XCN (first=2) repetitions -> DICOM PN 'alphabetic=ideographic=phonetic'.

    XPN-8 (Table 4000: A, I, P) says which group a repetition is; without it the
    repetitions are taken in that order (as JAHIS writes them). XPN family^given^middle^
    suffix^prefix becomes PN family^given^middle^prefix^suffix (PS3.5 6.2.1).
    """
    groups = {"A": "", "I": "", "P": ""}
    order = iter(("A", "I", "P"))
    for rep in range(1, repetitions(seg, fld) + 1):
        comps = [value(seg, fld, rep, first + i) for i in range(5)]
        family, given, middle, suffix, prefix = comps
        code = value(seg, fld, rep, first + 7).upper()
        if code not in groups:
            code = next(order, "")
        if not code or groups[code]:
            continue
        groups[code] = "^".join((family, given, middle, prefix, suffix)).rstrip("^")
    return "=".join((groups["A"], groups["I"], groups["P"])).rstrip("=")


def parse_dtm(text: str, where: Location) -> datetime:
    """HL7 DTM YYYYMMDD[HH[MM[SS[.S]]]][+/-ZZZZ] as a local date-time (the zone is dropped)."""
    m = _DTM.match(text)
    if not m:
        raise OrderError(where, DATA_TYPE_ERROR, f"{text!r} is not a date-time YYYYMMDD[HHMM[SS]]")
    digits = m.group(1) + (m.group(2) or "00") + (m.group(3) or "00") + (m.group(4) or "00")
    try:
        return datetime.strptime(digits, "%Y%m%d%H%M%S")
    except ValueError as exc:
        raise OrderError(where, DATA_TYPE_ERROR, f"{text!r} is not a calendar date") from exc


def groups(msg: hl7.Message) -> list[dict[str, hl7.Segment]]:
    """Each ORC with the first TQ1, OBR, ZDS and the IPCs that follow it, before the next ORC."""
    out: list[dict[str, hl7.Segment]] = []
    ipcs: list[list[hl7.Segment]] = []
    for seg in msg:
        sid = str(seg[0][0]).upper()
        if sid == "ORC":
            out.append({"ORC": seg})
            ipcs.append([])
        elif out and sid == "IPC":
            ipcs[-1].append(seg)
        elif out and sid in ("TQ1", "OBR", "ZDS"):
            out[-1].setdefault(sid, seg)
    for group, found in zip(out, ipcs, strict=True):
        for i, seg in enumerate(found):
            group[f"IPC{i}"] = seg
    return out


def _first(msg: hl7.Message, sid: str) -> hl7.Segment | None:
    try:
        return msg.segment(sid)
    except KeyError:
        return None


def _patient(msg: hl7.Message) -> dict[str, Any]:
    pid = _first(msg, "PID")
    if pid is None:
        raise OrderError(Location("PID"), REQUIRED_FIELD_MISSING, "PID segment is required")
    patient_id = value(pid, 3)
    if not patient_id:
        raise OrderError(Location("PID", 1, 3), REQUIRED_FIELD_MISSING, "PID-3 patient ID")
    name = person_name(pid, 5)
    if not name.replace("^", "").replace("=", ""):
        raise OrderError(Location("PID", 1, 5), REQUIRED_FIELD_MISSING, "PID-5 patient name")
    birth = value(pid, 7)
    if birth:
        birth = parse_dtm(birth, Location("PID", 1, 7)).strftime("%Y%m%d")
    sex = value(pid, 8).upper()
    if sex not in SEXES:
        raise OrderError(Location("PID", 1, 8), TABLE_VALUE_NOT_FOUND, f"sex {sex!r}")
    pv1 = _first(msg, "PV1")
    return {
        "patient_id": patient_id,
        "issuer_of_patient_id": value(pid, 3, 1, 4),
        "patient_name": name,
        "birth_date": birth,
        "sex": SEXES[sex],
        "referring_physician": person_name(pv1, 8, first=2),
    }


def _visit(msg: hl7.Message) -> dict[str, str]:
    """PV1-19 visit number and PV1-3 assigned location, as MWL visit attributes (LO)."""
    pv1 = _first(msg, "PV1")
    location = "^".join(value(pv1, 3, 1, i) for i in range(1, 4)).rstrip("^")
    return {
        k: v[:64]
        for k, v in (("AdmissionID", value(pv1, 19)), ("CurrentPatientLocation", location))
        if v
    }


def _start_and_priority(g: dict[str, hl7.Segment], seq: int) -> tuple[datetime, str]:
    """TQ1-7 / TQ1-9, else ORC-7.4 / ORC-7.6, else OBR-27.4 / OBR-27.6, else OBR-36."""
    tq1, orc, obr = g.get("TQ1"), g["ORC"], g.get("OBR")
    candidates = [
        (value(tq1, 7), Location("TQ1", seq, 7), value(tq1, 9)),
        (value(orc, 7, 1, 4), Location("ORC", seq, 7, 4), value(orc, 7, 1, 6)),
        (value(obr, 27, 1, 4), Location("OBR", seq, 27, 4), value(obr, 27, 1, 6)),
        (value(obr, 36), Location("OBR", seq, 36), ""),
    ]
    priority = next((p for _, _, p in candidates if p), "").upper()
    if priority and priority not in PRIORITIES:
        raise OrderError(Location("TQ1", seq, 9), TABLE_VALUE_NOT_FOUND, f"priority {priority!r}")
    for text, where, _ in candidates:
        if text:
            return parse_dtm(text, where), PRIORITIES.get(priority, "")
    raise OrderError(Location("TQ1", seq, 7), REQUIRED_FIELD_MISSING, "TQ1-7 start date/time")


def _code(seg: hl7.Segment | None, fld: int) -> Code | None:
    v = value(seg, fld)
    if not v:
        return None
    return Code(v, value(seg, fld, 1, 3) or "L", value(seg, fld, 1, 2) or v)


def _requests(
    g: dict[str, hl7.Segment],
    seq: int,
    patient: dict[str, Any],
    visit: dict[str, str],
    ctx: Context,
) -> tuple[StepRequest, ...]:
    orc, obr = g["ORC"], g.get("OBR")
    if obr is None:
        raise OrderError(Location("OBR", seq), REQUIRED_FIELD_MISSING, "OBR segment is required")
    code_value = value(obr, 4)
    if not code_value:
        raise OrderError(Location("OBR", seq, 4), REQUIRED_FIELD_MISSING, "OBR-4 procedure code")
    proc = ctx.procedure(code_value)
    if proc is None:
        raise OrderError(
            Location("OBR", seq, 4),
            TABLE_VALUE_NOT_FOUND,
            f"procedure code {code_value!r} is not in the catalog",
        )
    start, priority = _start_and_priority(g, seq)
    zds_uid = value(g.get("ZDS"), 1)
    ipcs = [g[k] for k in sorted(k for k in g if k.startswith("IPC"))] or [None]
    out = []
    for i, ipc in enumerate(ipcs, 1):
        study = value(ipc, 3) or zds_uid
        if study:
            try:
                validate_uid(study, "study_instance_uid")
            except ApplianceError as exc:
                where = Location("IPC", i, 3) if value(ipc, 3) else Location("ZDS", seq, 1)
                raise OrderError(where, DATA_TYPE_ERROR, f"{study!r} is not a UID") from exc
        modality = (value(ipc, 5) or value(obr, 24) or proc.modality).upper()
        if not modality:
            raise OrderError(Location("OBR", seq, 24), REQUIRED_FIELD_MISSING, "OBR-24 modality")
        station = value(ipc, 9) or ctx.station_for(modality)
        if not station:
            raise OrderError(
                Location("IPC", i, 9) if ipc is not None else Location("OBR", seq, 24),
                REQUIRED_FIELD_MISSING,
                f"no scheduled station for modality {modality} (set hl7.stations)",
            )
        protocol = _code(ipc, 6) or proc.protocol
        placer, filler = value(orc, 2) or value(obr, 2), value(orc, 3) or value(obr, 3)
        out.append(
            StepRequest(
                **patient,
                station_ae=station,
                station_name=value(ipc, 7),
                location=value(ipc, 8),
                modality=modality,
                start=start,
                accession_number=value(ipc, 1) or value(obr, 18),
                requested_procedure_id=value(ipc, 2) or value(obr, 19),
                requested_procedure_description=proc.meaning,
                requested_procedure_code=proc.code,
                study_instance_uid=study,
                requesting_physician=person_name(orc, 12, first=2) or person_name(obr, 16, first=2),
                priority=priority,
                sps_id=value(ipc, 4) or value(obr, 20),
                sps_description=value(obr, 4, 1, 2) or proc.meaning,
                protocol_codes=(protocol,) if protocol else (),
                procedure_extra=visit
                | {
                    k: v[:64]
                    for k, v in (
                        ("PlacerOrderNumberImagingServiceRequest", placer),
                        ("FillerOrderNumberImagingServiceRequest", filler),
                        ("ReasonForTheRequestedProcedure", value(obr, 31, 1, 2) or value(obr, 31)),
                    )
                    if v
                },
            )
        )
    return tuple(out)


def orders(msg: hl7.Message, ctx: Context) -> list[Order]:
    """Every ORC group of an ORM^O01 / OMI^O23 as an Order; raises OrderError."""
    found = groups(msg)
    if not found:
        raise OrderError(Location("ORC"), REQUIRED_FIELD_MISSING, "ORC segment is required")
    patient: dict[str, Any] | None = None
    out = []
    for seq, g in enumerate(found, 1):
        orc, obr = g["ORC"], g.get("OBR")
        control = value(orc, 1).upper()
        if control not in ORDER_CONTROLS:
            raise OrderError(
                Location("ORC", seq, 1), TABLE_VALUE_NOT_FOUND, f"order control {control!r}"
            )
        placer = value(orc, 2) or value(obr, 2)
        filler = value(orc, 3) or value(obr, 3)
        placer_ei = entity_identifier(orc if value(orc, 2) else obr, 2)
        filler_ei = entity_identifier(orc if value(orc, 3) else obr, 3)
        accession = value(g.get("IPC0"), 1) or value(obr, 18)
        if not (placer or filler or accession):
            raise OrderError(
                Location("ORC", seq, 2), REQUIRED_FIELD_MISSING, "ORC-2 placer order number"
            )
        status = value(orc, 5).upper()
        requests: tuple[StepRequest, ...] = ()
        if control in ("NW", "XO"):
            if status not in ("", "SC"):
                raise OrderError(
                    Location("ORC", seq, 5), TABLE_VALUE_NOT_FOUND, f"order status {status!r}"
                )
            patient = patient or _patient(msg)
            requests = _requests(g, seq, patient, _visit(msg), ctx)
        elif control == "SC" and status not in ORDER_STATUSES:
            raise OrderError(
                Location("ORC", seq, 5), TABLE_VALUE_NOT_FOUND, f"order status {status!r}"
            )
        out.append(
            Order(control, placer, filler, accession, status, requests, seq, placer_ei, filler_ei)
        )
    return out
