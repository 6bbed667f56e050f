"""The service health page (what /healthz knows, in words) and the help link of every page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance import accounts
from appliance.app import open_store, web_app
from appliance.runtime import Runtime
from tests.helpers import make_config
from tests.webclient import DEVICES, Web
from web import help_pages, start

REPORT: dict[str, Any] = {
    "status": "degraded",
    "uptime_s": 3725.0,
    "services": {
        "dicom": {"state": "running", "ae_title": "APPLIANCE", "port": 11112, "associations": 2},
        "dicom_tls": {"state": "running", "port": 2762, "fingerprint_sha256": "AB:CD:EF:01"},
        "worklist": {"state": "running", "queries": 7, "last_query_s_ago": 125.0},
        "forward": {
            "state": "stalled: no progress to PACS1 while images wait",
            "spool_free_mb": 20480,
            "unrouted": 3,
            "destinations": {
                "PACS1": {
                    "waiting": 12,
                    "held": 0,
                    "dead": 1,
                    "oldest_waiting_s": 5400.0,
                    "last_error": "connection refused by 10.0.0.9:104",
                    "associations": [{"state": "retrying", "last_error": "A-ASSOCIATE-RJ"}],
                }
            },
        },
        "print": {"state": "running", "queued": 0, "jobs": {"DONE": 4}, "printers": []},
        "web": {"state": "running", "port": 8080},
        "database": {"state": "running", "size_mb": 12.5, "last_backup_s_ago": None},
    },
}


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Web]:
    cfg = make_config(tmp_path / "data", {"devices": DEVICES})
    store = open_store(cfg.data_dir)
    runtime = Runtime.create(cfg, store).sync()
    app = start(
        web_app(
            runtime, health=lambda: REPORT, test_config={"TESTING": True}, announce=lambda _t: None
        )
    )
    w = Web(app, store, runtime, [])
    w.user("admin", accounts.ADMIN)
    yield w
    store.close()


def test_health_page_says_each_service_and_its_state_in_words(box: Web) -> None:
    desk = box.login("desk")  # every signed-in user, not only admins
    page = desk.get("/health").text
    assert 'id="menu-health"' in page
    assert "Something needs attention" in page and "Up for 1 h 2 min." in page
    dicom = page[page.index('id="service-dicom"') :]
    assert "DICOM listener" in dicom and "Associations" in dicom and ">2<" in dicom
    tls = page[page.index('id="service-dicom_tls"') :]
    assert "Certificate fingerprint (SHA-256)" in tls and "AB:CD:EF:01" in tls
    worklist = page[page.index('id="service-worklist"') :]
    assert "Last query" in worklist and "2 min ago" in worklist
    forward = page[page.index('id="service-forward"') : page.index('id="service-print"')]
    assert 'class="card part bad"' in page and "stalled: no progress to PACS1" in forward
    assert "20,480 MB" in forward and "Images no destination takes" in forward
    assert "Waiting" in forward and ">12<" in forward and "1 h 30 min" in forward
    errors = page[page.index('id="last-errors"') : page.index('id="disk"')]
    assert "connection refused by 10.0.0.9:104" in errors and "A-ASSOCIATE-RJ" in errors
    assert "stalled: no progress to PACS1" in errors
    disk = page[page.index('id="disk"') :]
    assert re.search(r"GB free of [\d,.]+ GB \(\d+ %\)", disk)
    assert 'data-refresh="30"' in page
    database = page[page.index('id="service-database"') :]
    assert "12.5 MB" in database and "Last backup" in database and "never" in database


def test_health_page_in_japanese(box: Web) -> None:
    box.user("desk-ja", language="ja")
    page = box.login("desk-ja").get("/health").text
    assert "サービスの状態" in page and "最近のエラー" in page and "DICOM 受信" in page


def test_health_page_needs_sign_in(box: Web) -> None:
    resp = box.client().get("/health")
    assert resp.status_code == 302 and "/login" in resp.location


def test_a_healthy_box_says_so(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "data", {"devices": DEVICES})
    store = open_store(cfg.data_dir)
    ok = {"status": "ok", "uptime_s": 30, "services": {"web": {"state": "running", "port": 1}}}
    app = start(web_app(Runtime.create(cfg, store).sync(), health=lambda: ok,
                     test_config={"TESTING": True}, announce=lambda _t: None))  # fmt: skip
    w = Web(app, store, Runtime.create(cfg, store).sync(), [])
    w.user("admin", accounts.ADMIN)
    page = w.login("desk").get("/health").text
    assert "Every service is running." in page and "No errors reported." in page
    store.close()


PAGES = {
    "/": "board",
    "/steps/new": "schedule",
    "/prints": "prints",
    "/printers": "printers",
    "/admin/devices": "devices",
    "/admin/devices/new": "devices",
    "/admin/users": "users",
    "/admin/catalog": "catalog",
    "/admin/audit": "audit",
    "/admin/backup": "backup",
    "/admin/destinations": "destinations",
    "/admin/hl7": "hl7",
    "/health": "health",
    "/account": "account",
}


@pytest.mark.parametrize("path,topic", PAGES.items())
def test_every_page_links_to_its_help(box: Web, path: str, topic: str) -> None:
    admin = box.login("admin", accounts.ADMIN)
    page = admin.get(path).text
    link = re.search(r'<a href="([^"]+)" class="help-link" id="help-link"', page)
    assert link is not None and link.group(1) == f"/help#help-{topic}", path
    help_page = admin.get("/help").text
    section = help_page[help_page.index(f'id="help-{topic}"') :]
    assert "<p>" in section[:2000]


def test_help_texts_are_in_english_and_japanese(box: Web) -> None:
    from web import i18n

    for _topic, title, text in help_pages.TOPICS:
        assert title in i18n.JA and text in i18n.JA, title
    box.user("ja-user", language="ja")
    page = box.login("ja-user").get("/help").text
    assert "ヘルプ" in page and "予約フォーム" in page


def test_healthz_still_answers_beside_the_page(box: Web) -> None:
    anonymous = box.client().get("/healthz")
    assert anonymous.status_code == 503 and anonymous.json == {"status": "degraded"}
    full = box.login("desk").get("/healthz")
    assert full.json["services"]["dicom_tls"]["fingerprint_sha256"] == "AB:CD:EF:01"
