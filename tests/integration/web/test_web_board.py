"""The schedule board: a day by station, search, and live changes from MPPS."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

from appliance.worklist.model import StepRequest
from appliance.worklist.repo import WorklistRepo
from tests.webclient import Web


def schedule(web: Web, station: str = "CT1", when: datetime | None = None, **over: str) -> int:
    req = StepRequest(
        patient_id=over.pop("patient_id", "P1"),
        patient_name=over.pop("patient_name", "Sato^Hanako=佐藤^花子=さとう^はなこ"),
        station_ae=station,
        modality="CT" if station == "CT1" else "MR",
        start=when or datetime.combine(date.today(), datetime.min.time()).replace(hour=9),
        requested_procedure_description="CT Head",
        **over,
    )
    return WorklistRepo(web.store).schedule(req, actor="test")


def changes(client: FlaskClient, day: date, since: str) -> Any:
    return client.get("/board/changes", query_string={"date": day.isoformat(), "since": since})


def test_board_shows_today_grouped_by_station(web: Web, desk: FlaskClient) -> None:
    schedule(web, "CT1", accession_number="ACC1")
    schedule(web, "MR1", patient_id="P2", patient_name="Ito^Ken", accession_number="ACC2")
    schedule(
        web,
        "CT1",
        when=datetime.now() + timedelta(days=1),
        patient_id="P3",
        patient_name="Tomorrow^Tom",
    )
    page = desk.get("/").text
    ct = page.index('data-station="CT1"')
    mr = page.index('data-station="MR1"')
    assert ct < page.index("佐藤 花子") < mr < page.index("Ito Ken")
    assert "Tomorrow" not in page and 'data-station="PACS"' not in page
    tomorrow = desk.get(
        "/", query_string={"date": (date.today() + timedelta(days=1)).isoformat()}
    ).text
    assert "Tomorrow Tom" in tomorrow and "佐藤" not in tomorrow


def test_bad_date_falls_back_to_today(web: Web, desk: FlaskClient) -> None:
    schedule(web)
    assert "佐藤 花子" in desk.get("/?date=not-a-date").text


def test_search_by_name_id_accession(web: Web, desk: FlaskClient) -> None:
    schedule(web, accession_number="ACC77", when=datetime.now() - timedelta(days=3))
    schedule(web, "MR1", patient_id="P2", patient_name="Ito^Ken")
    for q in ("佐藤", "sato", "はなこ", "P1", "ACC77"):
        page = desk.get("/", query_string={"q": q}).text
        results = page[page.index('id="results"') : page.index('id="board"')]
        assert "佐藤 花子" in results and "Ito" not in results, q
    page = desk.get("/", query_string={"q": "nobody"}).text
    results = page[page.index('id="results"') : page.index('id="board"')]
    assert "No procedures" in results


def test_changes_report_mpps_status_and_new_steps(web: Web, desk: FlaskClient) -> None:
    pk = schedule(web)
    page = desk.get("/").text
    since = page.split('data-since="')[1].split('"')[0]
    repo = WorklistRepo(web.store)
    repo.set_status([pk], "STARTED")
    resp = changes(desk, date.today(), since)
    assert resp.status_code == 200
    rows = {r["pk"]: r for r in resp.json["rows"]}
    assert rows[pk]["status"] == "STARTED" and "In progress" not in rows[pk]["html"]
    assert 'data-status="STARTED"' in rows[pk]["html"] and "佐藤 花子" in rows[pk]["html"]
    assert resp.json["since"] >= since
    other = schedule(web, "MR1", patient_id="P9", patient_name="New^Comer")
    rows = {r["pk"]: r for r in changes(desk, date.today(), resp.json["since"]).json["rows"]}
    assert rows[other]["station"] == "MR1" and "New Comer" in rows[other]["html"]


def test_steps_of_another_day_come_without_a_row(web: Web, desk: FlaskClient) -> None:
    since = "2000-01-01T00:00:00.000Z"
    pk = schedule(web, when=datetime.now() + timedelta(days=2))
    rows = changes(desk, date.today(), since).json["rows"]
    assert [(r["pk"], r["html"]) for r in rows] == [(pk, "")]


def test_step_moved_to_another_day_leaves_the_board(web: Web, desk: FlaskClient) -> None:
    pk = schedule(web)
    since = desk.get("/").text.split('data-since="')[1].split('"')[0]
    repo = WorklistRepo(web.store)
    step = repo.get(pk)
    moved = StepRequest(
        patient_id=step["patient_id"],
        patient_name=step["patient_name"],
        station_ae="CT1",
        modality="CT",
        start=datetime.now() + timedelta(days=1),
    )
    repo.update(pk, moved, actor="test")
    rows = {r["pk"]: r for r in changes(desk, date.today(), since).json["rows"]}
    assert rows[pk]["html"] == ""
    tomorrow = (date.today() + timedelta(days=1)).isoformat()
    rows = {
        r["pk"]: r
        for r in desk.get("/board/changes", query_string={"date": tomorrow, "since": since}).json[
            "rows"
        ]
    }
    assert "佐藤 花子" in rows[pk]["html"]


def test_cancelled_step_is_removed_from_the_board(web: Web, desk: FlaskClient) -> None:
    pk = schedule(web)
    WorklistRepo(web.store).cancel(pk, actor="test")
    rows = changes(desk, date.today(), "2000-01-01T00:00:00.000Z").json["rows"]
    assert rows == [
        {"pk": pk, "station": "CT1", "status": "CANCELED", "start": rows[0]["start"], "html": ""}
    ]


def test_changes_rejects_a_bad_stamp(web: Web, desk: FlaskClient) -> None:
    resp = changes(desk, date.today(), "yesterday")
    assert resp.status_code == 400 and resp.json["field"] == "since"


def test_board_in_japanese(web: Web) -> None:
    c = web.login("desk", **{"Accept-Language": "ja"})
    schedule(web)
    page = c.get("/").text
    assert "予約ボード" in page and "予約済" in page and "新規予約" in page


def test_one_room_only(web: Web, desk: FlaskClient) -> None:
    schedule(web, "CT1")
    schedule(web, "MR1", patient_id="P2", patient_name="Ito^Ken")
    page = desk.get("/", query_string={"station": "MR1"}).text
    board = page[page.index('id="board"') :]
    assert "Ito Ken" in board and "佐藤" not in board and 'data-station="CT1"' not in board
    assert 'data-station="MR1"' in board
    since = "2000-01-01T00:00:00.000Z"
    resp = desk.get("/board/changes", query_string={"since": since, "station": "MR1"})
    rows = {r["station"]: r["html"] for r in resp.json["rows"]}
    assert rows["CT1"] == "" and "Ito Ken" in rows["MR1"]


def test_board_shows_birth_date_age_and_sex(web: Web, desk: FlaskClient) -> None:
    day = date.today()
    born = date(day.year - 52, 1, 1)
    schedule(web, "CT1", accession_number="ACC9", birth_date=born.strftime("%Y%m%d"), sex="F")
    page = desk.get("/").text
    row = page.split('class="demo">')[1].split("</small>")[0]
    assert row == f"{born.isoformat()} (52 y) · F"


def test_an_empty_board_says_what_to_do_first(tmp_path: Path) -> None:
    """No modality configured yet: the board says to add one (not just "No procedures")."""
    from appliance import accounts
    from appliance.app import open_store, web_app
    from appliance.runtime import Runtime
    from tests.helpers import make_config
    from web import start

    cfg = make_config(tmp_path / "data", {})
    store = open_store(cfg.data_dir)
    app = start(web_app(Runtime.create(cfg, store).sync(), test_config={"TESTING": True},
                           announce=lambda token: None))  # fmt: skip
    web = Web(app, store, app.extensions["appliance"])
    web.user("admin0", accounts.ADMIN)
    page = web.login("desk0").get("/").text
    store.close()
    assert 'id="board-empty"' in page and "Admin → Devices" in page
