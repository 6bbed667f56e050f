"""The MWL C-FIND SCP and the MPPS SCP over real associations (pynetdicom SCU)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep, ModalityWorklistInformationFind

from appliance import audit, status
from appliance.db import DB_FILENAME
from appliance.server import Appliance
from appliance.worklist.repo import WorklistRepo
from tests.factories import make_mwl_query, make_step_request
from tests.helpers import open_fds, wait_for

DEVICES = [
    {"ae_title": "CT1"},
    {"ae_title": "CT2", "station_filter": "calling-ae"},
    {"ae_title": "CAPPED", "max_results": 3},
    {"ae_title": "SHOWALL", "hide_completed": False},
    {"ae_title": "LATIN", "character_set": "ISO_IR 100"},
]


@pytest.fixture
def box(start_appliance: Callable[..., Appliance]) -> Appliance:
    return start_appliance({"devices": DEVICES})


def find(
    app: Appliance, query: Dataset, calling: str = "CT1"
) -> list[tuple[int, Dataset | None, Dataset]]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", app.dicom_port, ae_title="APPLIANCE")
    assert assoc.is_established
    out = [
        (int(st.Status), ds, st)
        for st, ds in assoc.send_c_find(query, ModalityWorklistInformationFind)
    ]
    assoc.release()
    return out


def results(rsp: list[tuple[int, Any, Any]]) -> list[Dataset]:
    assert rsp[-1][0] == status.SUCCESS, [hex(r[0]) for r in rsp]
    return [ds for code, ds, _ in rsp if code in (status.PENDING, status.PENDING_WARNING)]


def schedule(app: Appliance, **over: Any) -> int:
    return WorklistRepo(app.runtime.store).schedule(make_step_request(**over))


def test_associations_one_after_another_leave_no_database_connection_open(
    box: Appliance,
) -> None:
    """Each association runs in a thread of its own; its database connection (two file
    descriptors) used to stay open after it: 500 queries and select() in the listener
    failed on descriptors above 1023, refusing every new connection."""
    schedule(box)
    db_file = box.config.data_dir / DB_FILENAME
    assert len(results(find(box, make_mwl_query()))) == 1
    before = open_fds(db_file)
    for _ in range(60):
        assert len(results(find(box, make_mwl_query()))) == 1
    # A leak keeps 120 descriptors open for good; closing ones lag behind their
    # association threads on a loaded machine, so wait long enough for those.
    assert wait_for(lambda: open_fds(db_file) <= before + 4, 20)


def test_station_day_list(box: Appliance) -> None:
    for hour in (8, 9, 10):
        schedule(box, patient_id=f"P{hour}", start=datetime(2026, 11, 24, hour))
    schedule(box, patient_id="OTHERDAY", start=datetime(2026, 11, 25, 9))
    schedule(box, patient_id="OTHERSTATION", station_ae="MR1", modality="MR")
    rsp = find(
        box,
        make_mwl_query(
            sps_ScheduledStationAETitle="CT1", sps_ScheduledProcedureStepStartDate="20261124"
        ),
    )
    found = results(rsp)
    assert [ds.PatientID for ds in found] == ["P8", "P9", "P10"]
    sps = found[0].ScheduledProcedureStepSequence[0]
    assert sps.ScheduledStationAETitle == "CT1" and sps.Modality == "CT"
    assert sps.ScheduledProcedureStepStartTime == "080000"
    assert found[0].SpecificCharacterSet == "ISO_IR 192"


def test_returns_exactly_requested_keys_and_ff01_for_unsupported(box: Appliance) -> None:
    schedule(box)
    q = Dataset()
    q.PatientName = ""
    q.StudyDate = ""  # not a worklist key: returned empty, status FF01
    rsp = find(box, q)
    assert rsp[0][0] == status.PENDING_WARNING
    ds = rsp[0][1]
    assert sorted(e.keyword for e in ds) == ["PatientName", "SpecificCharacterSet", "StudyDate"]
    assert ds.StudyDate == ""


def test_study_uid_stays_the_same_between_queries(box: Appliance) -> None:
    schedule(box)
    a = results(find(box, make_mwl_query()))[0].StudyInstanceUID
    b = results(find(box, make_mwl_query()))[0].StudyInstanceUID
    assert a == b and len(a) > 10


def test_bad_query_values_get_c000_with_comment(box: Appliance) -> None:
    q = make_mwl_query(sps_ScheduledProcedureStepStartDate="2026-11-24")
    rsp = find(box, q)
    assert rsp[-1][0] == status.UNABLE_TO_PROCESS
    assert "ScheduledProcedureStepStartDate" in rsp[-1][2].ErrorComment
    # The service keeps running.
    schedule(box)
    assert len(results(find(box, make_mwl_query()))) == 1


def test_query_retrieve_level_gets_a900(box: Appliance) -> None:
    q = make_mwl_query(QueryRetrieveLevel="STUDY")
    assert find(box, q)[-1][0] == status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS


def test_unknown_calling_ae_gets_nothing(box: Appliance) -> None:
    schedule(box)
    rsp = find(box, make_mwl_query(), calling="STRANGER")
    assert len(rsp) == 1 and rsp[0][0] == status.UNABLE_TO_PROCESS
    assert "not a configured device" in rsp[0][2].ErrorComment


def test_calling_ae_policy_filters_by_station(box: Appliance) -> None:
    schedule(box, patient_id="A", station_ae="CT1")
    schedule(box, patient_id="B", station_ae="CT2")
    assert [d.PatientID for d in results(find(box, make_mwl_query(), calling="CT2"))] == ["B"]
    # An explicit station in the query wins over the policy.
    q = make_mwl_query(sps_ScheduledStationAETitle="CT1")
    assert [d.PatientID for d in results(find(box, q, calling="CT2"))] == ["A"]
    # CT1 has no such policy and sees both.
    assert len(results(find(box, make_mwl_query(), calling="CT1"))) == 2


def test_result_cap_ends_with_a700(box: Appliance) -> None:
    for i in range(5):
        schedule(box, patient_id=f"P{i}", start=datetime(2026, 11, 24, 8, i))
    rsp = find(box, make_mwl_query(), calling="CAPPED")
    assert [r[0] for r in rsp] == [status.PENDING] * 3 + [status.OUT_OF_RESOURCES]
    assert "More than 3" in rsp[-1][2].ErrorComment


def test_c_cancel_stops_responses(box: Appliance, monkeypatch: pytest.MonkeyPatch) -> None:
    """A C-CANCEL mid-stream ends the responses with Cancel (0xFE00).

    The rows come as from a slow SD card (2 ms each after the first 100): on a fast
    machine all 1,000 responses were on the wire before the cancel arrived, on a loaded
    one the cancel raced them; now the SCP is still answering when it comes."""
    rows = WorklistRepo.candidates

    def slow_rows(self: WorklistRepo, narrowing: Any) -> Any:
        for n, row in enumerate(rows(self, narrowing)):
            if n >= 100:
                time.sleep(0.002)
            yield row

    monkeypatch.setattr(WorklistRepo, "candidates", slow_rows)
    repo = WorklistRepo(box.runtime.store)
    with box.runtime.store.write():  # one transaction for the lot
        for i in range(1000):
            repo.schedule(
                make_step_request(patient_id=f"P{i:04d}", start=datetime(2026, 11, 24, 8, i % 60))
            )
    ae = AE(ae_title="CT1")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", box.dicom_port, ae_title="APPLIANCE")
    codes = []
    msg_id = 7
    for st, _ds in assoc.send_c_find(
        make_mwl_query(), ModalityWorklistInformationFind, msg_id=msg_id
    ):
        codes.append(int(st.Status))
        if len(codes) == 1:
            assoc.send_c_cancel(msg_id, query_model=ModalityWorklistInformationFind)
    assoc.release()
    assert codes[-1] == status.CANCEL
    assert len(codes) < 1000


def test_character_set_per_device_and_fallback(box: Appliance) -> None:
    schedule(box, patient_id="LAT", patient_name="Müller^Jürgen")
    schedule(box, patient_id="JPN", patient_name="Yamada^Tarou=山田^太郎=やまだ^たろう")
    by_id = {d.PatientID: d for d in results(find(box, make_mwl_query(), calling="LATIN"))}
    assert by_id["LAT"].SpecificCharacterSet == "ISO_IR 100"
    assert str(by_id["LAT"].PatientName) == "Müller^Jürgen"
    # Not representable in Latin-1: sent in UTF-8 rather than with question marks.
    assert by_id["JPN"].SpecificCharacterSet == "ISO_IR 192"
    assert str(by_id["JPN"].PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"


def test_query_in_japanese_answers_in_japanese(box: Appliance) -> None:
    schedule(box, patient_id="JPN", patient_name="Yamada^Tarou=山田^太郎=やまだ^たろう")
    q = make_mwl_query(PatientName="山田*")
    q.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    found = results(find(box, q))
    assert len(found) == 1
    assert found[0].SpecificCharacterSet == ["", "ISO 2022 IR 87"]
    assert str(found[0].PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"


def test_query_is_audited_with_item_count(box: Appliance) -> None:
    schedule(box)
    find(box, make_mwl_query())
    rows = audit.recent(box.runtime.store, action="worklist-query")
    assert rows[0]["actor"] == "CT1" and rows[0]["detail"] == "1 items"


# -- MPPS ---------------------------------------------------------------------


def mpps_assoc(app: Appliance, calling: str = "CT1"):
    ae = AE(ae_title=calling)
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", app.dicom_port, ae_title="APPLIANCE")
    assert assoc.is_established
    return assoc


def mpps_create_ds(step: dict[str, Any] | None, **over: Any) -> Dataset:
    ds = Dataset()
    ref = Dataset()
    ref.StudyInstanceUID = step["study_instance_uid"] if step else generate_uid()
    ref.AccessionNumber = step["accession_number"] if step else ""
    ref.RequestedProcedureID = step["requested_procedure_id"] if step else ""
    ref.ScheduledProcedureStepID = step["sps_id"] if step else ""
    ds.ScheduledStepAttributesSequence = [ref]
    ds.PatientName = "Doe^John"
    ds.PatientID = "PID001"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT1"
    ds.PerformedProcedureStepStartDate = "20261124"
    ds.PerformedProcedureStepStartTime = "093100"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepEndDate = None
    ds.PerformedProcedureStepEndTime = None
    ds.Modality = "CT"
    ds.StudyID = "1"
    ds.PerformedSeriesSequence = []
    for k, v in over.items():
        setattr(ds, k, v)
    return ds


def test_mpps_in_progress_then_completed_moves_the_step(box: Appliance) -> None:
    repo = WorklistRepo(box.runtime.store)
    pk = schedule(box)
    step = repo.get(pk)
    uid = generate_uid()
    assoc = mpps_assoc(box)
    st, _ = assoc.send_n_create(mpps_create_ds(step), ModalityPerformedProcedureStep, uid)
    assert st.Status == status.SUCCESS
    assert repo.get(pk)["status"] == "STARTED"
    # Still listed while in progress (hide_completed hides only final ones).
    assert len(results(find(box, make_mwl_query()))) == 1

    mods = Dataset()
    mods.PerformedProcedureStepStatus = "COMPLETED"
    mods.PerformedProcedureStepEndDate = "20261124"
    mods.PerformedProcedureStepEndTime = "100000"
    st, _ = assoc.send_n_set(mods, ModalityPerformedProcedureStep, uid)
    assert st.Status == status.SUCCESS
    assert repo.get(pk)["status"] == "COMPLETED"
    # Final: no more changes.
    again = Dataset()
    again.PerformedProcedureStepStatus = "DISCONTINUED"
    st, _ = assoc.send_n_set(again, ModalityPerformedProcedureStep, uid)
    assert st.Status == status.PROCESSING_FAILURE
    assert "no longer be updated" in st.ErrorComment
    assoc.release()
    # The audit log names the patient's accession and ID, not only the MPPS UID.
    details = [r["detail"] for r in box.runtime.store.query(
        "SELECT detail FROM audit WHERE action LIKE 'mpps-%' ORDER BY id")]  # fmt: skip
    expected = f"1 step: accession {step['accession_number']} (patient ID {step['patient_id']})"
    assert details == [expected, expected]
    # Completed steps are hidden from CT1 but shown to a device that wants them.
    assert results(find(box, make_mwl_query())) == []
    shown = results(find(box, make_mwl_query(), calling="SHOWALL"))
    assert (
        shown[0].ScheduledProcedureStepSequence[0].get("ScheduledProcedureStepStatus", "COMPLETED")
        == "COMPLETED"
    )


def test_mpps_validation_statuses(box: Appliance) -> None:
    pk = schedule(box)
    step = WorklistRepo(box.runtime.store).get(pk)
    assoc = mpps_assoc(box)
    missing = mpps_create_ds(step)
    del missing.PerformedProcedureStepID
    st, _ = assoc.send_n_create(missing, ModalityPerformedProcedureStep, generate_uid())
    assert st.Status == status.MISSING_ATTRIBUTE and "PerformedProcedureStepID" in st.ErrorComment

    wrong = mpps_create_ds(step, PerformedProcedureStepStatus="COMPLETED")
    st, _ = assoc.send_n_create(wrong, ModalityPerformedProcedureStep, generate_uid())
    assert st.Status == status.INVALID_ATTRIBUTE_VALUE

    uid = generate_uid()
    st, _ = assoc.send_n_create(mpps_create_ds(step), ModalityPerformedProcedureStep, uid)
    assert st.Status == status.SUCCESS
    st, _ = assoc.send_n_create(mpps_create_ds(step), ModalityPerformedProcedureStep, uid)
    assert st.Status == status.DUPLICATE_SOP_INSTANCE

    mods = Dataset()
    mods.PerformedProcedureStepStatus = "COMPLETED"  # without end date/time
    st, _ = assoc.send_n_set(mods, ModalityPerformedProcedureStep, uid)
    assert st.Status == status.MISSING_ATTRIBUTE_VALUE and "EndDate" in st.ErrorComment

    st, _ = assoc.send_n_set(mods, ModalityPerformedProcedureStep, generate_uid())
    assert st.Status == status.NO_SUCH_SOP_INSTANCE
    assoc.release()
    assert WorklistRepo(box.runtime.store).get(pk)["status"] == "STARTED"


def test_mpps_unscheduled_is_recorded(box: Appliance) -> None:
    uid = generate_uid()
    assoc = mpps_assoc(box)
    st, _ = assoc.send_n_create(mpps_create_ds(None), ModalityPerformedProcedureStep, uid)
    assoc.release()
    assert st.Status == status.SUCCESS
    row = box.runtime.store.query(
        "SELECT unscheduled, status FROM mpps WHERE sop_instance_uid = ?", (uid,)
    )
    assert row == [{"unscheduled": 1, "status": "IN PROGRESS"}]


def test_mpps_from_unknown_ae_is_refused(box: Appliance) -> None:
    assoc = mpps_assoc(box, calling="STRANGER")
    st, _ = assoc.send_n_create(
        mpps_create_ds(None), ModalityPerformedProcedureStep, generate_uid()
    )
    assoc.release()
    assert st.Status == status.NOT_AUTHORIZED


def test_concurrent_queries(box: Appliance) -> None:
    for i in range(10):
        schedule(box, patient_id=f"P{i}", start=datetime(2026, 11, 24, 8, i))
    counts: list[int] = []

    def worker() -> None:
        counts.append(len(results(find(box, make_mwl_query()))))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counts == [10] * 6


def test_big_endian_context_uses_pydicom_encoding(box: Appliance) -> None:
    """Transfer syntaxes the direct encoder does not write go through pydicom's path."""
    from pydicom.uid import ExplicitVRBigEndian

    schedule(box, patient_id="BE1", patient_name="Yamada^Tarou=山田^太郎=やまだ^たろう")
    ae = AE(ae_title="CT1")
    ae.add_requested_context(ModalityWorklistInformationFind, [ExplicitVRBigEndian])
    assoc = ae.associate("127.0.0.1", box.dicom_port, ae_title="APPLIANCE")
    assert assoc.accepted_contexts[0].transfer_syntax[0] == ExplicitVRBigEndian
    rsp = [
        (int(st.Status), ds)
        for st, ds in assoc.send_c_find(make_mwl_query(), ModalityWorklistInformationFind)
    ]
    assoc.release()
    assert [code for code, _ in rsp] == [status.PENDING, status.SUCCESS]
    assert str(rsp[0][1].PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"
