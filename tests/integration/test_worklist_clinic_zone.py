"""Worklist answers keep the scheduled date and time as typed, whatever the clinic's zone
(DICOM DA/TM carry no zone: they are the clinic's wall clock, PS3.5 6.2)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

from appliance import accounts, catalog
from appliance.server import Appliance
from tests.factories import make_mwl_query
from tests.integration.test_worklist_scp import find, results
from tests.webclient import PASSWORD, PROCEDURES, SocketClient, csrf_of


def test_a_step_typed_on_the_form_is_answered_as_typed(
    start_appliance: Callable[..., Appliance],
) -> None:
    # UTC+14: far from the box's own zone, so any conversion would move the day.
    box = start_appliance(
        {
            "devices": [{"ae_title": "CT1", "modality": "CT"}],
            "clinic": {"time_zone": "Pacific/Kiritimati"},
        }
    )
    accounts.create_user(box.runtime.store, "admin", PASSWORD, accounts.ADMIN)
    accounts.create_user(box.runtime.store, "desk", PASSWORD, accounts.FRONT_DESK)
    catalog.save(box.runtime.store, PROCEDURES[0])
    day = date.today() + timedelta(days=3)
    desk = SocketClient(box.web_port)
    assert desk.sign_in("desk").status == 302
    token = csrf_of(desk.get("/steps/new").text)
    form = {
        "csrf_token": token,
        "patient_id": "TZ1",
        "name_alpha_family": "Late",
        "procedure": "CTHEAD",
        "station_ae": "CT1",
        "start": f"{day.isoformat()}T23:30",
    }
    assert desk.post("/steps/new", form).status == 302
    found = results(
        find(box, make_mwl_query(sps_ScheduledProcedureStepStartDate=day.strftime("%Y%m%d")))
    )
    assert len(found) == 1
    sps = found[0].ScheduledProcedureStepSequence[0]
    assert sps.ScheduledProcedureStepStartDate == day.strftime("%Y%m%d")
    assert sps.ScheduledProcedureStepStartTime == "233000"
    assert "TimezoneOffsetFromUTC" not in found[0]
    next_day = (day + timedelta(days=1)).strftime("%Y%m%d")
    assert results(find(box, make_mwl_query(sps_ScheduledProcedureStepStartDate=next_day))) == []
    # The step page shows the start as typed too.
    rows = box.runtime.store.query("SELECT pk FROM steps")
    page = desk.get(f"/steps/{rows[0]['pk']}").text
    assert f'value="{day.isoformat()}T23:30"' in page and "Pacific/Kiritimati" in page
