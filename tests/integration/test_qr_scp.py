"""The Query/Retrieve SCP over real associations: studies stored by C-STORE, then
queried at each level, moved to a Storage SCP and got over the same association."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import CTImageStorage, MRImageStorage
from pynetdicom import AE, build_role, evt

from appliance import status
from appliance.qr import index as qr_index
from appliance.server import Appliance
from tests.forward_helpers import FakePacs
from tests.qr_helpers import (
    JAPANESE,
    PATIENT_FIND,
    PATIENT_MOVE,
    QR_SCU,
    STUDY_GET,
    STUDY_MOVE,
    Held,
    find,
    get,
    identifier,
    matches,
    move,
    qr_config,
    store_studies,
)
from tests.raw_dimse import steady


@pytest.fixture
def dest(fake_pacs: Callable[..., FakePacs]) -> FakePacs:
    return fake_pacs(ae_title="DEST")


@pytest.fixture
def held_box(
    start_appliance: Callable[..., Appliance], dest: FakePacs, tmp_path: Path
) -> tuple[Appliance, Held]:
    app = start_appliance(qr_config(dest.port))
    return app, store_studies(app.dicom_port, tmp_path / "images")


def test_patient_level_lists_each_patient_with_counts(held_box: Any) -> None:
    app, held = held_box
    q = identifier(
        "PATIENT", PatientID="", PatientName="", NumberOfPatientRelatedStudies="",
        NumberOfPatientRelatedInstances="",
    )  # fmt: skip
    found = {str(d.PatientID): d for d in matches(find(app.dicom_port, q, PATIENT_FIND))}
    assert sorted(found) == ["P1", "P2", "P3"]
    assert str(found["P1"].PatientName) == "Doe^John"
    assert int(found["P1"].NumberOfPatientRelatedStudies) == 2
    assert int(found["P1"].NumberOfPatientRelatedInstances) == 7
    assert found["P1"].QueryRetrieveLevel == "PATIENT"


def test_study_level_returns_exactly_the_keys_asked_with_derived_values(held_box: Any) -> None:
    app, held = held_box
    q = identifier(
        "STUDY", PatientID="P1", StudyDate="20261201", StudyInstanceUID="",
        ModalitiesInStudy="", NumberOfStudyRelatedSeries="", NumberOfStudyRelatedInstances="",
        AccessionNumber="",
    )  # fmt: skip
    (study,) = matches(find(app.dicom_port, q))
    assert study.StudyInstanceUID == next(iter(held.studies))
    assert list(study.ModalitiesInStudy) == ["CT", "MR"]
    assert int(study.NumberOfStudyRelatedSeries) == 2
    assert int(study.NumberOfStudyRelatedInstances) == 5
    assert study.AccessionNumber == "ACC1"
    assert "PatientName" not in study and "StudyDescription" not in study


def test_wildcards_and_ranges(held_box: Any) -> None:
    app, _ = held_box

    def accessions(**keys: Any) -> list[str]:
        keys.setdefault("AccessionNumber", "")
        q = identifier("STUDY", **keys)
        return sorted(str(d.AccessionNumber) for d in matches(find(app.dicom_port, q)))

    assert accessions(PatientName="doe*") == ["ACC1", "ACC2"]  # PN: case-insensitive
    assert accessions(PatientName="R?e^Jane") == ["ACC3"]
    assert accessions(StudyDate="20261201-20261202") == ["ACC1", "ACC3"]
    assert accessions(StudyDate="-20261130") == ["ACC2"]
    assert accessions(StudyDate="20261203-") == ["ACC4"]
    assert accessions(StudyTime="0800-1000") == ["ACC1", "ACC3", "ACC4"]
    assert accessions(ModalitiesInStudy="MR") == ["ACC1"]
    assert accessions(StudyDescription="chest") == []  # LO: case-sensitive
    assert accessions(StudyDescription="Ch*") == ["ACC1"]
    assert accessions(AccessionNumber="ACC4\\ACC2") == ["ACC2", "ACC4"]  # as the worklist


def test_series_and_image_levels_within_a_study(held_box: Any) -> None:
    app, held = held_box
    study = next(iter(held.studies))
    q = identifier(
        "SERIES", StudyInstanceUID=study, SeriesInstanceUID="", Modality="",
        NumberOfSeriesRelatedInstances="",
    )  # fmt: skip
    series = {str(d.Modality): d for d in matches(find(app.dicom_port, q))}
    assert sorted(series) == ["CT", "MR"]
    assert int(series["CT"].NumberOfSeriesRelatedInstances) == 3
    ct = str(series["CT"].SeriesInstanceUID)
    q = identifier("IMAGE", StudyInstanceUID=study, SeriesInstanceUID=ct, SOPInstanceUID="",
                   InstanceNumber="")  # fmt: skip
    images = matches(find(app.dicom_port, q))
    assert sorted(str(d.SOPInstanceUID) for d in images) == sorted(held.studies[study][ct])
    two = "\\".join(held.studies[study][ct][:2])
    q = identifier("IMAGE", SeriesInstanceUID=ct, SOPInstanceUID=two)
    assert len(matches(find(app.dicom_port, q))) == 2  # UID list matching


def test_japanese_name_round_trips_with_its_three_component_groups(held_box: Any) -> None:
    app, _ = held_box
    q = identifier("PATIENT", PatientID="P3", PatientName="")
    q.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    (patient,) = matches(find(app.dicom_port, q, PATIENT_FIND))
    assert list(patient.SpecificCharacterSet) == ["", "ISO 2022 IR 87"]
    assert str(patient.PatientName) == JAPANESE
    # Matched on any component group: the ideographic one.
    q = identifier("PATIENT", PatientID="", PatientName="山田*")
    q.SpecificCharacterSet = "ISO_IR 192"
    (patient,) = matches(find(app.dicom_port, q, PATIENT_FIND))
    assert patient.PatientID == "P3" and str(patient.PatientName) == JAPANESE


def test_move_a_study_to_a_device(held_box: Any, dest: FakePacs) -> None:
    app, held = held_box
    study = next(iter(held.studies))
    rsp = move(app.dicom_port, identifier("STUDY", StudyInstanceUID=study), "DEST")
    final = rsp[-1][2]
    assert rsp[-1][0] == status.SUCCESS
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (5, 0)
    pending = [r[2] for r in rsp[:-1]]
    assert [int(p.NumberOfRemainingSuboperations) for p in pending] == [4, 3, 2, 1]
    got = sorted(str(ds.SOPInstanceUID) for _, ds, _ in dest.received)
    assert got == sorted(held.instances(study))


def test_move_a_patient_in_patient_root(held_box: Any, dest: FakePacs) -> None:
    app, held = held_box
    rsp = move(app.dicom_port, identifier("PATIENT", PatientID="P2"), "DEST", PATIENT_MOVE)
    assert rsp[-1][0] == status.SUCCESS
    assert len(dest.received) == 2


def test_unknown_move_destination_is_a801_naming_it(held_box: Any, dest: FakePacs) -> None:
    app, held = held_box
    study = next(iter(held.studies))
    for ae in ("NOBODY", "NOHOST"):
        rsp = move(app.dicom_port, identifier("STUDY", StudyInstanceUID=study), ae)
        assert [r[0] for r in rsp] == [status.MOVE_DESTINATION_UNKNOWN]
        assert ae in str(rsp[-1][2].ErrorComment)
    assert dest.received == []


def test_move_with_some_refused_is_b000_and_all_refused_a702(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    picky = fake_pacs(ae_title="DEST", statuses=[0xA700, 0x0000, 0xA700, 0xA700, 0xA700])
    app = start_appliance(qr_config(picky.port))
    held = store_studies(app.dicom_port, tmp_path / "images")
    first, second = list(held.studies)[:2]
    rsp = move(app.dicom_port, identifier("STUDY", StudyInstanceUID=first), "DEST")
    final = rsp[-1][2]
    assert rsp[-1][0] == status.SUBOPERATIONS_COMPLETE_WITH_FAILURES
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (1, 4)
    assert len(rsp[-1][1].FailedSOPInstanceUIDList) == 4
    picky.statuses = [0xA700, 0xA700]
    rsp = move(app.dicom_port, identifier("STUDY", StudyInstanceUID=second), "DEST")
    assert rsp[-1][0] == status.UNABLE_TO_PERFORM_SUBOPERATIONS
    assert rsp[-1][2].NumberOfFailedSuboperations == 2


def test_get_a_series_over_the_same_association(held_box: Any) -> None:
    app, held = held_box
    study = next(iter(held.studies))
    series, uids = next(iter(held.studies[study].items()))
    rsp, received = get(app.dicom_port, identifier("SERIES", SeriesInstanceUID=series))
    assert rsp[-1][0] == status.SUCCESS
    assert rsp[-1][2].NumberOfCompletedSuboperations == len(uids) == 3
    assert sorted(str(d.SOPInstanceUID) for d in received) == sorted(uids)
    assert received[0].PixelData  # the whole instance, as stored


def test_get_streams_the_files_as_held_and_a_cancel_meanwhile_ends_it_with_fe00(
    held_box: Any,
) -> None:
    """C-GET sub-operations go through store_wire on the requesting association; a
    C-CANCEL that arrives while one of them waits for its C-STORE-RSP (sent here before
    that response) is handed to pynetdicom, not taken for a broken response."""
    app, held = held_box
    study = next(iter(held.studies))
    total = len(held.instances(study))
    received: list[Any] = []
    cancel: list[int] = []

    def on_store(event: Any) -> int:
        received.append(event.dataset)
        if len(received) == 1:
            event.assoc.send_c_cancel(9, cancel[0])
        return 0x0000

    ae = AE(ae_title=QR_SCU)
    ae.add_requested_context(STUDY_GET)
    roles = []
    for uid in (CTImageStorage, MRImageStorage):
        ae.add_requested_context(uid)
        roles.append(build_role(uid, scp_role=True))
    assoc = steady(ae.associate(
        "127.0.0.1", app.dicom_port, ae_title="APPLIANCE", ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    ))  # fmt: skip
    cancel.append(next(
        cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == STUDY_GET
    ))  # fmt: skip
    query = identifier("STUDY", StudyInstanceUID=study)
    rsp = list(assoc.send_c_get(query, STUDY_GET, msg_id=9))
    assert assoc.is_established  # not aborted over the C-CANCEL
    assoc.release()
    final = rsp[-1][0]
    assert int(final.Status) == status.CANCEL
    done = int(final.NumberOfCompletedSuboperations)
    assert 1 <= done < total and len(received) == done
    assert int(final.NumberOfRemainingSuboperations) == total - done
    assert _qr_service(app).health()["streamed"] == done


def test_retrieve_needs_the_unique_key_of_its_level(held_box: Any) -> None:
    app, _ = held_box
    rsp = move(app.dicom_port, identifier("STUDY", PatientID="P1"), "DEST")
    assert [r[0] for r in rsp] == [status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS]
    assert "StudyInstanceUID" in str(rsp[0][2].ErrorComment)


def test_unknown_calling_ae_is_refused(
    start_appliance: Callable[..., Appliance], dest: FakePacs
) -> None:
    app = start_appliance(qr_config(dest.port))
    rsp = find(app.dicom_port, identifier("STUDY", StudyInstanceUID=""), calling="STRANGER")
    assert [r[0] for r in rsp] == [status.NOT_AUTHORIZED]
    rsp = move(app.dicom_port, identifier("STUDY", StudyInstanceUID="1.2.3"), "DEST",
               calling="STRANGER")  # fmt: skip
    assert [r[0] for r in rsp] == [status.NOT_AUTHORIZED]


def test_removed_instances_leave_the_index(held_box: Any) -> None:
    app, held = held_box
    study = list(held.studies)[1]
    with app.runtime.store.write() as db:
        db.execute(
            "UPDATE forward_instances SET removed_at = 1 WHERE sop_instance_uid = ?",
            (held.instances(study)[0],),
        )
    q = identifier("STUDY", StudyInstanceUID=study, NumberOfStudyRelatedInstances="")
    (found,) = matches(find(app.dicom_port, q))
    assert int(found.NumberOfStudyRelatedInstances) == 1
    rows = app.runtime.store.query("SELECT COUNT(*) AS n FROM qr_instances")
    assert rows[0]["n"] == 9


def test_index_is_written_with_the_queue_row(held_box: Any) -> None:
    app, held = held_box
    rows = app.runtime.store.query(
        "SELECT COUNT(*) AS n FROM forward_instances f JOIN qr_instances q ON q.instance_id = f.id"
    )
    assert rows[0]["n"] == 10


def test_cancel_a_move_ends_it_with_fe00_and_the_counts(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    gate = threading.Event()
    slow = fake_pacs(ae_title="DEST", before_answer={1: lambda event: gate.wait(10)})
    app = start_appliance(qr_config(slow.port))
    held = store_studies(app.dicom_port, tmp_path / "images")
    study = next(iter(held.studies))
    ae = AE(ae_title=QR_SCU)
    ae.add_requested_context(STUDY_MOVE)
    assoc = steady(ae.associate("127.0.0.1", app.dicom_port, ae_title="APPLIANCE"))
    cx = assoc.accepted_contexts[0].context_id
    codes: list[int] = []
    final: Any = None
    query = identifier("STUDY", StudyInstanceUID=study)
    for st, _ in assoc.send_c_move(query, "DEST", STUDY_MOVE, msg_id=7):
        codes.append(int(st.Status))
        final = st
        if len(codes) == 1:  # the first image is sent, the second waits at the destination
            assoc.send_c_cancel(7, cx)
            gate.set()
    assoc.release()
    assert codes[0] == status.PENDING and codes[-1] == status.CANCEL
    done = int(final.NumberOfCompletedSuboperations) + int(final.NumberOfFailedSuboperations)
    assert 2 <= done < 5
    assert int(final.NumberOfRemainingSuboperations) == 5 - done
    assert len(slow.received) == done


def test_the_intake_indexes_from_the_start_it_holds(
    start_appliance: Callable[..., Appliance], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_file_reads(path: Path) -> None:
        raise AssertionError(f"the index read {path} again")

    monkeypatch.setattr(qr_index, "read_attributes", no_file_reads)
    app = start_appliance(qr_config())
    held = store_studies(app.dicom_port, tmp_path / "images")
    q = identifier("STUDY", StudyInstanceUID="", PatientName="")
    found = matches(find(app.dicom_port, q))
    assert sorted(str(d.StudyInstanceUID) for d in found) == sorted(held.studies)
    assert JAPANESE in {str(d.PatientName) for d in found}


def _qr_service(app: Appliance) -> Any:
    return next(s for s in app.services if s.name == "qr")


def test_move_streams_the_files_as_held_with_the_move_originator(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    seen: list[tuple[str, int]] = []

    def originator(event: Any) -> None:
        rq = event.request
        seen.append((str(rq.MoveOriginatorApplicationEntityTitle), int(rq.MoveOriginatorMessageID)))

    dest = fake_pacs(ae_title="DEST", before_answer={n: originator for n in range(5)})
    app = start_appliance(qr_config(dest.port))
    held = store_studies(app.dicom_port, tmp_path / "images")
    study = next(iter(held.studies))
    ae = AE(ae_title=QR_SCU)
    ae.add_requested_context(STUDY_MOVE)
    assoc = steady(ae.associate("127.0.0.1", app.dicom_port, ae_title="APPLIANCE"))
    query = identifier("STUDY", StudyInstanceUID=study)
    codes = [int(st.Status) for st, _ in assoc.send_c_move(query, "DEST", STUDY_MOVE, msg_id=9)]
    assoc.release()
    assert codes == [status.PENDING] * 4 + [status.SUCCESS]
    assert seen == [(QR_SCU, 9)] * 5  # PS3.7 9.1.1.1: each sub-operation names the C-MOVE
    assert _qr_service(app).health()["streamed"] == 5
    assert sorted(dest.stored_uids()) == sorted(held.instances(study))
    held_syntax = app.runtime.store.query("SELECT DISTINCT transfer_syntax FROM forward_instances")
    assert [str(ts) for _, _, ts in dest.received] == [held_syntax[0]["transfer_syntax"]] * 5
    assert all(ds.PixelData for _, ds, _ in dest.received)


def test_move_to_a_destination_without_the_held_syntax_converts_through_pynetdicom(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    probe = start_appliance(qr_config(0))
    held = store_studies(probe.dicom_port, tmp_path / "images")
    stored = probe.runtime.store.query("SELECT DISTINCT transfer_syntax FROM forward_instances")
    other = (
        ImplicitVRLittleEndian
        if stored[0]["transfer_syntax"] == ExplicitVRLittleEndian
        else ExplicitVRLittleEndian
    )
    dest = fake_pacs(ae_title="DEST", syntaxes=[other])
    app = start_appliance(qr_config(dest.port))
    held = store_studies(app.dicom_port, tmp_path / "images2")
    study = next(iter(held.studies))
    rsp = move(app.dicom_port, identifier("STUDY", StudyInstanceUID=study), "DEST")
    assert rsp[-1][0] == status.SUCCESS
    assert rsp[-1][2].NumberOfCompletedSuboperations == 5
    assert _qr_service(app).health()["streamed"] == 0
    assert [str(ts) for _, _, ts in dest.received] == [str(other)] * 5
    assert sorted(dest.stored_uids()) == sorted(held.instances(study))


def test_each_transfer_syntax_gives_the_same_answers(held_box: Any) -> None:
    """Little endian answers are written by appliance.dicom.find_wire, big endian and
    deflated ones by pynetdicom: the peer decodes the same identifiers from both."""
    from pydicom.uid import (
        DeflatedExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
    )

    app, _ = held_box
    answers = {}
    for ts in (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
               DeflatedExplicitVRLittleEndian):  # fmt: skip
        ae = AE(ae_title=QR_SCU)
        ae.add_requested_context(PATIENT_FIND, [ts])
        assoc = steady(ae.associate("127.0.0.1", app.dicom_port, ae_title="APPLIANCE"))
        assert assoc.accepted_contexts[0].transfer_syntax[0] == ts
        query = identifier(
            "STUDY", PatientID="", PatientName="", StudyDescription="", ModalitiesInStudy="",
            NumberOfStudyRelatedInstances="", InstanceAvailability="", StudyInstanceUID="",
        )  # fmt: skip
        query.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
        rsp = [(int(st.Status), ds, st) for st, ds in assoc.send_c_find(query, PATIENT_FIND)]
        assoc.release()
        answers[ts] = sorted(
            (str(d.PatientID), str(d.PatientName), str(d.StudyDescription),
             str(d.ModalitiesInStudy), int(d.NumberOfStudyRelatedInstances),
             str(d.InstanceAvailability), list(d.SpecificCharacterSet))
            for d in matches(rsp)
        )  # fmt: skip
    first = answers[ImplicitVRLittleEndian]
    assert len(first) == 4
    assert [a[1] for a in first if a[0] == "P3"] == [JAPANESE]
    assert {a[5] for a in first} == {"ONLINE"}
    assert all(a[6] == ["", "ISO 2022 IR 87"] for a in first)
    for ts, got in answers.items():
        assert got == first, ts


def _joined(value: Any) -> str:
    return value if isinstance(value, str) else "\\".join(value)


def test_derived_keys_are_the_same_computed_late_or_matched_on(held_box: Any) -> None:
    """ModalitiesInStudy and the series counts are computed after matching for the
    matches only (qr.repo.LATE), or with the rows when a key matches on them."""
    app, _ = held_box

    def studies(**keys: Any) -> dict[str, tuple[str, ...]]:
        q = identifier("STUDY", AccessionNumber="", NumberOfStudyRelatedSeries="",
                       NumberOfStudyRelatedInstances="", **keys)  # fmt: skip
        return {
            str(d.AccessionNumber): (
                _joined(d.get("ModalitiesInStudy", "")),
                str(d.NumberOfStudyRelatedSeries),
                str(d.NumberOfStudyRelatedInstances),
            )
            for d in matches(find(app.dicom_port, q))
        }

    late = studies(ModalitiesInStudy="")
    assert late == {
        "ACC1": ("CT\\MR", "2", "5"), "ACC2": ("CT", "1", "2"),
        "ACC3": ("CT", "1", "2"), "ACC4": ("CT", "1", "1"),
    }  # fmt: skip
    assert studies(ModalitiesInStudy="CT") == late  # matched on: computed with the rows
    assert studies(ModalitiesInStudy="MR") == {"ACC1": late["ACC1"]}
    q = identifier("PATIENT", PatientID="", NumberOfPatientRelatedStudies="",
                   NumberOfPatientRelatedSeries="", NumberOfPatientRelatedInstances="")  # fmt: skip
    counts = {
        str(d.PatientID): (
            int(d.NumberOfPatientRelatedStudies),
            int(d.NumberOfPatientRelatedSeries),
            int(d.NumberOfPatientRelatedInstances),
        )
        for d in matches(find(app.dicom_port, q, PATIENT_FIND))
    }
    assert counts == {"P1": (2, 3, 7), "P2": (1, 1, 2), "P3": (1, 1, 1)}


def test_a_move_stops_when_the_requesting_association_is_gone(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    from tests.helpers import wait_for

    gate = threading.Event()
    slow = fake_pacs(ae_title="DEST", before_answer={1: lambda event: gate.wait(10)})
    app = start_appliance(qr_config(slow.port))
    held = store_studies(app.dicom_port, tmp_path / "images")
    study = next(iter(held.studies))
    ae = AE(ae_title=QR_SCU)
    ae.add_requested_context(STUDY_MOVE)
    assoc = steady(ae.associate("127.0.0.1", app.dicom_port, ae_title="APPLIANCE"))
    query = identifier("STUDY", StudyInstanceUID=study)
    for st, _ in assoc.send_c_move(query, "DEST", STUDY_MOVE, msg_id=3):
        assert int(st.Status) == status.PENDING  # after the first image
        assoc.abort()
        break

    def requester_aborted() -> bool:
        from appliance.dicom import compat

        server = app._dicom_server
        assert server is not None
        mine = [a for a in server.active_associations if a.requestor.ae_title == QR_SCU]
        return all(compat.dul_state(a.dul) != "Sta6" for a in mine)

    wait_for(requester_aborted, timeout=10)  # the appliance's DUL has the A-ABORT
    gate.set()
    wait_for(lambda: slow.released + slow.aborted >= 1, timeout=20)
    assert slow.requests == 2  # the second was under way; no third was sent
