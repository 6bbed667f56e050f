"""The schedule form's Start: empty by default, the room's next free slot one click away;
its messages are sentences that name the field."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

from flask.testing import FlaskClient

from tests.integration.web.test_web_steps import JAPANESE
from tests.webclient import Web, post

DAY = (date.today() + timedelta(days=40)).isoformat()  # a day ahead, with no step yet


def errors_of(html: str) -> dict[str, str]:
    return dict(
        re.findall(r'<span class="error" id="error-([a-z_]+)" role="alert">([^<]*)</span>', html)
    )


def test_start_is_empty_even_from_a_board_day(web: Web, desk: FlaskClient) -> None:
    for url in ("/steps/new", f"/steps/new?date={DAY}"):
        page = desk.get(url).text
        assert 'name="start" type="datetime-local" value=""' in page, url
    page = desk.get(f"/steps/new?date={DAY}").text
    assert 'id="next-slot"' in page and f'data-date="{DAY}"' in page


def test_next_slot_of_a_future_day_skips_taken_slots(web: Web, desk: FlaskClient) -> None:
    assert desk.get(f"/steps/next-slot?station=CT1&date={DAY}").json == {
        "station": "CT1",
        "start": f"{DAY}T08:00",
    }
    for i, start in enumerate((f"{DAY}T08:00", f"{DAY}T08:15", f"{DAY}T08:40")):
        form = {**JAPANESE, "accession_number": f"S{i}", "start": start}
        assert post(desk, "/steps/new", form).status_code == 302
    got = desk.get(f"/steps/next-slot?station=CT1&date={DAY}").json
    assert got["start"] == f"{DAY}T09:00"  # 08:30 and 08:45 are within 15 min of 08:40
    # Another room is free at opening time; a cancelled step frees its slot.
    assert desk.get(f"/steps/next-slot?station=MR1&date={DAY}").json["start"] == (f"{DAY}T08:00")
    pk = web.store.query("SELECT pk FROM steps WHERE start_time = '084000'")[0]["pk"]
    assert post(desk, f"/steps/{pk}/cancel", {"reason": "moved"}).status_code == 302
    got = desk.get(f"/steps/next-slot?station=CT1&date={DAY}").json
    assert got["start"] == f"{DAY}T08:30"


def test_next_slot_from_now(web: Web, desk: FlaskClient) -> None:
    got = desk.get("/steps/next-slot?station=CT1").json["start"]
    slot = datetime.strptime(got, "%Y-%m-%dT%H:%M")
    now = datetime.now()
    assert slot >= now - timedelta(minutes=1) and slot.minute % 15 == 0
    assert 8 <= slot.hour < 18 and slot - now < timedelta(days=1)


def test_next_slot_names_a_bad_field(web: Web, desk: FlaskClient) -> None:
    bad = desk.get("/steps/next-slot?station=NOPE")
    assert bad.status_code == 400 and bad.json["field"] == "station"
    bad = desk.get("/steps/next-slot?station=PACS")  # not a modality
    assert bad.status_code == 400 and bad.json["field"] == "station"
    bad = desk.get("/steps/next-slot?station=CT1&date=tomorrow")
    assert bad.status_code == 400 and bad.json["field"] == "date"
    assert web.client().get("/steps/next-slot?station=CT1").status_code == 302  # sign in


def test_messages_are_sentences_naming_the_field(web: Web, desk: FlaskClient) -> None:
    resp = post(desk, "/steps/new", {"birth_date": "x", "start": "y", "sex": "Q"})
    errors = errors_of(resp.text)
    assert errors["patient_id"] == "Patient ID is required."
    assert errors["patient_name"] == "Patient name is required."
    assert errors["birth_date"] == "Birth date is not a date."
    assert errors["start"] == "Start is not a date and time."
    assert errors["station_ae"] == "Room / station is required."
    assert errors["sex"] == "Sex must be M, F, O or empty."
    long = post(desk, "/steps/new", {**JAPANESE, "name_ideo_family": "長" * 31})
    assert errors_of(long.text)["name_ideo_family"] == (
        "Ideographic (kanji) · Family name is longer than 30 characters."
    )


def test_messages_are_sentences_in_japanese(web: Web) -> None:
    desk = web.login("desk-ja", **{"Accept-Language": "ja"})
    errors = errors_of(post(desk, "/steps/new", {"start": "y"}).text)
    assert errors["patient_id"] == "患者ID: 必須です。"
    assert errors["start"] == "開始日時: 日時ではありません。"
