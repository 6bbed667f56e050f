"""The destinations / forward queue page: counts, why items wait, retry, resend, C-ECHO."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from appliance import accounts
from appliance.app import open_store, web_app
from appliance.forward import queue
from appliance.runtime import Runtime
from tests.forward_helpers import FakePacs
from tests.helpers import make_config
from tests.webclient import Web, pager, post, walk
from web import start

CT = "1.2.840.10008.5.1.4.1.1.2"
ELE = "1.2.840.10008.1.2.1"


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
    app = start(
        web_app(Runtime.create(cfg, store).sync(), test_config={"TESTING": True}, announce=print)
    )
    w = Web(app, store, app.extensions["appliance"])
    w.user("admin", accounts.ADMIN)
    yield w
    store.close()


def _receive(web: Web, uid: str, dests: list[str], now: float) -> None:
    """An instance of patient 'Yamada' (its Q/R index row in the same transaction)."""
    info = queue.InstanceInfo(uid, CT, ELE, "CT", "CT1")
    indexed = {"patient_name": "Yamada^Tarou=山田^太郎", "patient_id": f"P{uid}",
               "accession_number": f"ACC{uid}", "study_description": "CT Head",
               "study_date": "20261203", "sop_instance_uid": uid, "sop_class_uid": CT,
               "modality": "CT"}  # fmt: skip
    queue.record_instance(web.store, info, f"f{uid}", f"d{uid}", 1, dests, now=now, indexed=indexed)


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
    waiting_link = '<a href="/admin/destinations/main/waiting">2</a>'
    assert f'<td class="waiting">{waiting_link}</td>' in main and "no association" in main
    offsite = html.split('id="dest-offsite"')[1].split("</tr>")[0]
    assert '<td class="waiting">0</td>' in offsite
    assert '<td class="throughput">1</td>' in offsite  # delivered in the last minute
    dead_link = '<a href="/admin/destinations/dead?destination=offsite">1</a>'
    assert f'<td class="dead">{dead_link}</td>' in offsite and '<td class="dead">0</td>' in main
    # Why each item waits: not tried yet, behind the destination's error.
    why = '<td class="why">not tried yet: destination unreachable<br><small>no association</small></td>'
    assert html.count(why) == 2
    # No "Attempts 0" beside the destination's error: the image itself was never tried.
    first = html.split('id="waiting-main"')[1].split("</table>")[0]
    assert first.count('<td class="attempts">—</td>') == 2 and ">0</td>" not in first
    # Whose images wait: patient (kanji name, ID), accession, modality, study, its date.
    assert first.count("<b>山田 太郎</b>") == 2 and "ID P1.1" in first and "ID P1.2" in first
    assert '<span class="accession">ACC1.1</span>' in first
    assert 'CT · CT Head · <span class="date">2026-12-03</span>' in first
    dead = html.split(f'id="dead-item-{queued["dead"]}"')[1].split("</tr>")[0]
    assert "refused: 0xC000 cannot understand" in dead and "0xC000" in dead
    assert "山田 太郎" in dead and "ACC1.1" in dead and "CT Head" in dead
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
    ok = re.search(r"C-ECHO to main \(FAKEPACS@127\.0\.0\.1:(\d+)\) at "
                   r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: success in \d+ ms\.", resp.text)  # fmt: skip
    assert resp.status_code == 200 and ok and int(ok.group(1)) == pacs.port
    assert pacs.associations == 1
    resp = post(admin, "/admin/destinations/offsite/echo", follow_redirects=True)
    # What failed, when, where: port 9 has no listener, so the connection was refused.
    failed = re.search(r"C-ECHO to offsite \(FAR@127\.0\.0\.1:9\) at [0-9: -]+ failed: "
                       r"no association with FAR@127\.0\.0\.1:9: connection refused", resp.text)  # fmt: skip
    assert failed, resp.text
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


# -- paging through the lists --------------------------------------------------------


def _receive_many(web: Web, prefix: str, n: int, dest: str, t0: float) -> list[int]:
    """``n`` instances queued for ``dest``, two at each second (ties on queued_at);
    returns their queue ids in the order they were received."""
    with web.store.write():  # one commit: the test stays fast
        for i in range(n):
            info = queue.InstanceInfo(f"{prefix}.{i}", CT, ELE, "CT", "CT1")
            queue.record_instance(web.store, info, f"f{prefix}.{i}", f"d{prefix}.{i}", 1,
                                  [dest], now=t0 + i // 2, durable=False)  # fmt: skip
    rows = web.store.query(
        "SELECT q.id, i.sop_instance_uid AS uid FROM forward_queue q JOIN forward_instances i "
        "ON i.id = q.instance_id WHERE q.destination = ? AND i.sop_instance_uid LIKE ?",
        (dest, f"{prefix}.%"),
    )
    by_uid = {r["uid"]: r["id"] for r in rows}
    return [by_uid[f"{prefix}.{i}"] for i in range(n)]


@pytest.fixture
def backlog(web: Web) -> list[int]:
    """main: 250 waiting items (queue ids, oldest first); offsite: 30 others."""
    t0 = time.time() - 86400
    ids = _receive_many(web, "2.1", 250, "main", t0)
    _receive_many(web, "2.2", 30, "offsite", t0)
    return ids


def _as_ids(pages: list[list[str]]) -> list[list[int]]:
    return [[int(i) for i in page] for page in pages]


def _ids(page: str, row: str = "item") -> list[int]:
    """The queue ids of the rows of a page (``item-N`` or ``dead-item-N``)."""
    return [int(i) for i in re.findall(rf'id="{row}-(\d+)"', page)]


def test_waiting_items_page_through_every_row_once_in_order(web: Web, backlog: list) -> None:
    admin = web.login("admin")
    url = "/admin/destinations/main/waiting?size=100"
    pages = _as_ids(walk(admin, url, "item"))
    assert [len(p) for p in pages] == [100, 100, 50]
    assert sum(pages, []) == backlog  # each exactly once, oldest first; none of offsite
    first = admin.get(url).text
    text, links = pager(first)
    assert text == "1–100 of 250"
    assert set(links) == {"next", "last"}  # no way before the first page
    for name in ("next", "last"):
        assert parse_qs(urlsplit(links[name]).query)["size"] == ["100"]  # size kept
    second = admin.get(links["next"]).text
    assert pager(second)[0] == "101–200 of 250"
    last = admin.get(links["last"]).text
    assert _ids(last) == pages[2]  # the page "Next" reaches
    assert pager(last)[0] == "201–250 of 250" and set(pager(last)[1]) == {"first", "previous"}
    # Back from the end with "Previous": the same pages, in the same order.
    back = _as_ids(walk(admin, pager(last)[1]["previous"], "item", link="previous"))
    assert back == [backlog[100:200], backlog[:100]]
    assert pager(admin.get("/admin/destinations/main/waiting").text)[0] == "1–100 of 250"


def test_a_row_added_between_page_loads_neither_shifts_nor_repeats(web: Web, backlog: list) -> None:
    admin = web.login("admin")
    t0 = time.time() - 2 * 86400
    [early] = _receive_many(web, "2.3", 1, "main", t0)  # older than every waiting item
    [item] = [i for i in queue.claim(web.store, "main", 1, now=t0 + 1) if i.id == early]
    queue.mark_dead(web.store, item, "refused")
    first = admin.get("/admin/destinations/main/waiting?size=100").text
    assert _ids(first) == backlog[:100]
    # Meanwhile: five of the first page are sent, the dead letter comes back at the
    # front of the list, a new image arrives at the end.
    sent = queue.claim(web.store, "main", 5, now=time.time())
    assert [i.id for i in sent] == backlog[:5]
    queue.mark_delivered(web.store, [(i, 0) for i in sent])
    assert queue.resend(web.store, [early]) == 1
    [late] = _receive_many(web, "2.4", 1, "main", time.time())
    second = admin.get(pager(first)[1]["next"]).text
    assert _ids(second) == backlog[100:200]
    assert pager(second)[0] == "97–196 of 247"  # 95 before it now, plus the one resent
    rest = _as_ids(walk(admin, pager(second)[1]["next"], "item"))
    assert sum(rest, []) == [*backlog[200:], late]


def _bury(web: Web, ids: list[int], dest: str, t0: float, batch: int = 10) -> None:
    """Make the queue rows dead letters, ``batch`` at a time (ties on updated_at)."""
    items = {i.id: i for i in queue.claim(web.store, dest, 500, now=time.time())}
    for n in range(0, len(ids), batch):
        group = [items[i] for i in ids[n : n + batch]]
        queue.mark_retry(web.store, group, "refused", lambda _a: 0.0, max_attempts=1,
                         now=t0 + n)  # fmt: skip


def test_dead_letters_page_by_destination_keeping_the_filter(web: Web, backlog: list) -> None:
    t0 = time.time() - 3600
    offsite = _receive_many(web, "2.5", 120, "offsite", t0)
    _bury(web, offsite, "offsite", t0)
    _bury(web, backlog[:7], "main", t0)
    admin = web.login("admin")
    url = "/admin/destinations/dead?destination=offsite&size=50"
    pages = _as_ids(walk(admin, url, "dead-item"))
    assert [len(p) for p in pages] == [50, 50, 20]
    newest_first = [i for n in range(110, -1, -10) for i in sorted(offsite[n : n + 10])[::-1]]
    assert sum(pages, []) == newest_first
    page = admin.get(url).text
    text, links = pager(page)
    assert text == "1–50 of 120"
    query = parse_qs(urlsplit(links["next"]).query)
    assert query["destination"] == ["offsite"] and query["size"] == ["50"]  # filter kept
    everyone = _as_ids(walk(admin, "/admin/destinations/dead?size=100", "dead-item"))
    assert sorted(sum(everyone, [])) == sorted([*offsite, *backlog[:7]])
    overview = admin.get("/admin/destinations").text
    assert 'id="all-dead" href="/admin/destinations/dead">All 127 dead letters' in overview
    # Resend from the second page: back to that page, which now starts after the first.
    second_url = links["next"]
    chosen = pages[1][:3]
    resp = post(admin, "/admin/destinations/offsite/resend",
                {"id": [str(i) for i in chosen], "back": second_url})  # fmt: skip
    assert resp.status_code == 302 and resp.headers["Location"] == second_url
    again = admin.get(second_url).text
    assert "3 dead letters will be sent again." in again
    assert _ids(again, "dead-item") == pages[1][3:] + pages[2][:3]
    assert pager(again)[0] == "51–100 of 117"


def test_overview_shows_the_first_items_and_links_to_all(web: Web, backlog: list) -> None:
    page = web.login("admin").get("/admin/destinations").text
    main = page.split('id="waiting-main"')[1].split("</table>")[0]
    assert _ids(main) == backlog[:10]
    assert ">All 250 waiting items<" in page
    assert 'href="/admin/destinations/main/waiting"' in page


def test_retry_from_the_waiting_page_comes_back_to_it(web: Web, backlog: list) -> None:
    admin = web.login("admin")
    here = pager(admin.get("/admin/destinations/main/waiting?size=25").text)[1]["next"]
    assert here.startswith("/admin/destinations/main/waiting?size=25&after=")
    resp = post(admin, "/admin/destinations/main/retry", {"back": here})
    assert resp.status_code == 302 and resp.headers["Location"] == here
    for back in ("https://evil.example/", "//evil.example/x", "/login"):
        resp = post(admin, "/admin/destinations/main/retry", {"back": back})
        assert resp.headers["Location"] == "/admin/destinations", back


@pytest.mark.parametrize(
    "query,field",
    [
        ("size=0", "size"),
        ("size=501", "size"),
        ("size=ten", "size"),
        ("size=-5", "size"),
        ("size=1e3", "size"),
        ("after=not-a-cursor", "after"),
        ("before=WyJhIiwiYiJd", "before"),  # ["a","b"]: well formed, not this list's key
        ("after=WzEuMF0", "after"),  # [1.0]: one value, not two
        ("after=WzEuMCwxXQ&before=end", "before"),  # [1.0,1]: both ways at once
    ],
)
def test_bad_paging_parameters_are_400_naming_them(
    web: Web, backlog: list, query: str, field: str
) -> None:
    admin = web.login("admin")
    for url in ("/admin/destinations/main/waiting", "/admin/destinations/dead"):
        resp = admin.get(f"{url}?{query}")
        if field == "before" and "WzEsMl0" in query and url.endswith("dead"):
            pass  # [1, 2] is a valid key of the dead letters list (floats accept ints)
        else:
            assert resp.status_code == 400, (url, resp.status_code)
            assert f"{field}: " in resp.text


def test_unknown_destination_on_the_list_pages(web: Web) -> None:
    admin = web.login("admin")
    resp = admin.get("/admin/destinations/nowhere/waiting")
    assert resp.status_code == 404 and "destination:" in resp.text
    resp = admin.get("/admin/destinations/dead?destination=nowhere")
    assert resp.status_code == 400 and "destination:" in resp.text
    empty = admin.get("/admin/destinations/offsite/waiting")
    assert empty.status_code == 200 and pager(empty.text) == ("No rows", {})
    assert admin.get("/admin/destinations/dead?size=500").status_code == 200


def test_list_pages_admin_only_and_in_japanese(web: Web, backlog: list) -> None:
    desk = web.login("desk")
    assert desk.get("/admin/destinations/main/waiting").status_code == 403
    assert desk.get("/admin/destinations/dead").status_code == 403
    ja = web.login("admin", **{"Accept-Language": "ja"})
    page = ja.get("/admin/destinations/main/waiting?size=100").text
    assert "250 件中 1–100 件目" in page and "次へ ›" in page and "古い順" in page
    assert "表示件数" in page
    resp = ja.get("/admin/destinations/main/waiting?size=0")
    assert resp.status_code == 400 and "size: 1 から 500 までの整数にしてください" in resp.text


def test_a_stalled_destination_and_its_held_items_are_shown(web: Web, queued: dict) -> None:
    client = web.login("admin")
    assert 'id="stalled-main"' not in client.get("/admin/destinations").text  # 10 min < 15
    cfg = web.runtime.config
    web.runtime.config = dataclasses.replace(
        cfg, forward=dataclasses.replace(cfg.forward, stall_minutes=5)
    )
    [item] = queue.claim(web.store, "main", 1, now=time.time() + 7200)
    queue.mark_retry(web.store, [item], "no decoder for JPEG Extended", lambda n: 60.0)
    html = client.get("/admin/destinations").text
    banner = html.split('id="stalled-main"')[1].split("</p>")[0]
    assert "has made no progress for 10 minutes while 2 items wait" in banner
    assert 'id="stalled-offsite"' not in html  # nothing waits there
    main = html.split('id="dest-main"')[1].split("</tr>")[0]
    assert '<small class="held">1 held</small>' in main
    waiting = client.get("/admin/destinations/main/waiting").text
    assert '<span class="badge held">held</span> no decoder for JPEG Extended' in waiting


def test_unrouted_images_are_listed_and_sent_from_the_page(web: Web) -> None:
    _receive(web, "9.9", [], time.time())
    admin = web.login("admin")
    page = admin.get("/admin/destinations").text
    assert "Unrouted images (1)" in page and 'id="unrouted-' in page
    row = page.split('<tr id="unrouted-')[1].split("</tr>")[0]
    assert "<b>山田 太郎</b>" in row and "ACC9.9" in row and "CT Head" in row
    assert (
        post(admin, "/admin/destinations/unrouted/route", {"destination": "nope"}).status_code
        == 400
    )
    resp = post(admin, "/admin/destinations/unrouted/route", {"destination": "main"})
    assert resp.status_code == 302
    assert queue.unrouted_count(web.store) == 0
    assert [w["why"] for w in queue.waiting_items(web.store, "main")] == ["queued, not tried yet"]
