"""MWL-RS and MPPS over REST (PS3.18 chapters 14 and 15) against a live appliance, on the
same tables as the DIMSE worklist and MPPS: requests written after the standard's
examples (B.37, B.38), the steps' status followed as N-CREATE / N-SET move it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from appliance.server import Appliance
from appliance.worklist.repo import WorklistRepo
from tests.dicomweb_helpers import Box, api_token, values
from tests.factories import make_step_request
from tests.qr_helpers import Held

MWL = "/dicomweb/modality-scheduled-procedure-steps"
SPS, PID = "00400100", "00100020"
JSON_IN = {"Content-Type": "application/dicom+json", "Accept": "application/dicom+json"}
STEPS = [
    dict(patient_id="P100", patient_name="Doe^John", start=datetime(2026, 11, 24, 8, 0)),
    dict(patient_id="P101", patient_name="Müller^Jürgen", start=datetime(2026, 11, 24, 10, 30)),
    dict(patient_id="P102", patient_name="Yamada^Tarou=山田^太郎=やまだ^たろう",
         start=datetime(2026, 11, 24, 14, 0)),
    dict(patient_id="P104", patient_name="Tanaka^Hanako", start=datetime(2026, 11, 25, 13, 0),
         station_ae="MR1", modality="MR"),
]  # fmt: skip


@pytest.fixture
def box(start_appliance: Any) -> Iterator[tuple[Box, list[int]]]:
    app: Appliance = start_appliance({"devices": [{"ae_title": "CT1"}, {"ae_title": "MR1"}]})
    repo = WorklistRepo(app.runtime.store)  # type: ignore[union-attr]
    pks = [repo.schedule(make_step_request(**s)) for s in STEPS]
    yield Box(app, Held(), api_token(app)), pks


def ids(items: list[dict[str, Any]]) -> list[str]:
    return sorted(values(i, PID)[0] for i in items)


def test_search_returns_every_scheduled_step_as_dicom_json(box: Any) -> None:
    b, _ = box
    code, headers, items = b.json(MWL)
    assert code == 200 and headers["content-type"] == "application/dicom+json"
    assert ids(items) == ["P100", "P101", "P102", "P104"]
    jp = next(i for i in items if values(i, PID) == ["P102"])
    assert jp["00100010"]["Value"] == [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    ]
    sps = values(jp, SPS)[0]
    assert values(sps, "00400001") == ["CT1"] and values(sps, "00400020") == ["SCHEDULED"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("PatientID=P101", ["P101"]),
        ("00100020=P104", ["P104"]),
        ("PatientName=doe*", ["P100"]),
        ("PatientName=muller*", ["P101"]),  # accent- and case-insensitive, as C-FIND
        ("ScheduledProcedureStepSequence.Modality=MR", ["P104"]),
        ("00400100.00400001=CT1", ["P100", "P101", "P102"]),
        ("ScheduledProcedureStepSequence.ScheduledProcedureStepStartDate=20261125", ["P104"]),
        (
            "ScheduledProcedureStepSequence.ScheduledProcedureStepStartDate=20261124"
            "&ScheduledProcedureStepSequence.ScheduledProcedureStepStartTime=0900-1200",
            ["P101"],
        ),
        ("limit=2&offset=3", ["P104"]),
    ],
)
def test_matching_follows_the_worklist_rules(box: Any, query: str, expected: list[str]) -> None:
    b, _ = box
    code, _, items = b.json(f"{MWL}?{query}")
    assert code == 200 and ids(items) == expected


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("Nonsense=1", "Nonsense"),
        ("ScheduledProcedureStepSequence.Nope=1", "ScheduledProcedureStepSequence.Nope"),
        ("ScheduledProcedureStepSequence.ScheduledProcedureStepStartDate=tomorrow",
         "ScheduledProcedureStepSequence.ScheduledProcedureStepStartDate"),
        ("limit=x", "limit"),
        ("includefield=Bogus", "Bogus"),
    ],
)  # fmt: skip
def test_bad_worklist_queries_get_400(box: Any, query: str, field: str) -> None:
    b, _ = box
    code, _, body = b.json(f"{MWL}?{query}")
    assert code == 400 and body["field"] == field


def test_unsupported_keys_and_fuzzy_matching_are_warned(box: Any) -> None:
    b, _ = box
    code, headers, items = b.json(f"{MWL}?Rows=1&fuzzymatching=true")
    assert code == 200 and len(items) == 4
    assert "fuzzymatching" in headers["warning"] and "Rows" in headers["warning"]


def create_body(step: dict[str, Any], **over: Any) -> bytes:
    """An N-CREATE attribute list as PS3.18 B.37 sends it: one DICOM JSON object."""
    ref = Dataset()
    ref.StudyInstanceUID = step["study_instance_uid"]
    ref.AccessionNumber = step["accession_number"]
    ref.RequestedProcedureID = step["requested_procedure_id"]
    ref.ScheduledProcedureStepID = step["sps_id"]
    ds = Dataset()
    ds.ScheduledStepAttributesSequence = [ref]
    ds.PatientName, ds.PatientID = step["patient_name"], step["patient_id"]
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT1"
    ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = "20261124", "080500"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepEndDate = ds.PerformedProcedureStepEndTime = None
    ds.Modality = "CT"
    for k, v in over.items():
        setattr(ds, k, v)
    return json.dumps(ds.to_json_dict()).encode()


def final_body(pps_status: str = "COMPLETED") -> bytes:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = pps_status
    ds.PerformedProcedureStepEndDate, ds.PerformedProcedureStepEndTime = "20261124", "083000"
    return json.dumps(ds.to_json_dict()).encode()


def test_mpps_create_retrieve_update_moves_the_step(box: Any) -> None:
    b, pks = box
    repo = WorklistRepo(b.app.runtime.store)  # type: ignore[union-attr]
    step = repo.get(pks[0])
    uid = generate_uid()
    path = f"/dicomweb/modality-performed-procedure-steps/{uid}"
    code, headers, _ = b.request("POST", path, body=create_body(step), headers=JSON_IN)
    assert code == 201 and headers["location"].endswith(path)
    assert repo.get(pks[0])["status"] == "STARTED"
    code, _, got = b.json(path)
    assert code == 200 and values(got[0], "00400252") == ["IN PROGRESS"]
    _, _, items = b.json(f"{MWL}?PatientID=P100")
    assert values(values(items[0], SPS)[0], "00400020") == ["STARTED"]
    code, _, _ = b.request("POST", path, body=create_body(step), headers=JSON_IN)
    assert code == 409  # the MPPS UID is in use (PS3.18 table 15.4.3-1)
    code, _, _ = b.request("POST", f"{path}?update", body=final_body(), headers=JSON_IN)
    assert code == 200 and repo.get(pks[0])["status"] == "COMPLETED"
    assert ids(b.json(MWL)[2]) == ["P101", "P102", "P104"]  # hidden as findscu -W hides it
    code, _, body = b.request("POST", f"{path}?update", body=final_body(), headers=JSON_IN)
    assert code == 409 and "no longer" in json.loads(body)["message"]


def test_mpps_update_as_example_b38_writes_it_and_errors(box: Any) -> None:
    b, pks = box
    repo = WorklistRepo(b.app.runtime.store)  # type: ignore[union-attr]
    uid = generate_uid()
    path = f"/dicomweb/modality-performed-procedure-steps/{uid}"
    assert b.request("POST", path, body=create_body(repo.get(pks[1])), headers=JSON_IN)[0] == 201
    code, _, _ = b.request(
        "POST", f"/dicomweb/modality-performed-procedure-steps/{uid}/update",
        body=final_body("DISCONTINUED"), headers=JSON_IN,
    )  # fmt: skip
    assert code == 200 and repo.get(pks[1])["status"] == "DISCONTINUED"
    other = f"/dicomweb/modality-performed-procedure-steps/{generate_uid()}"
    assert b.request("POST", f"{other}?update", body=final_body(), headers=JSON_IN)[0] == 404
    assert b.request("GET", other)[0] == 404
    code, _, body = b.request(
        "POST", other, body=create_body(repo.get(pks[2]), Modality=None), headers=JSON_IN
    )
    assert code == 400 and json.loads(body)["field"] == "Modality"
    assert b.request("POST", other, body=b"{", headers=JSON_IN)[0] == 400
    code, _, _ = b.request("POST", other, body=b"{}", headers={"Content-Type": "text/plain"})
    assert code == 415
    assert b.request("GET", "/dicomweb/modality-performed-procedure-steps/x.y")[0] == 400


def test_worklist_over_rest_needs_a_token(box: Any) -> None:
    b, _ = box
    assert b.request("GET", MWL, token=False)[0] == 401
