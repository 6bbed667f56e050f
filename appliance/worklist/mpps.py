"""Modality Performed Procedure Step SCP (PS3.4 Annex F.7): N-CREATE and N-SET.

An MPPS is created IN PROGRESS, linked to the scheduled steps named in its Scheduled
Step Attributes Sequence (or recorded as unscheduled), and set once to COMPLETED or
DISCONTINUED; after that it is final. The linked steps follow its status.
"""

from __future__ import annotations

import json
import logging
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import evt
from pynetdicom.dimse_primitives import N_CREATE, N_SET

from appliance import audit, dataset_check, status
from appliance.db import Store
from appliance.errors import ApplianceError

log = logging.getLogger(__name__)

IN_PROGRESS, COMPLETED, DISCONTINUED = "IN PROGRESS", "COMPLETED", "DISCONTINUED"
PPS_STATUSES = (IN_PROGRESS, COMPLETED, DISCONTINUED)
STEP_STATUS = {IN_PROGRESS: "STARTED", COMPLETED: "COMPLETED", DISCONTINUED: "DISCONTINUED"}

# Type 1 attributes of the N-CREATE (PS3.4 Table F.7.2-1): present and not empty.
CREATE_TYPE1 = (
    "ScheduledStepAttributesSequence",
    "PerformedProcedureStepID",
    "PerformedStationAETitle",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformedProcedureStepStatus",
    "Modality",
)
# Required once the step is final (PS3.4 F.7.2.2.2).
FINAL_REQUIRED = ("PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime")
# Set only at N-CREATE (PS3.4 Table F.7.2-1, N-SET usage "Not allowed").
NOT_SETTABLE = (
    "ScheduledStepAttributesSequence",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PerformedProcedureStepID",
    "PerformedStationAETitle",
    "PerformedStationName",
    "PerformedLocation",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "Modality",
    "StudyID",
    "SOPInstanceUID",
    "SOPClassUID",
)


class MppsError(ApplianceError):
    """An MPPS request that must be refused with ``code``."""

    def __init__(self, code: int, comment: str) -> None:
        super().__init__(comment)
        self.code = code
        self.comment = comment


def _status(err: MppsError) -> Dataset:
    return status.response(err.code, err.comment)


def _steps_detail(db: Any, step_pks: list[int]) -> str:
    """What an admin reads in the audit log: the steps' accession numbers and patient
    IDs (not the MPPS UID alone), "1 step" / "N steps"."""
    rows = db.execute(
        f"""SELECT DISTINCT p.accession_number, pt.patient_id FROM steps s
            JOIN procedures p ON p.pk = s.procedure_pk JOIN patients pt ON pt.pk = p.patient_pk
            WHERE s.pk IN ({",".join("?" * len(step_pks))})""",
        list(step_pks),
    ).fetchall()
    count = f"{len(step_pks)} step" + ("" if len(step_pks) == 1 else "s")
    which = ", ".join(f"accession {acc} (patient ID {pid})" for acc, pid in rows)
    return f"{count}: {which}" if which else count


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def validate_create(ds: Dataset) -> str:
    """Check an N-CREATE attribute list; returns the PPS status or raises MppsError."""
    for keyword in CREATE_TYPE1:
        if keyword not in ds:
            raise MppsError(status.MISSING_ATTRIBUTE, f"{keyword} is missing")
        value = ds[keyword].value
        if value is None or value == "" or (keyword.endswith("Sequence") and len(value) == 0):
            raise MppsError(status.MISSING_ATTRIBUTE_VALUE, f"{keyword} is empty")
    pps_status = _text(ds, "PerformedProcedureStepStatus")
    if pps_status != IN_PROGRESS:
        raise MppsError(
            status.INVALID_ATTRIBUTE_VALUE, "Performed Procedure Step Status must be IN PROGRESS"
        )
    for item in ds.ScheduledStepAttributesSequence:
        if not _text(item, "StudyInstanceUID"):
            raise MppsError(
                status.MISSING_ATTRIBUTE_VALUE, "ScheduledStepAttributesSequence.StudyInstanceUID"
            )
    return pps_status


def _step_refs(ds: Dataset) -> list[dict[str, str]]:
    keys = (
        "StudyInstanceUID",
        "AccessionNumber",
        "RequestedProcedureID",
        "ScheduledProcedureStepID",
    )
    return [
        {k: _text(item, k) for k in keys} for item in ds.get("ScheduledStepAttributesSequence", [])
    ]


