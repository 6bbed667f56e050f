"""The destinations / forward queue page: counts, why items wait, retry, resend, C-ECHO."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import accounts
from appliance.access import Access
from appliance.db import open_store
from appliance.forward import queue
from appliance.server import Runtime
from tests.forward_helpers import FakePacs
from tests.helpers import make_config
from tests.webclient import Web, post
from web import create_app

CT = "1.2.840.10008.5.1.4.1.1.2"
ELE = "1.2.840.10008.1.2.1"


@pytest.fixture
def pacs() -> Iterator[FakePacs]:
    p = FakePacs()
    yield p
    p.close()


@pytest.fixture
def web(tmp_path: Path, pacs: FakePacs) -> Iterator[Web]:
    """The web app with two destinations (no sender threads: the queue is only rows)."""
    cfg = make_config(
        tmp_path / "data",
        {
            "destinations": [
                {"name": "main", "ae_title": "FAKEPACS", "host": "127.0.0.1", "port": pacs.port},
                {"name": "offsite", "ae_title": "FAR", "host": "127.0.0.1", "port": 9,
                 "from_ae": ["CT1"], "modalities": ["CT"], "commitment": "delivery"},
            ]
        },
    )  # fmt: skip
    store = open_store(cfg.data_dir)
    app = create_app(
        Runtime(cfg, store, Access(cfg, store)), test_config={"TESTING": True}, announce=print
    )
    w = Web(app, store, app.extensions["appliance"])
    w.user("admin", accounts.ADMIN)
    yield w
    store.close()


def _receive(web: Web, uid: str, dests: list[str], now: float) -> None:
    info = queue.InstanceInfo(uid, CT, ELE, "CT", "CT1")
    queue.record_instance(web.store, info, f"f{uid}", f"d{uid}", 1, dests, now=now)


@pytest.fixture
def queued(web: Web) -> dict[str, int]:
    """main: two waiting (PACS down since), one dead letter for offsite, one delivered."""
    t = time.time() - 600
    _receive(web, "1.1", ["main", "offsite"], t)
    _receive(web, "1.2", ["main"], t + 10)
    _receive(web, "1.3", ["offsite"], t + 20)
    queue.defer_destination(web.store, "main", until=t + 3600, error="no association", now=t + 30)
    items = {i.sop_instance_uid: i for i in queue.claim(web.store, "offsite", 10, now=t + 40)}
    queue.mark_dead(web.store, items["1.1"], "refused: 0xC000 cannot understand", 0xC000, t + 41)
    queue.mark_delivered(web.store, [(items["1.3"], 0)], now=time.time())
    [dead] = queue.dead_letters(web.store, "offsite")
    return {"dead": dead["id"]}


def test_page_shows_counts_why_dead_letters_and_rules(web: Web, queued: dict) -> None:
    page = web.login("admin").get("/admin/destinations")
    assert page.status_code == 200
    html = page.text
    main = html.split('id="dest-main"')[1].split("</tr>")[0]
    assert '<td class="waiting">2</td>' in main and "no association" in main
    offsite = html.split('id="dest-offsite"')[1].split("</tr>")[0]
    assert '<td class="waiting">0</td>' in offsite
    assert '<td class="throughput">1</td>' in offsite  # delivered in the last minute
    assert '<td class="dead">1</td>' in offsite and '<td class="dead">0</td>' in main
    assert html.count('<td class="why">no association</td>') == 2  # why each item waits
    dead = html.split(f'id="dead-item-{queued["dead"]}"')[1].split("</tr>")[0]
    assert "refused: 0xC000 cannot understand" in dead and "0xC000" in dead
    route = html.split('id="route-offsite"')[1].split("</tr>")[0]
    assert "CT1" in route and "<td>CT</td>" in route and "delivery" in route
    assert "any" in html.split('id="route-main"')[1].split("</tr>")[0]
    assert "PatientName" not in html


def test_retry_now_makes_waiting_items_due(web: Web, queued: dict) -> None:
    admin = web.login("admin")
    assert queue.claim(web.store, "main", 10) == []  # deferred for an hour
    resp = post(admin, "/admin/destinations/main/retry")
    assert resp.status_code == 302
    assert len(queue.claim(web.store, "main", 10)) == 2
    assert web.count("audit", "action = 'forward-retry' AND object = 'main'") == 1
    assert "2 waiting items will be sent now." in admin.get("/admin/destinations").text


def test_resend_moves_a_dead_letter_back_to_waiting(web: Web, queued: dict) -> None:
    admin = web.login("admin")
    resp = post(admin, "/admin/destinations/offsite/resend", {"id": str(queued["dead"])})
    assert resp.status_code == 302
    assert queue.dead_letters(web.store) == []
    row = web.store.query("SELECT state, attempts FROM forward_queue WHERE id = ?",
                          (queued["dead"],))[0]  # fmt: skip
    assert (row["state"], row["attempts"]) == ("waiting", 0)
    assert web.count("audit", "action = 'forward-resend' AND object = 'offsite'") == 1
    assert "resent by a person" in admin.get("/admin/destinations").text


@pytest.mark.parametrize(
    "url,data,code,named",
    [
        ("/admin/destinations/offsite/resend", {}, 400, "id:"),
        ("/admin/destinations/offsite/resend", {"id": "x"}, 400, "id:"),
        ("/admin/destinations/main/resend", {"id": "DEAD"}, 404, "id:"),  # not main's
        ("/admin/destinations/nowhere/resend", {"id": "DEAD"}, 404, "destination:"),
        ("/admin/destinations/nowhere/retry", {}, 404, "destination:"),
        ("/admin/destinations/nowhere/echo", {}, 404, "destination:"),
    ],
)
def test_bad_input(web: Web, queued: dict, url: str, data: dict, code: int, named: str) -> None:
    data = {k: (str(queued["dead"]) if v == "DEAD" else v) for k, v in data.items()}
    resp = post(web.login("admin"), url, data)
    assert resp.status_code == code
    assert named in resp.text
    assert len(queue.dead_letters(web.store)) == 1
    assert web.count("audit", "action LIKE 'forward-%'") == 0


def test_echo_button_shows_the_result(web: Web, pacs: FakePacs) -> None:
    admin = web.login("admin")
    resp = post(admin, "/admin/destinations/main/echo", follow_redirects=True)
    assert resp.status_code == 200 and "C-ECHO to main: success." in resp.text
    assert pacs.associations == 1
    resp = post(admin, "/admin/destinations/offsite/echo", follow_redirects=True)
    assert "C-ECHO to offsite failed: no association" in resp.text
    assert web.count("audit", "action = 'forward-echo'") == 2


def test_admin_only_sign_in_and_csrf(web: Web, queued: dict) -> None:
    desk = web.login("desk")
    assert desk.get("/admin/destinations").status_code == 403
    assert post(desk, "/admin/destinations/main/retry").status_code == 403
    assert post(desk, "/admin/destinations/offsite/resend",
                {"id": str(queued["dead"])}).status_code == 403  # fmt: skip
    assert post(desk, "/admin/destinations/main/echo").status_code == 403
    anon = web.client()
    resp = anon.get("/admin/destinations")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    admin = web.login("admin")
    resp = admin.post("/admin/destinations/offsite/resend", data={"id": str(queued["dead"])})
    assert resp.status_code == 400  # no CSRF token
    assert len(queue.dead_letters(web.store)) == 1
    assert queue.claim(web.store, "main", 10) == []
    assert web.count("audit", "action LIKE 'forward-%'") == 0


def test_page_in_japanese(web: Web, queued: dict) -> None:
    page = web.login("admin", **{"Accept-Language": "ja"}).get("/admin/destinations").text
    assert "送信不能" in page and "振り分けルール" in page and "待っている理由" in page
