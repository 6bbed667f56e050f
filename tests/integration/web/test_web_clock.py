"""One clock: every stored time shown in the clinic's zone, the zone named once per page,
the appliance's clock in the footer, and scheduled times left as the front desk typed them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from flask.testing import FlaskClient

from appliance import accounts, audit, catalog
from appliance.app import open_store, web_app
from appliance.runtime import Runtime
from appliance.worklist.repo import WorklistRepo
from tests.factories import make_step_request
from tests.helpers import make_config
from tests.webclient import DEVICES, PROCEDURES, Web, field_errors, post
from web import start

PAGES = [
    "/",
    "/steps/new",
    "/admin/audit",
    "/admin/hl7",
    "/prints",
    "/admin/destinations",
    "/admin/users",
]


def _web(tmp_path: Path, zone: str) -> Iterator[Web]:
    raw = {"devices": DEVICES, "clinic": {"time_zone": zone}}
    cfg = make_config(tmp_path / "data", raw)
    store = open_store(cfg.data_dir)
    runtime = Runtime.create(cfg, store).sync()
    app = start(web_app(runtime, test_config={"TESTING": True}, announce=lambda _t: None))
    w = Web(app, store, runtime, [])
    w.user("admin", accounts.ADMIN)
    for entry in PROCEDURES:
        catalog.save(store, entry)
    yield w
    store.close()


@pytest.fixture
def tokyo(tmp_path: Path) -> Iterator[Web]:
    yield from _web(tmp_path, "Asia/Tokyo")


def _stamp_audit(w: Web) -> None:
    with w.store.write() as db:
        audit.record(db, "admin", "clock-test", "object", "detail", "")
        db.execute("UPDATE audit SET at = '2026-01-02T15:30:00.000Z' WHERE action = 'clock-test'")


def test_audit_times_are_in_the_clinic_zone_named_once(tokyo: Web) -> None:
    _stamp_audit(tokyo)
    page = tokyo.login("admin", accounts.ADMIN).get("/admin/audit?action=clock-test").text
    row = re.search(r'<tr id="entry-\d+">(.*?)</tr>', page, re.S)
    assert row is not None and "2026-01-03 00:30:00" in row.group(1)
    assert "15:30:00" not in page and "(UTC)" not in page
    assert page.count("Asia/Tokyo") == 1 and "Times in Asia/Tokyo (JST, UTC+09:00)" in page


@pytest.mark.parametrize("path", PAGES)
def test_no_page_says_utc_and_every_page_names_the_zone_once(tokyo: Web, path: str) -> None:
    page = tokyo.login("admin", accounts.ADMIN).get(path)
    assert page.status_code == 200, path
    assert "(UTC)" not in page.text
    assert page.text.count('id="clinic-zone"') == 1 and page.text.count("Asia/Tokyo") == 1
    footer = re.search(r'<footer class="clock" id="clock" ([^>]*)>', page.text)
    assert footer is not None
    assert re.search(r'data-epoch-ms="\d{13}"', footer.group(1))
    assert 'data-offset-min="540"' in footer.group(1) and 'data-warn-s="120"' in footer.group(1)
    assert re.search(r'<time id="box-clock">\d\d:\d\d</time>', page.text)


def test_the_zone_and_clock_are_named_in_japanese(tokyo: Web) -> None:
    admin = tokyo.login("admin", accounts.ADMIN)
    page = admin.get("/", headers={"Accept-Language": "ja"}).text
    assert "時刻は Asia/Tokyo" in page and "装置の時計" in page


def test_mpps_times_on_the_step_page_are_in_the_clinic_zone(tokyo: Web) -> None:
    from pydicom.dataset import Dataset

    from appliance.worklist.mpps import MppsRecorder

    repo = WorklistRepo(tokyo.store)
    pk = repo.schedule(make_step_request())
    step = repo.get(pk)
    ref = Dataset()
    ref.StudyInstanceUID = step["study_instance_uid"]
    ref.ScheduledProcedureStepID = step["sps_id"]
    ds = Dataset()
    ds.ScheduledStepAttributesSequence = [ref]
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT1"
    ds.PerformedProcedureStepStartDate = "20261124"
    ds.PerformedProcedureStepStartTime = "094400"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "CT"
    MppsRecorder(tokyo.store, repo).create("1.2.3.4", ds, "CT1")
    with tokyo.store.write() as db:
        db.execute("UPDATE mpps SET created_at = '2026-11-24T00:44:00.000Z'")
    page = tokyo.login("admin", accounts.ADMIN).get(f"/steps/{pk}").text
    performed = page[page.index('id="performed"') :]
    assert "2026-11-24 09:44:00" in performed  # UTC 00:44 is 09:44 in Tokyo
    # The scheduled start is the clinic's wall clock as typed: shown as stored.
    assert 'value="2026-11-24T09:30"' in page


def test_print_history_dates_are_clinic_days(tokyo: Web) -> None:
    admin = tokyo.login("admin", accounts.ADMIN)
    with tokyo.store.write() as db:
        for uid, at in (("1.2.9.1", "2026-01-01T14:59:00Z"), ("1.2.9.2", "2026-01-01T15:01:00Z")):
            db.execute(
                "INSERT INTO print_jobs(uid, calling_ae, called_ae, printer, spec, state, created_at) "
                "VALUES (?, 'CT1', 'APPLIANCE', 'folder', '{}', 'DONE', ?)",
                (uid, at),
            )
    # 15:01 UTC is 00:01 on 2 January in Tokyo; 14:59 UTC is still 1 January there.
    page = admin.get("/prints?since=2026-01-02&until=2026-01-02").text
    assert "2026-01-02 00:01:00" in page and "2026-01-01 23:59:00" not in page
    page = admin.get("/prints?since=2026-01-01&until=2026-01-01").text
    assert "2026-01-01 23:59:00" in page and "2026-01-02 00:01:00" not in page


def test_the_board_day_is_the_clinic_day(tmp_path: Path) -> None:
    # Far from the box's own zone on either side, the board opens on that zone's date.
    from datetime import datetime
    from zoneinfo import ZoneInfo

    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):
        for w in _web(tmp_path / zone.replace("/", "-"), zone):
            page = w.login("admin", accounts.ADMIN).get("/").text
            today = datetime.now(ZoneInfo(zone)).date().isoformat()
            assert f'data-date="{today}"' in page, zone


def test_a_client_without_config_still_gets_the_box_zone(web: Web, admin: FlaskClient) -> None:
    page = admin.get("/").text
    assert 'id="clinic-zone"' in page and "(UTC)" not in page


def _zone_on_another_date() -> tuple[str, date]:
    """A zone whose date today is not the box's (one of UTC+14 and UTC-12 always is)."""
    for name in ("Pacific/Kiritimati", "Etc/GMT+12"):
        day = datetime.now(ZoneInfo(name)).date()
        if day != date.today():
            return name, day
    raise AssertionError("UTC+14 and UTC-12 are 26 hours apart: one differs from the box")


