"""Hostile requests to the clinic pages over real sockets (issue 15): the next-slot
endpoint, the correction form, the health and help pages."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from appliance import accounts, catalog
from appliance.server import Appliance
from appliance.worklist.repo import WorklistRepo
from tests.factories import make_step_request
from tests.webclient import PASSWORD, PROCEDURES, SocketClient, csrf_of


@pytest.fixture
def box(start_appliance: Callable[..., Appliance]) -> Appliance:
    app = start_appliance({"devices": [{"ae_title": "CT1", "modality": "CT"}]})
    accounts.create_user(app.runtime.store, "admin", PASSWORD, accounts.ADMIN)
    accounts.create_user(app.runtime.store, "desk", PASSWORD, accounts.FRONT_DESK)
    catalog.save(app.runtime.store, PROCEDURES[0])
    return app


BAD_SLOT_QUERIES = [
    ("station=" + "A" * 5000, "station"),
    ("station=CT1%00", "station"),
    ("station=%27%20OR%201%3D1--", "station"),
    ("station=CT1&date=9999-12-31", "date"),  # would overflow the search window
    ("station=CT1&date=0001-01-01T00", "date"),
    ("station=CT1&date=" + "2" * 3000, "date"),
    ("date=2030-01-01", "station"),
]


def test_next_slot_refuses_bad_input_naming_the_field(box: Appliance) -> None:
    desk = SocketClient(box.web_port)
    assert desk.sign_in("desk").status == 302
    for query, field in BAD_SLOT_QUERIES:
        resp = desk.get("/steps/next-slot?" + query)
        assert resp.status == 400, (query[:40], resp.status, resp.text[:200])
        assert f'"field":"{field}"' in resp.text.replace(" ", ""), query[:40]
    # A past date gives a slot from now.
    resp = desk.get("/steps/next-slot?station=CT1&date=0001-01-01")
    assert resp.status == 200 and '"start":"' in resp.text.replace(" ", "")


def test_corrections_need_the_form_token_a_reason_and_bounded_text(box: Appliance) -> None:
    repo = WorklistRepo(box.runtime.store)
    pk = repo.schedule(make_step_request(station_ae="CT1"))
    repo.set_status([pk], "COMPLETED")
    desk = SocketClient(box.web_port)
    assert desk.sign_in("desk").status == 302
    forged = desk.request("POST", f"/steps/{pk}/correct", form={"correction_reason": "x"})
    assert forged.status == 400  # no CSRF token: refused before anything is read
    token = csrf_of(desk.get(f"/steps/{pk}/correct").text)
    for reason in ("", "   ", "x" * 201, "a\x00b" * 100):
        resp = desk.post(f"/steps/{pk}/correct", {"csrf_token": token, "correction_reason": reason})
        assert resp.status == 400, repr(reason[:10])
    assert (
        box.runtime.store.query("SELECT count(*) AS n FROM audit WHERE action = 'correct'")[0]["n"]
        == 0
    )
    assert desk.get("/steps/999999/correct").status == 404


def test_health_and_help_are_for_signed_in_users_only(box: Appliance) -> None:
    stranger = SocketClient(box.web_port, source="127.0.0.2")
    for path in ("/health", "/help", "/steps/next-slot?station=CT1"):
        resp = stranger.get(path)
        assert resp.status in (302, 401), path
        assert "Certificate fingerprint" not in resp.text and "DICOM listener" not in resp.text
