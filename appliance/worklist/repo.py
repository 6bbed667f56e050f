"""Scheduling data in SQLite: patients, requested procedures, scheduled procedure steps.

The domain API the web UI and the importers call (schedule, update, cancel, list), and
the candidate queries the C-FIND SCP narrows with indexes before matching in Python.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import sqlite_utils
from pydicom.uid import generate_uid

from appliance import audit
from appliance.db import Store
from appliance.errors import Conflict, NotFound, ValidationError
from appliance.worklist.model import (
    FINAL_STATUSES,
    STATUSES,
    Code,
    Item,
    StepRequest,
    dt_key,
    name_key,
    validate_request,
)

STEP_COLUMNS = """
    s.pk AS step_pk, s.sps_id, s.station_ae, s.station_name, s.location, s.modality,
    s.start_date, s.start_time, s.start_dt, s.performing_physician, s.description AS sps_description,
    s.protocol, s.status, s.extra AS step_extra, s.updated_at,
    p.pk AS procedure_pk, p.accession_number, p.requested_procedure_id, p.study_instance_uid,
    p.description AS procedure_description, p.code AS procedure_code, p.referring_physician,
    p.requesting_physician, p.priority, p.extra AS procedure_extra,
    pt.pk AS patient_pk, pt.patient_id, pt.issuer, pt.name AS patient_name, pt.birth_date, pt.sex,
    pt.extra AS patient_extra
"""
STEP_FROM = """
    FROM steps s
    JOIN procedures p ON p.pk = s.procedure_pk
    JOIN patients pt ON pt.pk = p.patient_pk
