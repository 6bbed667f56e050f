"""The schedule form: new (Japanese patient), edit, cancel; every field checked on the server."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta

import pytest
from flask.testing import FlaskClient

from appliance.worklist.repo import WorklistRepo
from tests.webclient import Web, field_errors, post

JAPANESE = {
    "patient_id": "P0001",
    "name_alpha_family": "Yamada",
    "name_alpha_given": "Tarou",
    "name_ideo_family": "山田",
    "name_ideo_given": "太郎",
    "name_phon_family": "やまだ",
    "name_phon_given": "たろう",
    "birth_date": "1970-03-04",
    "sex": "M",
    "accession_number": "ACC0001",
    "procedure": "CTHEAD",
    "station_ae": "CT1",
    "start": f"{date.today().isoformat()}T10:30",
    "referring_physician": "Suzuki^Ichiro",
    "priority": "ROUTINE",
}


def only_step(web: Web) -> dict:
    rows = web.store.query("SELECT pk FROM steps")
    assert len(rows) == 1
    return WorklistRepo(web.store).get(rows[0]["pk"])


def test_new_form_offers_accession_stations_and_catalog(web: Web, desk: FlaskClient) -> None:
    page = desk.get("/steps/new").text
    # Empty: numbered when saved; the placeholder says which number that will be.
    assert re.search(
        r'name="accession_number" type="text" value="" placeholder="assigned when saved: A\d{10}"',
        page,
    )
    assert 'value="CT1"' in page and 'value="MR1"' in page
    assert 'value="PACS"' not in page  # not a modality
    assert 'value="CTHEAD"' in page and "CT Head" in page


def test_schedule_a_japanese_patient(web: Web, desk: FlaskClient) -> None:
    resp = post(desk, "/steps/new", JAPANESE)
    assert resp.status_code == 302, field_errors(resp.text)
    step = only_step(web)
    assert step["patient_name"] == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert step["patient_id"] == "P0001" and step["birth_date"] == "19700304" and step["sex"] == "M"
    assert step["accession_number"] == "ACC0001"
    assert step["station_ae"] == "CT1" and step["modality"] == "CT"
    assert step["start_date"] == date.today().strftime("%Y%m%d") and step["start_time"] == "103000"
    assert json.loads(step["procedure_code"]) == {
        "CodeValue": "CTHEAD",
        "CodingSchemeDesignator": "LOCAL",
        "CodeMeaning": "CT Head",
    }
    assert json.loads(step["protocol"])[0]["CodeValue"] == "CTH-R"
    assert step["procedure_description"] == "CT Head" and step["sps_description"] == "Head routine"
    assert step["referring_physician"] == "Suzuki^Ichiro" and step["status"] == "SCHEDULED"
    audit = web.store.query("SELECT * FROM audit WHERE action = 'schedule'")
    assert audit[0]["actor"] == "desk" and "ACC0001" in audit[0]["detail"]
    board = desk.get(resp.location).text
    assert "山田 太郎" in board and "Yamada Tarou" in board and "ACC0001" in board


def test_alphabetic_name_only_and_generated_accession(web: Web, desk: FlaskClient) -> None:
    for _ in range(3):  # views of the form cost no number
        page = desk.get("/steps/new").text
    offered = re.search(r'placeholder="assigned when saved: ([^"]+)"', page).group(1)
    assert offered.endswith("0001")
    data = {
        **JAPANESE,
        "name_ideo_family": "",
        "name_ideo_given": "",
        "name_phon_family": "",
        "name_phon_given": "",
    }
    data["accession_number"] = ""
    assert post(desk, "/steps/new", data).status_code == 302
    step = only_step(web)
    assert step["patient_name"] == "Yamada^Tarou" and step["accession_number"] == offered
    # The next one follows without a gap.
    page = desk.get("/steps/new").text
    following = re.search(r'placeholder="assigned when saved: ([^"]+)"', page).group(1)
    assert following == offered[:-4] + "0002"


BAD = [
    ({"patient_id": ""}, "patient_id"),
    ({"patient_id": "x" * 65}, "patient_id"),
    ({"patient_id": "a\\b"}, "patient_id"),
    (
        {
            "name_alpha_family": "",
            "name_alpha_given": "",
            "name_ideo_family": "",
            "name_ideo_given": "",
            "name_phon_family": "",
            "name_phon_given": "",
        },
        "patient_name",
    ),
    ({"name_alpha_family": "Ya^mada"}, "name_alpha_family"),
    ({"name_ideo_given": "太=郎"}, "name_ideo_given"),
    ({"name_phon_family": "x" * 31}, "name_phon_family"),
    ({"birth_date": "1970-02-30"}, "birth_date"),
    ({"birth_date": "yesterday"}, "birth_date"),
    ({"birth_date": (date.today() + timedelta(days=1)).isoformat()}, "birth_date"),
    ({"sex": "X"}, "sex"),
    ({"accession_number": "A" * 17}, "accession_number"),
    ({"procedure": ""}, "procedure"),
    ({"procedure": "NOPE"}, "procedure"),
    ({"station_ae": ""}, "station_ae"),
    ({"station_ae": "PACS"}, "station_ae"),
    ({"station_ae": "UNKNOWN"}, "station_ae"),
    ({"modality": "C-T"}, "modality"),
    ({"start": ""}, "start"),
    ({"start": "2026-13-01T10:00"}, "start"),
    ({"priority": "URGENT"}, "priority"),
    ({"referring_physician": "A=B=C=D"}, "referring_physician"),
    ({"requesting_physician": "x" * 65}, "requesting_physician"),
    ({"performing_physician": "tab\there"}, "performing_physician"),
    ({"sps_description": "x" * 65}, "sps_description"),
]


@pytest.mark.parametrize("over,field", BAD, ids=[f for _, f in BAD])
def test_bad_input_is_refused_next_to_the_field(
    web: Web, desk: FlaskClient, over: dict, field: str
) -> None:
    resp = post(desk, "/steps/new", {**JAPANESE, **over})
    assert resp.status_code == 400
    assert field in field_errors(resp.text)
    assert web.count("steps") == 0 and web.count("patients") == 0
    assert 'value="P0001"' in resp.text or field == "patient_id"  # what was typed is kept


def test_all_errors_are_shown_at_once(web: Web, desk: FlaskClient) -> None:
    resp = post(desk, "/steps/new", {"birth_date": "x", "start": "y"})
    assert resp.status_code == 400
    assert {
        "patient_id",
        "patient_name",
        "birth_date",
        "procedure",
        "station_ae",
        "start",
    } <= field_errors(resp.text)


def test_accession_in_use_by_another_patient(web: Web, desk: FlaskClient) -> None:
    assert post(desk, "/steps/new", JAPANESE).status_code == 302
    resp = post(desk, "/steps/new", {**JAPANESE, "patient_id": "P0002"})
    assert resp.status_code == 400
    assert "accession_number" in field_errors(resp.text)
    assert web.count("steps") == 1


def test_error_messages_in_japanese(web: Web) -> None:
    c = web.login("desk", **{"Accept-Language": "ja"})
    resp = post(c, "/steps/new", {**JAPANESE, "patient_id": "", "station_ae": "UNKNOWN"})
    assert "必須です" in resp.text and "登録された装置ではありません" in resp.text


def test_edit_changes_the_step_and_keeps_the_study(web: Web, desk: FlaskClient) -> None:
    post(desk, "/steps/new", JAPANESE)
    step = only_step(web)
    page = desk.get(f"/steps/{step['step_pk']}")
    assert (
        page.status_code == 200
        and 'value="山田"' in page.text
        and re.search(r'value="CTHEAD"[^>]*selected', page.text)
    )
    resp = post(
        desk,
        f"/steps/{step['step_pk']}",
        {
            **JAPANESE,
            "start": f"{date.today()}T14:00",
            "station_ae": "MR1",
            "modality": "MR",
            "procedure": "MRBRAIN",
        },
    )
    assert resp.status_code == 302
    after = only_step(web)
    assert (
        after["start_time"] == "140000"
        and after["station_ae"] == "MR1"
        and after["modality"] == "MR"
    )
    assert after["study_instance_uid"] == step["study_instance_uid"]
    assert web.count("audit", "action = 'update' AND actor = 'desk'") == 1


def test_edit_rejects_bad_input(web: Web, desk: FlaskClient) -> None:
    post(desk, "/steps/new", JAPANESE)
    step = only_step(web)
    resp = post(desk, f"/steps/{step['step_pk']}", {**JAPANESE, "start": "never"})
    assert resp.status_code == 400 and "start" in field_errors(resp.text)
    assert only_step(web)["start_time"] == "103000"


def test_a_completed_step_cannot_be_edited_or_cancelled(web: Web, desk: FlaskClient) -> None:
    post(desk, "/steps/new", JAPANESE)
    pk = only_step(web)["step_pk"]
    WorklistRepo(web.store).set_status([pk], "COMPLETED")
    resp = post(desk, f"/steps/{pk}", {**JAPANESE, "start": f"{date.today()}T15:00"})
    assert resp.status_code == 400 and "completed" in resp.text
    resp = post(desk, f"/steps/{pk}/cancel", {"reason": "x"})
    assert resp.status_code == 400 and "cancel" in field_errors(resp.text)
    assert only_step(web)["status"] == "COMPLETED" and only_step(web)["start_time"] == "103000"


def test_cancel(web: Web, desk: FlaskClient) -> None:
    post(desk, "/steps/new", JAPANESE)
    pk = only_step(web)["step_pk"]
    resp = post(desk, f"/steps/{pk}/cancel", {"reason": "patient called"})
    assert resp.status_code == 302
    assert only_step(web)["status"] == "CANCELED"
    row = web.store.query("SELECT * FROM audit WHERE action = 'cancel'")[0]
    assert row["actor"] == "desk" and row["detail"] == "patient called"
    assert "Yamada" not in desk.get(resp.location).text


def test_unknown_step_is_404(web: Web, desk: FlaskClient) -> None:
    assert desk.get("/steps/999").status_code == 404
    assert post(desk, "/steps/999", JAPANESE).status_code == 404
    assert post(desk, "/steps/999/cancel").status_code == 404


def test_schedule_again_prefills_the_patient(web: Web, desk: FlaskClient) -> None:
    post(desk, "/steps/new", JAPANESE)
    page = desk.get("/steps/new?patient_id=P0001").text
    assert 'value="山田"' in page and 'value="やまだ"' in page and 'value="1970-03-04"' in page


def test_find_patients(web: Web, desk: FlaskClient) -> None:
    post(desk, "/steps/new", JAPANESE)
    for q in ("山田", "yamada", "P000"):
        hits = desk.get("/patients.json", query_string={"q": q}).json["patients"]
        assert [h["patient_id"] for h in hits] == ["P0001"], q
    assert desk.get("/patients.json?q=zz").json["patients"] == []
    # LIKE wildcards in the search are plain characters (issue 11): no patient ID has them.
    for q in ("%", "P%1", "P0_01", "_"):
        assert desk.get("/patients.json", query_string={"q": q}).json["patients"] == [], q


def test_a_double_submit_schedules_once(web: Web, desk: FlaskClient) -> None:
    assert post(desk, "/steps/new", JAPANESE).status_code == 302
    again = post(desk, "/steps/new", JAPANESE)
    assert again.status_code == 400 and "accession_number" in field_errors(again.text)
    assert web.count("steps") == 1


def test_a_known_patient_id_with_other_details_needs_confirmation(
    web: Web, desk: FlaskClient
) -> None:
    assert post(desk, "/steps/new", JAPANESE).status_code == 302
    other = {
        **JAPANESE,
        "accession_number": "ACC0002",
        "name_ideo_given": "次郎",
        "name_alpha_given": "Jirou",
    }
    resp = post(desk, "/steps/new", other)
    assert resp.status_code == 400 and "patient_id" in field_errors(resp.text)
    assert 'id="known-patient"' in resp.text and "山田 太郎" in resp.text
    assert web.count("steps") == 1
    assert web.store.query("SELECT name FROM patients")[0]["name"].startswith("Yamada^Tarou=")
    resp = post(desk, "/steps/new", {**other, "confirm_patient": "1"})
    assert resp.status_code == 302
    assert (
        web.store.query("SELECT name FROM patients")[0]["name"]
        == "Yamada^Jirou=山田^次郎=やまだ^たろう"
    )
    # Same details again (as 'find a patient' fills them): no question asked.
    same = {**other, "accession_number": "ACC0003"}
    assert post(desk, "/steps/new", same).status_code == 302
    for over in ({"birth_date": "1971-01-01"}, {"sex": "F"}):
        resp = post(desk, "/steps/new", {**same, "accession_number": "ACC0004", **over})
        assert resp.status_code == 400 and "patient_id" in field_errors(resp.text)
    assert web.count("steps") == 3


def test_step_page_shows_what_the_modality_reported(web: Web, desk: FlaskClient) -> None:
    from pydicom.dataset import Dataset

    from appliance.worklist.mpps import MppsRecorder

    post(desk, "/steps/new", JAPANESE)
    step = only_step(web)
    assert 'id="performed"' not in desk.get(f"/steps/{step['step_pk']}").text
    ref = Dataset()
    ref.StudyInstanceUID = step["study_instance_uid"]
    ref.AccessionNumber = step["accession_number"]
    ref.ScheduledProcedureStepID = step["sps_id"]
    ds = Dataset()
    ds.ScheduledStepAttributesSequence = [ref]
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT1"
    ds.PerformedProcedureStepStartDate = "20261127"
    ds.PerformedProcedureStepStartTime = "103100"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "CT"
    MppsRecorder(web.store, WorklistRepo(web.store)).create("1.2.3.4", ds, "CT1")
    page = desk.get(f"/steps/{step['step_pk']}").text
    performed = page[page.index('id="performed"') :]
    assert "IN PROGRESS" in performed and "CT1" in performed
    assert 'id="cancel-step"' not in page  # started: no longer cancellable


def test_edit_onto_another_known_patient_needs_confirmation(web: Web, desk: FlaskClient) -> None:
    post(desk, "/steps/new", JAPANESE)
    other = {**JAPANESE, "patient_id": "P0002", "accession_number": "ACC0002"}
    other.update(name_alpha_given="Hanako", name_ideo_given="花子", name_phon_given="はなこ")
    other.update(birth_date="1980-01-01", sex="F")
    assert post(desk, "/steps/new", other).status_code == 302
    pk = web.store.query(
        "SELECT s.pk FROM steps s JOIN procedures p ON p.pk = s.procedure_pk WHERE p.accession_number = 'ACC0001'"
    )[0]["pk"]
    # Typing P0002 over Tarou's details would rename Hanako: asked first.
    resp = post(desk, f"/steps/{pk}", {**JAPANESE, "patient_id": "P0002"})
    assert resp.status_code == 400 and "patient_id" in field_errors(resp.text)
    names = {
        r["patient_id"]: r["name"] for r in web.store.query("SELECT patient_id, name FROM patients")
    }
    assert names["P0002"].startswith("Yamada^Hanako")
    # Editing Tarou's own step (same ID) needs no confirmation.
    assert post(desk, f"/steps/{pk}", {**JAPANESE, "name_alpha_given": "Taro"}).status_code == 302
