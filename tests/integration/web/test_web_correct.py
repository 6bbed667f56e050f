"""A performed step opens read-only; "Correct" changes its record with a reason, audited.
The board's search lives in the URL."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient

from appliance import audit
from appliance.worklist.repo import WorklistRepo
from tests.integration.web.test_web_steps import JAPANESE, only_step
from tests.webclient import Web, csrf_of, field_errors, post


def performed_step(web: Web, desk: FlaskClient, status: str = "COMPLETED") -> dict:
    assert post(desk, "/steps/new", JAPANESE).status_code == 302
    step = only_step(web)
    WorklistRepo(web.store).set_status([step["step_pk"]], status)
    return step


@pytest.mark.parametrize("status", ["COMPLETED", "DISCONTINUED"])
def test_a_performed_step_opens_read_only_with_a_correct_button(
    web: Web, desk: FlaskClient, status: str
) -> None:
    step = performed_step(web, desk, status)
    page = desk.get(f"/steps/{step['step_pk']}").text
    assert 'id="read-only"' in page and 'id="save"' not in page
    assert "<h1>Procedure <span" in page
    assert re.search(r'<fieldset class="bare" disabled>', page)
    assert f'href="/steps/{step["step_pk"]}/correct"' in page and 'id="correct"' in page


def test_a_cancelled_step_is_read_only_and_not_correctable(web: Web, desk: FlaskClient) -> None:
    step = performed_step(web, desk, "SCHEDULED")
    post(desk, f"/steps/{step['step_pk']}/cancel", {"reason": "no show"})
    page = desk.get(f"/steps/{step['step_pk']}").text
    assert 'id="read-only"' in page and 'id="correct"' not in page
    resp = desk.get(f"/steps/{step['step_pk']}/correct")
    assert resp.status_code == 302 and resp.location.endswith(f"/steps/{step['step_pk']}")


def test_a_scheduled_step_is_still_an_editable_form(web: Web, desk: FlaskClient) -> None:
    step = performed_step(web, desk, "SCHEDULED")
    page = desk.get(f"/steps/{step['step_pk']}").text
    assert 'id="read-only"' not in page and 'id="save"' in page and "disabled>" not in page


def test_a_correction_needs_a_reason_and_is_audited(web: Web, desk: FlaskClient) -> None:
    from web import stepform

    step = performed_step(web, desk)
    pk = step["step_pk"]
    form = {**stepform.values_of(step), "name_alpha_given": "Tarō", "sex": "M"}
    page = desk.get(f"/steps/{pk}/correct").text
    assert 'id="correction_reason"' in page and 'id="save"' in page
    no_reason = post(desk, f"/steps/{pk}/correct", form)
    assert no_reason.status_code == 400 and "correction_reason" in field_errors(no_reason.text)
    assert "Reason for the correction is required." in no_reason.text
    assert WorklistRepo(web.store).get(pk)["patient_name"].startswith("Yamada^Tarou=")
    done = post(desk, f"/steps/{pk}/correct", {**form, "correction_reason": "typo in given name"})
    assert done.status_code == 302 and done.location.endswith(f"/steps/{pk}")
    after = WorklistRepo(web.store).get(pk)
    assert after["patient_name"].startswith("Yamada^Tarō=") and after["status"] == "COMPLETED"
    rows = audit.recent(web.store, action="correct")
    assert len(rows) == 1 and rows[0]["actor"] == "desk"
    assert rows[0]["object"] == f"step {pk}"
    assert "typo in given name" in rows[0]["detail"]
    assert "(changed: name_alpha_given)" in rows[0]["detail"]


def test_the_plain_edit_of_a_performed_step_is_still_refused(web: Web, desk: FlaskClient) -> None:
    from web import stepform

    step = performed_step(web, desk)
    form = {**stepform.values_of(step), "name_alpha_given": "Jiro"}
    resp = post(desk, f"/steps/{step['step_pk']}", form)
    assert resp.status_code == 400 and "can no longer be changed" in resp.text
    assert audit.recent(web.store, action="correct") == []


def test_a_correction_of_a_started_step_is_refused(web: Web, desk: FlaskClient) -> None:
    step = performed_step(web, desk, "STARTED")
    resp = desk.get(f"/steps/{step['step_pk']}/correct")
    assert resp.status_code == 302
    page = desk.get(f"/steps/{step['step_pk']}/correct")
    token = csrf_of(desk.get(f"/steps/{step['step_pk']}").text)
    resp = desk.post(
        f"/steps/{step['step_pk']}/correct", data={"csrf_token": token, "correction_reason": "x"}
    )
    assert page.status_code == 302 and resp.status_code == 302
    assert audit.recent(web.store, action="correct") == []


def test_the_board_search_is_in_the_url_and_keeps_the_room(web: Web, desk: FlaskClient) -> None:
    post(desk, "/steps/new", JAPANESE)
    page = desk.get("/?q=%E3%82%84%E3%81%BE%E3%81%A0&station=CT1").text  # q=やまだ
    assert 'id="results"' in page and "P0001" in page
    search = page[page.index('class="search"') :]
    search = search[: search.index("</form>")]
    assert 'name="station" value="CT1"' in search and 'value="やまだ"' in search
