"""The JSON API: Bearer tokens, the same validation as the form (400 naming the field)."""

from __future__ import annotations

from datetime import date

import pytest
from flask.testing import FlaskClient

from appliance import accounts
from appliance.worklist.repo import WorklistRepo
from tests.webclient import Web

BODY = {
    "patient_id": "P0001",
    "patient_name": "Yamada^Tarou=山田^太郎=やまだ^たろう",
    "birth_date": "19700304",
    "sex": "M",
    "procedure": "CTHEAD",
    "station_ae": "CT1",
    "start": f"{date.today().isoformat()}T10:30",
    "accession_number": "API0001",
}


def api_client(web: Web, role: str = accounts.FRONT_DESK, name: str = "ris") -> FlaskClient:
    pk = web.user(name, role)
    token = accounts.create_token(web.store, pk, "test")
    return web.client(Authorization=f"Bearer {token}")


@pytest.fixture
def ris(web: Web) -> FlaskClient:
    return api_client(web)


@pytest.fixture
def root(web: Web) -> FlaskClient:
    return api_client(web, accounts.ADMIN, "robot")


def test_create_get_list_procedure(web: Web, ris: FlaskClient) -> None:
    resp = ris.post("/api/v1/procedures", json=BODY)
    assert resp.status_code == 201, resp.json
    got = resp.json
    assert got["patient"]["name"] == BODY["patient_name"] and got["status"] == "SCHEDULED"
    assert got["modality"] == "CT" and got["procedure"]["code"] == "CTHEAD"
    assert got["start"] == f"{date.today().isoformat()}T10:30:00"
    assert ris.get(f"/api/v1/procedures/{got['id']}").json == got
    listed = ris.get("/api/v1/procedures", query_string={"date": date.today().isoformat()}).json
    assert [p["id"] for p in listed["procedures"]] == [got["id"]]
    assert ris.get("/api/v1/procedures?station=MR1").json["procedures"] == []
    assert [p["id"] for p in ris.get("/api/v1/procedures?q=やまだ").json["procedures"]] == [
        got["id"]
    ]
    assert web.count("audit", "action = 'schedule' AND actor = 'ris'") == 1


def test_name_groups_as_separate_fields(web: Web, ris: FlaskClient) -> None:
    body = {k: v for k, v in BODY.items() if k != "patient_name"}
    body.update(name_alpha_family="Yamada", name_ideo_family="山田", name_ideo_given="太郎")
    assert ris.post("/api/v1/procedures", json=body).json["patient"]["name"] == "Yamada=山田^太郎"


@pytest.mark.parametrize(
    "over,field",
    [
        ({"patient_id": ""}, "patient_id"),
        ({"patient_name": ""}, "patient_name"),
        ({"patient_name": "A=B=C=D"}, "patient_name"),
        ({"patient_name": "a\\b"}, "patient_name"),
        ({"birth_date": "19701340"}, "birth_date"),
        ({"sex": "Q"}, "sex"),
        ({"procedure": "NOPE"}, "procedure"),
        ({"station_ae": "PACS"}, "station_ae"),
        ({"start": "tomorrow"}, "start"),
        ({"priority": "URGENT"}, "priority"),
        ({"accession_number": "X" * 17}, "accession_number"),
    ],
)
def test_bad_input_is_400_naming_the_field(
    web: Web, ris: FlaskClient, over: dict, field: str
) -> None:
    resp = ris.post("/api/v1/procedures", json={**BODY, **over})
    assert resp.status_code == 400
    assert resp.json["error"] == "validation" and resp.json["field"] == field
    assert web.count("steps") == 0


def test_body_must_be_a_json_object(web: Web, ris: FlaskClient) -> None:
    for body in ("not json", "[1, 2]"):
        resp = ris.post("/api/v1/procedures", data=body, content_type="application/json")
        assert resp.status_code == 400 and "JSON object" in resp.json["message"]
    assert ris.get("/api/v1/procedures?date=27.11.2026").json["field"] == "date"


def test_update_and_cancel(web: Web, ris: FlaskClient) -> None:
    pk = ris.post("/api/v1/procedures", json=BODY).json["id"]
    resp = ris.put(f"/api/v1/procedures/{pk}", json={**BODY, "start": f"{date.today()}T16:00"})
    assert resp.status_code == 200 and resp.json["start"].endswith("T16:00:00")
    bad = ris.put(f"/api/v1/procedures/{pk}", json={**BODY, "station_ae": ""})
    assert bad.status_code == 400 and bad.json["field"] == "station_ae"
    resp = ris.post(f"/api/v1/procedures/{pk}/cancel", json={"reason": "duplicate"})
    assert resp.status_code == 200 and resp.json["status"] == "CANCELED"
    assert ris.post(f"/api/v1/procedures/{pk}/cancel").status_code == 409
    assert ris.put(f"/api/v1/procedures/{pk}", json=BODY).status_code == 409
    assert ris.get("/api/v1/procedures/999").status_code == 404
    assert ris.put("/api/v1/procedures/999", json=BODY).status_code == 404
    assert ris.post("/api/v1/procedures/999/cancel").status_code == 404