def test_new_accession_numbers_carry_the_clinic_date_not_the_box_date(tmp_path: Path) -> None:
    """The box runs on UTC, the clinic does not: an accession number made after the
    clinic's midnight and before the box's begins with the clinic's date."""
    zone, clinic_day = _zone_on_another_date()
    w = next(_web(tmp_path, zone))
    desk = w.login("desk")
    offered = re.search(
        r'placeholder="assigned when saved: ([^"]+)"', desk.get("/steps/new").text
    ).group(1)
    assert offered == f"A{clinic_day:%y%m%d}0001"
    form = {
        "patient_id": "P1", "name_alpha_family": "Doe", "name_alpha_given": "Jane",
        "procedure": "CTHEAD", "station_ae": "CT1", "priority": "ROUTINE",
        "start": f"{clinic_day.isoformat()}T10:30", "accession_number": "",
    }  # fmt: skip
    resp = post(desk, "/steps/new", form)
    assert resp.status_code == 302, field_errors(resp.text)
    [step] = WorklistRepo(w.store).list_day(clinic_day)
    assert step["accession_number"] == offered
    # The JSON API numbers by the same clinic date: the next one follows.
    token = accounts.create_token(w.store, w.user("ris"), "test")
    body = {
        "patient_id": "P2", "patient_name": "Doe^John", "procedure": "CTHEAD",
        "station_ae": "CT1", "start": f"{clinic_day.isoformat()}T11:00",
    }  # fmt: skip
    resp = w.client(Authorization=f"Bearer {token}").post("/api/v1/procedures", json=body)
    assert resp.status_code == 201, resp.json
    assert resp.json["accession_number"] == offered[:-1] + "2"