"""


@dataclass
class Narrowing:
    """SQL conditions derived from a query; each narrows the candidate set through an index."""

    start_from: str | None = None  # YYYYMMDDHHMMSS inclusive
    start_to: str | None = None
    station_ae: str | None = None
    modality: str | None = None
    accession_number: str | None = None
    patient_id: str | None = None
    study_uids: list[str] | None = None
    requested_procedure_id: str | None = None
    sps_id: str | None = None
    name_fragment: str | None = None  # folded literal fragment of the name pattern
    exclude_statuses: tuple[str, ...] = ("CANCELED",)
    extra: list[tuple[str, list[Any]]] = field(default_factory=list)

    def where(self) -> tuple[str, list[Any]]:
        """The WHERE clause and its parameters."""
        parts: list[str] = []
        params: list[Any] = []
        simple = (
            ("s.start_dt >= ?", self.start_from),
            ("s.start_dt <= ?", self.start_to),
            ("s.station_ae = ?", self.station_ae),
            ("s.modality = ?", self.modality),
            ("p.accession_number = ?", self.accession_number),
            ("pt.patient_id = ?", self.patient_id),
            ("p.requested_procedure_id = ?", self.requested_procedure_id),
            ("s.sps_id = ?", self.sps_id),
        )
        for clause, value in simple:
            if value is not None:
                parts.append(clause)
                params.append(value)
        if self.study_uids is not None:
            parts.append(f"p.study_instance_uid IN ({','.join('?' * len(self.study_uids))})")
            params.extend(self.study_uids)
        if self.name_fragment:
            parts.append("instr(pt.name_key, ?) > 0")
            params.append(self.name_fragment)
        if self.exclude_statuses:
            parts.append(f"s.status NOT IN ({','.join('?' * len(self.exclude_statuses))})")
            params.extend(self.exclude_statuses)
        for clause, values in self.extra:
            parts.append(clause)
            params.extend(values)
        return (" WHERE " + " AND ".join(parts)) if parts else "", params


def _code_json(code: Code | None) -> str:
    return json.dumps(code.to_item(), ensure_ascii=False) if code else ""


def _step_values(req: StepRequest) -> tuple[Any, ...]:
    """The step columns a request sets, in the order station_ae ... protocol."""
    start_date, start_time = req.start.strftime("%Y%m%d"), req.start.strftime("%H%M%S")
    protocol = json.dumps([c.to_item() for c in req.protocol_codes], ensure_ascii=False)
    return (
        req.station_ae, req.station_name, req.location, req.modality, start_date, start_time,
        dt_key(start_date, start_time), req.performing_physician, req.sps_description, protocol,
    )  # fmt: skip


# Steps whose record is read-only but can be corrected, with a reason (the web's "Correct").
CORRECTABLE_STATUSES = ("COMPLETED", "DISCONTINUED")


class WorklistRepo:
    """The scheduling domain API over the database."""

    def __init__(self, store: Store, today: Callable[[], date] = date.today) -> None:
        """``today``: the clinic's date (``appliance.clock.Clock.today``), which new
        accession numbers begin with; the box's own date by default."""
        self.store = store
        self.today = today

    # -- writes -------------------------------------------------------------

    def schedule(self, req: StepRequest, actor: str = "system", source: str = "") -> int:
        """Validate and store a new scheduled step (and its patient and procedure); returns its pk."""
        req = validate_request(req)
        with self.store.write() as db:
            patient_pk = self._upsert_patient(db, req)
            procedure_pk = self._procedure_for(db, req, patient_pk)
            step_pk = self._insert_step(db, req, procedure_pk)
            acc = db.execute(
                "SELECT accession_number FROM procedures WHERE pk = ?", (procedure_pk,)
            ).fetchone()[0]
            audit.record(
                db,
                actor,
                "schedule",
                f"step {step_pk}",
                f"accession {acc}, station {req.station_ae}",
                source,
            )
        return step_pk

    def update(
        self, step_pk: int, req: StepRequest, actor: str = "system", source: str = ""
    ) -> None:
        """Change a scheduled step; the Study Instance UID and accession number stay as they are."""
        current = self.get(step_pk)
        if current["status"] in FINAL_STATUSES:
            raise Conflict(
                f"step {step_pk} is {current['status'].lower()} and can no longer be changed"
            )
        self._write(step_pk, current, req, actor, "update", "", source)

    def correct(
        self,
        step_pk: int,
        req: StepRequest,
        reason: str,
        actor: str = "system",
        source: str = "",
        changed: tuple[str, ...] = (),
    ) -> None:
        """Correct the record of a performed (completed or discontinued) step: a mistake in
        the patient's or the order's details. The status stays; the reason and the names of
        the ``changed`` fields go to the audit log (action ``correct``)."""
        current = self.get(step_pk)
        if current["status"] not in CORRECTABLE_STATUSES:
            raise Conflict(
                f"step {step_pk} is {current['status'].lower()}; only completed or "
                "discontinued steps are corrected (others are edited)"
            )
        reason = reason.strip()
        if not reason:
            raise ValidationError("correction_reason", "is required")
        if len(reason) > 200:
            raise ValidationError("correction_reason", "is longer than 200 characters")
        fields = f" (changed: {', '.join(changed)})" if changed else " (nothing changed)"
        self._write(step_pk, current, req, actor, "correct", reason + fields, source)

    def _write(
        self,
        step_pk: int,
        current: dict[str, Any],
        req: StepRequest,
        actor: str,
        action: str,
        why: str,
        source: str,
    ) -> None:
        """Store a step's new details (update and correct); one audit row."""
        req = validate_request(
            req.replace(
                study_instance_uid=current["study_instance_uid"],
                accession_number=req.accession_number or current["accession_number"],
            )
        )
        if req.accession_number != current["accession_number"]:
            self._check_accession_free(req.accession_number, current["procedure_pk"])
        with self.store.write() as db:
            patient_pk = self._upsert_patient(db, req)
            db.execute(
                """UPDATE procedures SET patient_pk = ?, accession_number = ?, requested_procedure_id = ?,
                   description = ?, code = ?, referring_physician = ?, requesting_physician = ?, priority = ?,
                   updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE pk = ?""",
                (
                    patient_pk,
                    req.accession_number,
                    req.requested_procedure_id or req.accession_number,
                    req.requested_procedure_description,
                    _code_json(req.requested_procedure_code),
                    req.referring_physician,
                    req.requesting_physician,
                    req.priority,
                    current["procedure_pk"],
                ),
            )
            db.execute(
                """UPDATE steps SET station_ae = ?, station_name = ?, location = ?, modality = ?,
                   start_date = ?, start_time = ?, start_dt = ?, performing_physician = ?, description = ?,
                   protocol = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE pk = ?""",
                (*_step_values(req), step_pk),
            )
            detail = f"accession {req.accession_number}" + (f": {why}" if why else "")
            audit.record(db, actor, action, f"step {step_pk}", detail, source)

    def cancel(
        self, step_pk: int, actor: str = "system", reason: str = "", source: str = ""
    ) -> None:
        """Cancel a step that has not started; it disappears from the worklist."""
        current = self.get(step_pk)
        if current["status"] not in ("SCHEDULED", "ARRIVED", "READY"):
            raise Conflict(
                f"step {step_pk} is {current['status'].lower()}; only scheduled steps can be cancelled"
            )
        with self.store.write() as db:
            self._set_status(db, [step_pk], "CANCELED")
            audit.record(db, actor, "cancel", f"step {step_pk}", reason[:200], source)

    def set_status(
        self, step_pks: list[int], status: str, db: sqlite_utils.Database | None = None
    ) -> None:
        """Set the status of steps (MPPS calls this inside its own transaction)."""
        if status not in STATUSES:
            raise ValidationError("status", f"must be one of {', '.join(STATUSES)}")
        if db is not None:
            self._set_status(db, step_pks, status)
            return
        with self.store.write() as wdb:
            self._set_status(wdb, step_pks, status)

    @staticmethod
    def _set_status(db: sqlite_utils.Database, step_pks: list[int], status: str) -> None:
        if not step_pks:
            return
        db.execute(
            f"""UPDATE steps SET status = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                WHERE pk IN ({",".join("?" * len(step_pks))})""",
            (status, *step_pks),
        )

    def _upsert_patient(self, db: sqlite_utils.Database, req: StepRequest) -> int:
        row = db.execute(
            "SELECT pk FROM patients WHERE patient_id = ? AND issuer = ?",
            (req.patient_id, req.issuer_of_patient_id),
        ).fetchone()
        extra = json.dumps(req.patient_extra, ensure_ascii=False)
        values = (req.patient_name, name_key(req.patient_name), req.birth_date, req.sex, extra)
        if row:
            db.execute(
                """UPDATE patients SET name = ?, name_key = ?, birth_date = ?, sex = ?, extra = ?,
                   updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE pk = ?""",
                (*values, row[0]),
            )
            return int(row[0])
        cur = db.execute(
            "INSERT INTO patients(patient_id, issuer, name, name_key, birth_date, sex, extra) VALUES (?,?,?,?,?,?,?)",
            (req.patient_id, req.issuer_of_patient_id, *values),
        )
        return int(cur.lastrowid or 0)

    def _procedure_for(self, db: sqlite_utils.Database, req: StepRequest, patient_pk: int) -> int:
        """The procedure this step belongs to: an existing one (same accession or study) or a new one."""
        if req.accession_number:
            row = db.execute(
                "SELECT pk, patient_pk, study_instance_uid FROM procedures WHERE accession_number = ?",
                (req.accession_number,),
            ).fetchone()
            if row:
                if row[1] != patient_pk:
                    raise ValidationError("accession_number", "is already used for another patient")
                if req.study_instance_uid and req.study_instance_uid != row[2]:
                    raise ValidationError(
                        "study_instance_uid", "differs from the one of this accession number"
                    )
                return int(row[0])
        if req.study_instance_uid:
            row = db.execute(
                "SELECT pk FROM procedures WHERE study_instance_uid = ?", (req.study_instance_uid,)
            ).fetchone()
            if row:
                raise ValidationError(
                    "study_instance_uid", "is already used by another accession number"
                )
        accession = req.accession_number or self._next_accession(db)
        try:
            cur = db.execute(
                """INSERT INTO procedures(patient_pk, accession_number, requested_procedure_id, study_instance_uid,
                   description, code, referring_physician, requesting_physician, priority, extra)
                   VALUES (?,?,?,?,?,?,?,?,?,?)""",
                (
                    patient_pk,
                    accession,
                    req.requested_procedure_id or accession,
                    req.study_instance_uid or generate_uid(),
                    req.requested_procedure_description,
                    _code_json(req.requested_procedure_code),
                    req.referring_physician,
                    req.requesting_physician,
                    req.priority,
                    json.dumps(req.procedure_extra, ensure_ascii=False),
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise ValidationError("accession_number", "is already in use") from exc
        return int(cur.lastrowid or 0)

    def _insert_step(self, db: sqlite_utils.Database, req: StepRequest, procedure_pk: int) -> int:
        sps_id = req.sps_id or self._next_sps_id(db, procedure_pk)
        try:
            cur = db.execute(
                """INSERT INTO steps(station_ae, station_name, location, modality, start_date, start_time,
                   start_dt, performing_physician, description, protocol, procedure_pk, sps_id, status, extra)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
                (
                    *_step_values(req),
                    procedure_pk,
                    sps_id,
                    req.status,
                    json.dumps(req.step_extra, ensure_ascii=False),
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise ValidationError(
                "sps_id", f"{sps_id!r} already exists in this requested procedure"
            ) from exc
        return int(cur.lastrowid or 0)

    def _next_accession(self, db: sqlite_utils.Database, reserve: bool = True) -> str:
        """A new accession number: date plus a counter kept in settings (unique, 16 chars
        max). Only a save reserves it (``reserve``): a form shown and left costs no number."""
        day = self.today().strftime("%y%m%d")
        key = f"accession_seq:{day}"
        row = db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        n = int(row[0]) if row else 0
        while True:
            n += 1
            candidate = f"A{day}{n:04d}"
            if not db.execute(
                "SELECT 1 FROM procedures WHERE accession_number = ?", (candidate,)
            ).fetchone():
                break
        if reserve:
            db.execute("INSERT OR REPLACE INTO settings(key, value) VALUES (?, ?)", (key, str(n)))
        return candidate

    @staticmethod
    def _next_sps_id(db: sqlite_utils.Database, procedure_pk: int) -> str:
        acc, count = db.execute(
            """SELECT p.accession_number, (SELECT count(*) FROM steps WHERE procedure_pk = p.pk)
               FROM procedures p WHERE p.pk = ?""",
            (procedure_pk,),
        ).fetchone()
        return acc if count == 0 else f"{acc[:12]}-{count + 1}"

    def _check_accession_free(self, accession: str, procedure_pk: int) -> None:
        row = self.store.db.execute(
            "SELECT pk FROM procedures WHERE accession_number = ? AND pk != ?",
            (accession, procedure_pk),
        ).fetchone()
        if row:
            raise ValidationError("accession_number", "is already in use")

    def next_accession_number(self) -> str:
        """The accession number the next save without one will get (not reserved)."""
        with self.store.read() as db:
            return self._next_accession(db, reserve=False)

    # -- reads ---------------------------------------------------------------

    def get(self, step_pk: int) -> dict[str, Any]:
        """One step with its procedure and patient, or NotFound."""
        rows = self.store.query(f"SELECT {STEP_COLUMNS} {STEP_FROM} WHERE s.pk = ?", (step_pk,))
        if not rows:
            raise NotFound(f"no scheduled step {step_pk}")
        return rows[0]

    def list_day(
        self, day: date, station_ae: str | None = None, include_cancelled: bool = False
    ) -> list[dict]:
        """The steps of one day (optionally one station), in start order."""
        start = day.strftime("%Y%m%d") + "000000"
        end = (day + timedelta(days=1)).strftime("%Y%m%d") + "000000"
        sql = f"SELECT {STEP_COLUMNS} {STEP_FROM} WHERE s.start_dt >= ? AND s.start_dt < ?"
        params: list[Any] = [start, end]
        if station_ae:
            sql += " AND s.station_ae = ?"
            params.append(station_ae)
        if not include_cancelled:
            sql += " AND s.status != 'CANCELED'"
        return self.store.query(sql + " ORDER BY s.start_dt, s.pk", tuple(params))

    def station_starts(self, station_ae: str, first: str, last: str) -> list[str]:
        """Start times (YYYYMMDDHHMMSS) of a station's steps from ``first`` to before
        ``last``, cancelled ones left out (the schedule form's next free slot)."""
        rows = self.store.query(
            """SELECT start_dt FROM steps WHERE station_ae = ? AND start_dt >= ?
               AND start_dt < ? AND status != 'CANCELED' ORDER BY start_dt""",
            (station_ae, first, last),
        )
        return [str(r["start_dt"]) for r in rows]

    def search(self, text: str, limit: int = 100) -> list[dict]:
        """Steps whose patient name, patient ID or accession number contains the text."""
        text = text.strip()
        if not text:
            return []
        folded = name_key(text)
        return self.store.query(
            f"""SELECT {STEP_COLUMNS} {STEP_FROM}
                WHERE instr(pt.name_key, ?) > 0 OR pt.patient_id = ? OR p.accession_number = ?
                ORDER BY s.start_dt DESC LIMIT ?""",
            (folded, text, text, limit),
        )

    def find_patients(self, text: str, limit: int = 20) -> list[dict]:
        """Patients whose name or ID contains the text (for the schedule form)."""
        folded = name_key(text.strip())
        return self.store.query(
            """SELECT pk, patient_id, issuer, name, birth_date, sex FROM patients
               WHERE instr(name_key, ?) > 0 OR patient_id LIKE ? ESCAPE '\\' ORDER BY name
               LIMIT ?""",
            (folded, _like_literal(text.strip()) + "%", limit),
        )

    def changed_since(self, since: str, day: date | None = None) -> list[dict]:
        """Steps changed after an ``updated_at`` stamp (for the live schedule board)."""
        sql = f"SELECT {STEP_COLUMNS} {STEP_FROM} WHERE s.updated_at > ?"
        params: list[Any] = [since]
        if day is not None:
            sql += " AND s.start_date = ?"
            params.append(day.strftime("%Y%m%d"))
        return self.store.query(sql + " ORDER BY s.updated_at", tuple(params))

    def candidates(self, narrowing: Narrowing) -> Iterator[dict[str, Any]]:
        """Rows that may match a query, in start order, streamed from an indexed SELECT."""
        where, params = narrowing.where()
        cur = self.store.db.conn.execute(
            f"SELECT {STEP_COLUMNS} {STEP_FROM} {where} ORDER BY s.start_dt, s.pk", params
        )
        names = [d[0] for d in cur.description]
        while True:
            batch = cur.fetchmany(500)
            if not batch:
                return
            for row in batch:
                yield dict(zip(names, row, strict=True))

    def count(self) -> int:
        return int(self.store.db.execute("SELECT count(*) FROM steps").fetchone()[0])

    def find_steps_for_mpps(self, refs: list[dict[str, str]]) -> list[int]:
        """Step pks named by Scheduled Step Attributes Sequence items (SPS ID with accession / study)."""
        found: list[int] = []
        for ref in refs:
            conditions, params = [], []
            for column, key in (
                ("s.sps_id", "ScheduledProcedureStepID"),
                ("p.accession_number", "AccessionNumber"),
                ("p.study_instance_uid", "StudyInstanceUID"),
                ("p.requested_procedure_id", "RequestedProcedureID"),
            ):
                if ref.get(key):
                    conditions.append(f"{column} = ?")
                    params.append(ref[key])
            if not any(c.startswith(("p.accession", "p.study")) for c in conditions):
                continue
            rows = self.store.db.execute(
                f"SELECT s.pk {STEP_FROM} WHERE {' AND '.join(conditions)}", params
            ).fetchall()
            found.extend(int(r[0]) for r in rows if int(r[0]) not in found)
        return found


def row_to_item(row: dict[str, Any]) -> Item:
    """The full MWL item (PS3.4 K.6-1) of a joined step row."""
    item: Item = json.loads(row["patient_extra"] or "{}")
    item.update(json.loads(row["procedure_extra"] or "{}"))
    item.update(
        {
            "PatientName": row["patient_name"],
            "PatientID": row["patient_id"],
            "IssuerOfPatientID": row["issuer"],
            "PatientBirthDate": row["birth_date"],
            "PatientSex": row["sex"],
            "AccessionNumber": row["accession_number"],
            "ReferringPhysicianName": row["referring_physician"],
            "RequestingPhysician": row["requesting_physician"],
            "RequestedProcedureID": row["requested_procedure_id"],
            "RequestedProcedureDescription": row["procedure_description"],
            "RequestedProcedureCodeSequence": [json.loads(row["procedure_code"])]
            if row["procedure_code"]
            else [],
            "StudyInstanceUID": row["study_instance_uid"],
            "RequestedProcedurePriority": row["priority"],
        }
    )
    sps: Item = json.loads(row["step_extra"] or "{}")
    sps.update(
        {
            "ScheduledStationAETitle": row["station_ae"],
            "ScheduledStationName": row["station_name"],
            "ScheduledProcedureStepLocation": row["location"],
            "ScheduledProcedureStepStartDate": row["start_date"],
            "ScheduledProcedureStepStartTime": row["start_time"],
            "Modality": row["modality"],
            "ScheduledPerformingPhysicianName": row["performing_physician"],
            "ScheduledProcedureStepDescription": row["sps_description"],
            "ScheduledProtocolCodeSequence": json.loads(row["protocol"] or "[]"),
            "ScheduledProcedureStepID": row["sps_id"],
            "ScheduledProcedureStepStatus": row["status"],
        }
    )
    item["ScheduledProcedureStepSequence"] = [sps]
    return item


def _like_literal(text: str) -> str:
    """The text as a LIKE pattern that matches only itself (`%`, `_` and `\\` escaped)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