def test_changes_follow_mpps(web: Web, ris: FlaskClient) -> None:
    pk = ris.post("/api/v1/procedures", json=BODY).json["id"]
    since = "2000-01-01T00:00:00.000Z"
    WorklistRepo(web.store).set_status([pk], "STARTED")
    rows = ris.get("/api/v1/procedures/changes", query_string={"since": since}).json["rows"]
    assert [(r["pk"], r["status"]) for r in rows] == [(pk, "STARTED")]


def test_devices(web: Web, ris: FlaskClient, root: FlaskClient) -> None:
    listed = ris.get("/api/v1/devices").json["devices"]
    assert [d["ae_title"] for d in listed] == ["CT1", "MR1", "PACS"]
    assert ris.get("/api/v1/devices/CT1").json["managed_by"] == "config"
    assert ris.get("/api/v1/devices/NOPE").status_code == 404
    body = {"ae_title": "US1", "modality": "US", "port": 104, "hide_completed": False}
    assert ris.post("/api/v1/devices", json=body).status_code == 403
    resp = root.post("/api/v1/devices", json=body)
    assert resp.status_code == 201 and resp.json["hide_completed"] is False
    assert web.runtime.access.device("US1") is not None
    resp = root.put("/api/v1/devices/US1", json={**body, "character_set": "ISO_IR 192"})
    assert (
        resp.status_code == 200 and web.runtime.access.device("US1").character_set == "ISO_IR 192"
    )
    assert root.delete("/api/v1/devices/US1").status_code == 204
    assert web.runtime.access.device("US1") is None
    assert root.delete("/api/v1/devices/US1").status_code == 404
    assert root.delete("/api/v1/devices/CT1").json["field"] == "ae_title"


@pytest.mark.parametrize(
    "over,field",
    [
        ({"ae_title": ""}, "ae_title"),
        ({"port": "x"}, "port"),
        ({"port": True}, "port"),
        ({"port": 70000}, "port"),
        ({"role": "boss"}, "role"),
        ({"character_set": "KOI8"}, "character_set"),
    ],
)
def test_bad_device_is_400(web: Web, root: FlaskClient, over: dict, field: str) -> None:
    resp = root.post("/api/v1/devices", json={"ae_title": "US1", **over})
    assert resp.status_code == 400 and resp.json["field"] == field
    assert web.count("devices") == 3


def test_bad_or_revoked_tokens(web: Web) -> None:
    assert web.client(Authorization="Bearer apl_guess").get("/api/v1/devices").status_code == 401
    assert web.client(Authorization="Basic abc").get("/api/v1/devices").status_code == 401
    pk = web.user("gone")
    token = accounts.create_token(web.store, pk, "t")
    accounts.update_user(web.store, pk, accounts.FRONT_DESK, "", False)
    assert web.client(Authorization=f"Bearer {token}").get("/api/v1/devices").status_code == 401


def test_session_callers_need_the_csrf_header(web: Web, desk: FlaskClient) -> None:
    assert desk.get("/api/v1/devices").status_code == 200
    resp = desk.post("/api/v1/procedures", json=BODY)
    assert resp.status_code == 400 and resp.json["error"] == "csrf"
    with desk.session_transaction() as s:
        token = s["csrf"]
    resp = desk.post("/api/v1/procedures", json=BODY, headers={"X-CSRF-Token": token})
    assert resp.status_code == 201


def test_known_patient_with_other_name_needs_confirm_patient(web: Web, ris: FlaskClient) -> None:
    assert ris.post("/api/v1/procedures", json=BODY).status_code == 201
    other = {**BODY, "accession_number": "API0002", "patient_name": "Yamada^Hanako"}
    resp = ris.post("/api/v1/procedures", json=other)
    assert resp.status_code == 400 and resp.json["field"] == "patient_id"
    resp = ris.post("/api/v1/procedures", json={**other, "confirm_patient": True})
    assert resp.status_code == 201 and resp.json["patient"]["name"] == "Yamada^Hanako"
    dup = ris.post("/api/v1/procedures", json={**other, "confirm_patient": True})
    assert dup.status_code == 400 and dup.json["field"] == "accession_number"