class MppsRecorder:
    """Stores MPPS instances and moves the linked scheduled steps along."""

    def __init__(self, store: Store, repo: Any) -> None:
        self.store = store
        self.repo = repo

    def create(self, uid: str, ds: Dataset, calling_ae: str, source: str = "") -> list[int]:
        """Record a new IN PROGRESS instance; returns the step pks it is linked to."""
        validate_create(ds)
        refs = _step_refs(ds)
        step_pks = self.repo.find_steps_for_mpps(refs)
        attrs = json.dumps(ds.to_json_dict(), ensure_ascii=False)
        with self.store.write() as db:
            if db.execute("SELECT 1 FROM mpps WHERE sop_instance_uid = ?", (uid,)).fetchone():
                raise MppsError(status.DUPLICATE_SOP_INSTANCE, "This MPPS instance already exists")
            db.execute(
                """INSERT INTO mpps(sop_instance_uid, status, calling_ae, station_ae, modality, unscheduled, attributes)
                   VALUES (?,?,?,?,?,?,?)""",
                (
                    uid,
                    IN_PROGRESS,
                    calling_ae,
                    _text(ds, "PerformedStationAETitle"),
                    _text(ds, "Modality"),
                    0 if step_pks else 1,
                    attrs,
                ),
            )
            for pk in step_pks:
                db.execute("INSERT INTO mpps_steps(mpps_uid, step_pk) VALUES (?, ?)", (uid, pk))
            self.repo.set_status(step_pks, STEP_STATUS[IN_PROGRESS], db=db)
            what = _steps_detail(db, step_pks) if step_pks else "unscheduled"
            audit.record(db, calling_ae, "mpps-in-progress", f"mpps {uid}", what, source)
        return step_pks

    def update(self, uid: str, mods: Dataset, calling_ae: str, source: str = "") -> str:
        """Apply an N-SET; returns the new PPS status or raises MppsError."""
        rows = self.store.query(
            "SELECT status, attributes FROM mpps WHERE sop_instance_uid = ?", (uid,)
        )
        if not rows:
            raise MppsError(status.NO_SUCH_SOP_INSTANCE, "No such MPPS instance")
        if rows[0]["status"] != IN_PROGRESS:
            raise MppsError(
                status.PROCESSING_FAILURE,
                f"PPS is {rows[0]['status']} and may no longer be updated",
            )
        for keyword in NOT_SETTABLE:
            if keyword in mods:
                raise MppsError(status.PROCESSING_FAILURE, f"{keyword} may not be changed by N-SET")
        current = Dataset.from_json(rows[0]["attributes"])
        for elem in mods:
            current[elem.tag] = elem
        new_status = _text(current, "PerformedProcedureStepStatus")
        if new_status not in PPS_STATUSES:
            raise MppsError(
                status.INVALID_ATTRIBUTE_VALUE, f"PPS Status {new_status!r} is not a valid value"
            )
        if new_status != IN_PROGRESS:
            for keyword in FINAL_REQUIRED:
                if not _text(current, keyword):
                    raise MppsError(
                        status.MISSING_ATTRIBUTE_VALUE, f"{keyword} is required to end the step"
                    )
        attrs = json.dumps(current.to_json_dict(), ensure_ascii=False)
        with self.store.write() as db:
            changed = db.execute(
                """UPDATE mpps SET status = ?, attributes = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                   WHERE sop_instance_uid = ? AND status = ?""",
                (new_status, attrs, uid, IN_PROGRESS),
            ).rowcount
            if not changed:
                raise MppsError(
                    status.PROCESSING_FAILURE, "Performed Procedure Step changed meanwhile"
                )
            step_pks = [
                r[0]
                for r in db.execute("SELECT step_pk FROM mpps_steps WHERE mpps_uid = ?", (uid,))
            ]
            self.repo.set_status(step_pks, STEP_STATUS[new_status], db=db)
            if new_status != IN_PROGRESS:
                audit.record(
                    db,
                    calling_ae,
                    f"mpps-{new_status.lower()}",
                    f"mpps {uid}",
                    _steps_detail(db, step_pks) if step_pks else "unscheduled",
                    source,
                )
        return new_status

    def get(self, uid: str) -> dict[str, Any] | None:
        rows = self.store.query("SELECT * FROM mpps WHERE sop_instance_uid = ?", (uid,))
        return rows[0] if rows else None


LIMITS = dataset_check.Limits(max_depth=8, max_inflated=16 << 20)


def read_attributes(event: evt.Event, attribute: str) -> Dataset:
    """The N-CREATE attribute list or N-SET modification list, checked (PS3.5); or MppsError:
    0110 when it cannot be decoded, 0106 when a value is not valid for its VR (PS3.7 C.4)."""
    try:
        return dataset_check.read_request(event, attribute, LIMITS)
    except dataset_check.Malformed as exc:
        raise MppsError(dataset_check.n_status(exc), exc.reason) from exc


def _allowed(event: evt.Event, service: Any) -> bool:
    return bool(service.runtime.access.allowed(event.assoc.requestor.ae_title, "worklist"))


def handle_n_create(event: evt.Event, service: Any) -> tuple[Any, Dataset | None]:
    """MPPS N-CREATE (PS3.4 F.7.2.1)."""
    calling = event.assoc.requestor.ae_title
    if not _allowed(event, service):
        return _status(
            MppsError(status.NOT_AUTHORIZED, "Calling AE title is not a configured device")
        ), None
    request = cast(N_CREATE, event.request)
    uid = request.AffectedSOPInstanceUID
    if not uid:
        uid = generate_uid()
    try:
        ds = read_attributes(event, "AttributeList")
        service.mpps.create(str(uid), ds, calling, event.assoc.requestor.address)
    except MppsError as err:
        log.warning(
            "MPPS N-CREATE from %s refused: 0x%04X %s",
            dataset_check.peer(event),
            err.code,
            err.comment,
        )
        return _status(err), None
    log.info("MPPS %s IN PROGRESS from %s", uid, calling)
    rsp = Dataset()
    if not request.AffectedSOPInstanceUID:
        rsp.AffectedSOPInstanceUID = uid
    return status.SUCCESS, rsp


def handle_n_set(event: evt.Event, service: Any) -> tuple[Any, Dataset | None]:
    """MPPS N-SET (PS3.4 F.7.2.2)."""
    calling = event.assoc.requestor.ae_title
    if not _allowed(event, service):
        return _status(
            MppsError(status.NOT_AUTHORIZED, "Calling AE title is not a configured device")
        ), None
    uid = str(cast(N_SET, event.request).RequestedSOPInstanceUID)
    try:
        mods = read_attributes(event, "ModificationList")
        new_status = service.mpps.update(uid, mods, calling, event.assoc.requestor.address)
    except MppsError as err:
        log.warning(
            "MPPS N-SET from %s refused: 0x%04X %s",
            dataset_check.peer(event),
            err.code,
            err.comment,
        )
        return _status(err), None
    log.info("MPPS %s %s from %s", uid, new_status, calling)
    return status.SUCCESS, mods
