"""Printers and print history pages over a running appliance that printed real films."""

from __future__ import annotations

import datetime as dt
import io
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from flask.testing import FlaskClient
from PIL import Image

from appliance import accounts
from appliance.printing import history
from appliance.printing.repo import PrintRepo
from appliance.printing.service import PRINTS_DIR
from appliance.server import Appliance
from tests.helpers import wait_for
from tests.printscu import PrintSCU
from tests.webclient import Web, pager, post, session_csrf, walk
from web import create_app

# Whose images each film printed: the Japanese one in UTF-8, declared in the item.
PATIENTS = {
    "CHEST": {"SpecificCharacterSet": "ISO_IR 192", "PatientName": "Yamada^Tarou=山田^太郎",
              "PatientID": "P001", "AccessionNumber": "A20261203-0001"},
    "KNEE": {"PatientName": "Smith^Ann", "PatientID": "P002", "AccessionNumber": "A20261203-0002"},
}  # fmt: skip


@pytest.fixture
def printed(start_appliance: Callable[..., Appliance], tmp_path: Path) -> tuple[Web, dict]:
    """Two films printed by DICOM (CT1 'CHEST', MR1 'KNEE'), the web app on that runtime."""
    app = start_appliance(
        {
            "devices": [{"ae_title": "CT1"}, {"ae_title": "MR1"}],
            "printers": [
                {"name": "ward", "uri": f"folder:{tmp_path / 'ward'}"},
                {"name": "archive", "uri": f"folder:{tmp_path / 'archive'}"},
            ],
            "print_profiles": [{"dpi": 30}],
        }
    )
    jobs = {}
    for calling, label in (("CT1", "CHEST"), ("MR1", "KNEE")):
        scu = PrintSCU(app.dicom_port, calling=calling)
        try:
            _box, jobs[label] = scu.print_film(
                "STANDARD\\1,2",
                session_attrs={"FilmSessionLabel": label},
                item_attrs=PATIENTS[label],
                FilmSizeID="8INX10IN",
            )
        finally:
            scu.release()
    rt = app.runtime
    assert rt is not None
    for uid in jobs.values():
        wait_for(lambda uid=uid: history.get_job(rt.store, uid)["state"] == "DONE")
    flask_app = create_app(rt, test_config={"TESTING": True}, announce=lambda _t: None)
    web = Web(flask_app, rt.store, rt)
    web.user("admin", accounts.ADMIN)
    return web, jobs


def test_printers_page_shows_live_status(printed: tuple[Web, dict], tmp_path: Path) -> None:
    web, _jobs = printed
    desk = web.login("desk")
    page = desk.get("/printers")
    assert page.status_code == 200
    assert 'id="printer-ward"' in page.text and 'id="printer-archive"' in page.text
    assert "NORMAL" in page.text
    shutil.rmtree(tmp_path / "archive", ignore_errors=True)
    (tmp_path / "archive").write_text("a file where the folder should be")
    page = desk.get("/printers").text
    assert 'id="printer-archive" class="status-failure"' in page  # live, not cached


def test_history_search_by_device_label_state_and_time(printed: tuple[Web, dict]) -> None:
    web, jobs = printed
    desk = web.login("desk")
    page = desk.get("/prints").text
    assert f'id="job-{jobs["CHEST"]}"' in page and f'id="job-{jobs["KNEE"]}"' in page
    page = desk.get("/prints?device=ct1").text
    assert f'id="job-{jobs["CHEST"]}"' in page and f'id="job-{jobs["KNEE"]}"' not in page
    page = desk.get("/prints?label=kne").text
    assert f'id="job-{jobs["KNEE"]}"' in page and f'id="job-{jobs["CHEST"]}"' not in page
    assert f'id="job-{jobs["KNEE"]}"' in desk.get("/prints?state=DONE").text
    assert 'id="job-' not in desk.get("/prints?state=FAILURE").text
    assert 'id="job-' not in desk.get("/prints?until=2000-01-01").text
    today = history.get_job(web.store, jobs["KNEE"])["created_at"][:10]
    page = desk.get(f"/prints?since={today}&until={today}").text
    assert f'id="job-{jobs["KNEE"]}"' in page  # an end date counts its whole day


@pytest.mark.parametrize(
    "query,field", [("state=LOST", "state"), ("since=yesterday", "since"), ("until=13/13", "until")]
)
def test_history_bad_search_is_400_naming_the_field(
    printed: tuple[Web, dict], query: str, field: str
) -> None:
    web, _jobs = printed
    resp = web.login("desk").get(f"/prints?{query}")
    assert resp.status_code == 400
    assert f'id="error-{field}"' in resp.text


def test_job_detail_previews_exactly_as_sent_and_pdf(printed: tuple[Web, dict]) -> None:
    web, jobs = printed
    desk = web.login("desk")
    uid = jobs["CHEST"]
    page = desk.get(f"/prints/{uid}")
    assert page.status_code == 200
    assert f"/prints/{uid}/page/1" in page.text and f"/prints/{uid}/document.pdf" in page.text
    png = desk.get(f"/prints/{uid}/page/1")
    assert png.status_code == 200 and png.mimetype == "image/png"
    cfg = web.runtime.config
    assert png.data == history.page_preview_path(cfg, web.store, uid, 1).read_bytes()
    assert Image.open(io.BytesIO(png.data)).size == (240, 300)
    pdf = desk.get(f"/prints/{uid}/document.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert pdf.data == history.document_path(cfg, web.store, uid).read_bytes()
    assert "attachment" in pdf.headers["Content-Disposition"]


def test_missing_jobs_pages_and_path_tricks_are_404(printed: tuple[Web, dict]) -> None:
    web, jobs = printed
    desk = web.login("desk")
    uid = jobs["CHEST"]
    for url in (
        "/prints/1.2.3",
        f"/prints/{uid}/page/2",
        f"/prints/{uid}/page/0",
        "/prints/1.2.3/document.pdf",
        "/prints/..%2F..%2Fsecret/document.pdf",
        "/prints/1.2.3/page/1",
    ):
        resp = desk.get(url)
        assert resp.status_code == 404, url
    assert "page:" in desk.get(f"/prints/{uid}/page/2").text
    assert "uid:" in desk.get("/prints/1.2.3").text


def test_reprint_to_the_same_and_another_printer(printed: tuple[Web, dict], tmp_path: Path) -> None:
    web, jobs = printed
    desk = web.login("desk")
    uid = jobs["CHEST"]
    before = web.count("print_jobs")
    resp = post(desk, f"/prints/{uid}/reprint", {"printer": "archive"})
    assert resp.status_code == 302
    new = web.store.query("SELECT uid FROM print_jobs WHERE reprint_of = ?", (uid,))[0]["uid"]
    assert resp.headers["Location"].endswith(f"/prints/{new}")
    assert web.count("print_jobs") == before + 1
    wait_for(lambda: history.get_job(web.store, new)["state"] == "DONE")
    assert len(list((tmp_path / "archive").glob("*.pdf"))) == 1  # really printed there
    assert web.count("audit", "action = 'print-reprint' AND actor = 'desk' AND object = ?",
                     (uid,)) == 1  # fmt: skip
    assert "archive" in desk.get(resp.headers["Location"]).text  # the flash names the printer
    resp = post(desk, f"/prints/{uid}/reprint", {"printer": ""})  # same printer
    assert resp.status_code == 302
    assert web.count("print_jobs", "reprint_of = ? AND printer = 'ward'", (uid,)) == 1


def test_reprint_refusals(printed: tuple[Web, dict]) -> None:
    web, jobs = printed
    desk = web.login("desk")
    uid = jobs["CHEST"]
    before = web.count("print_jobs")
    resp = post(desk, f"/prints/{uid}/reprint", {"printer": "nowhere"})
    assert resp.status_code == 400 and "printer:" in resp.text
    assert post(desk, "/prints/1.2.3/reprint").status_code == 404
    resp = desk.post(f"/prints/{uid}/reprint", data={"printer": "ward"})  # no CSRF token
    assert resp.status_code == 400
    resp = desk.post(f"/prints/{uid}/reprint", data={"csrf_token": "forged", "printer": "ward"})
    assert resp.status_code == 400
    assert web.count("print_jobs") == before
    assert web.count("audit", "action = 'print-reprint'") == 0


def test_pages_need_sign_in(printed: tuple[Web, dict]) -> None:
    web, jobs = printed
    anon: FlaskClient = web.client()
    uid = jobs["CHEST"]
    for url in ("/printers", "/prints", f"/prints/{uid}", f"/prints/{uid}/page/1",
                f"/prints/{uid}/document.pdf"):  # fmt: skip
        resp = anon.get(url)
        assert resp.status_code == 302 and "/login" in resp.headers["Location"], url
    anon.get("/login")
    resp = anon.post(f"/prints/{uid}/reprint", data={"csrf_token": session_csrf(anon)})
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    assert web.count("print_jobs") == 2


def test_menu_links(printed: tuple[Web, dict]) -> None:
    web, _jobs = printed
    assert 'href="/prints"' in web.login("desk").get("/printers").text
    admin_page = web.login("admin").get("/prints").text
    assert 'href="/printers"' in admin_page and 'href="/admin/destinations"' in admin_page


def test_history_in_japanese(printed: tuple[Web, dict]) -> None:
    web, jobs = printed
    desk = web.login("desk", **{"Accept-Language": "ja"})
    assert "印刷履歴" in desk.get("/prints").text
    assert "再印刷" in desk.get(f"/prints/{jobs['CHEST']}").text


# -- paging through the history ----------------------------------------------------

T0 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)


def _add_jobs(web: Web, n: int, first: int = 0, at: dt.datetime = T0) -> list[dict]:
    """``n`` queued jobs, two to each second (ties on created_at): CT1 and MR1 in turn,
    every seventh FAILURE. Returns the rows made."""
    repo = PrintRepo(web.store, web.runtime.config.data_dir / PRINTS_DIR)
    made = []
    with web.store.write():  # one commit: the test stays fast
        for i in range(first, first + n):
            when = at + dt.timedelta(seconds=(i - first) // 2)
            row = {
                "uid": f"1.2.826.0.1.3680043.10.{i}",
                "calling_ae": "MR1" if i % 3 == 0 else "CT1",
                "called_ae": "APPLIANCE",
                "label": f"FILM {i}",
                "printer": "folder",
                "state": "FAILURE" if i % 7 == 0 else "DONE",
                "spec": {"films": [], "session": {}, "profile": {}},
                "created_at": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            }
            repo.create_job(row, [])
            made.append(row)
    return made


def _newest_first(rows: list[dict]) -> list[str]:
    return [r["uid"] for r in sorted(rows, key=lambda r: (r["created_at"], r["uid"]), reverse=True)]


@pytest.fixture
def many_jobs(web: Web) -> list[dict]:
    """230 print jobs made through the print repository (no film printed)."""
    return _add_jobs(web, 230)


def test_history_pages_through_every_job_once_newest_first(web: Web, many_jobs: list) -> None:
    desk = web.login("desk")
    pages = walk(desk, "/prints", "job")
    assert [len(p) for p in pages] == [100, 100, 30]
    assert sum(pages, []) == _newest_first(many_jobs)
    text, links = pager(desk.get("/prints").text)
    assert text == "1–100 of 230" and set(links) == {"next", "last"}
    assert pager(desk.get(links["next"]).text)[0] == "101–200 of 230"
    last = desk.get(links["last"]).text
    assert pager(last)[0] == "201–230 of 230"  # the page "Next" would reach
    back = walk(desk, pager(last)[1]["previous"], "job", link="previous")
    assert back == pages[1::-1]


def test_history_links_keep_the_search(web: Web, many_jobs: list) -> None:
    desk = web.login("desk")
    url = "/prints?device=ct1&label=FILM&state=DONE&since=2026-03-01&until=2026-03-02&size=40"
    pages = walk(desk, url, "job")
    wanted = [r for r in many_jobs if r["calling_ae"] == "CT1" and r["state"] == "DONE"]
    assert [len(p) for p in pages] == [40, 40, 40, 11]
    assert sum(pages, []) == _newest_first(wanted)
    first = desk.get(url).text
    text, links = pager(first)
    assert text == "1–40 of 131"
    query = parse_qs(urlsplit(links["next"]).query)
    expected = {"device": ["ct1"], "label": ["FILM"], "state": ["DONE"], "since": ["2026-03-01"],
                "until": ["2026-03-02"], "size": ["40"]}  # fmt: skip
    assert {k: v for k, v in query.items() if k != "after"} == expected
    assert "<option selected>40</option>" in first  # the form shows the size in use
    assert pager(desk.get("/prints?device=MR1&size=500").text)[0] == "1–77 of 77"


def test_a_job_added_between_page_loads_neither_shifts_nor_repeats(
    web: Web, many_jobs: list
) -> None:
    desk = web.login("desk")
    everything = _newest_first(many_jobs)
    first = desk.get("/prints?size=100").text
    assert re.findall(r'id="job-([^"]+)"', first) == everything[:100]
    [new] = _add_jobs(web, 1, first=900, at=T0 + dt.timedelta(days=1))  # the newest now
    second = desk.get(pager(first)[1]["next"]).text
    assert re.findall(r'id="job-([^"]+)"', second) == everything[100:200]
    assert pager(second)[0] == "102–201 of 231"
    assert re.findall(r'id="job-([^"]+)"', desk.get("/prints").text)[0] == new["uid"]


@pytest.mark.parametrize(
    "query,field",
    [
        ("size=0", "size"),
        ("size=501", "size"),
        ("size=many", "size"),
        ("after=%25%25", "after"),
        ("before=WzEsMl0", "before"),  # [1,2]: well formed, but the key is two texts
        ("after=WyJhIiwiYiJd&before=end", "before"),
    ],
)
def test_history_bad_paging_is_400_naming_the_parameter(
    web: Web, many_jobs: list, query: str, field: str
) -> None:
    resp = web.login("desk").get(f"/prints?{query}")
    assert resp.status_code == 400
    assert f'id="error-{field}"' in resp.text
    assert 'id="job-' not in resp.text


def test_history_paging_in_japanese(web: Web, many_jobs: list) -> None:
    desk = web.login("desk", **{"Accept-Language": "ja"})
    page = desk.get("/prints").text
    assert "230 件中 1–100 件目" in page and "新しい順" in page and "最後 »" in page
    resp = desk.get("/prints?size=0")
    assert resp.status_code == 400 and "1 から 500 までの整数にしてください" in resp.text


def test_a_pending_job_refreshes_itself_and_a_reprint_names_its_origin(
    printed: tuple[Web, dict],
) -> None:
    web, jobs = printed
    desk = web.login("desk")
    uid = jobs["CHEST"]
    assert "data-refresh" not in desk.get(f"/prints/{uid}").text  # DONE: nothing changes
    with web.store.write() as db:
        db.execute("UPDATE print_jobs SET state = 'PENDING' WHERE uid = ?", (uid,))
    assert 'data-refresh="5"' in desk.get(f"/prints/{uid}").text
    assert 'data-refresh="5"' in desk.get("/prints").text
    resp = post(desk, f"/prints/{uid}/reprint", {"printer": ""})
    page = desk.get(resp.headers["Location"]).text
    assert ">the earlier job</a>" in page and uid in page


def test_jobs_show_and_find_the_patient_of_the_printed_images(printed: tuple[Web, dict]) -> None:
    """Patient Name / ID / Accession of the printed images, stored at job time, are shown in
    the list and on the job page, and searched by one field (kanji, romaji, ID, accession)."""
    web, jobs = printed
    stored = web.store.query(
        "SELECT patient_name, patient_id, accession_number FROM print_jobs WHERE uid = ?",
        (jobs["CHEST"],),
    )[0]
    assert stored == {"patient_name": "Yamada^Tarou=山田^太郎", "patient_id": "P001",
                      "accession_number": "A20261203-0001"}  # fmt: skip
    desk = web.login("desk")
    page = desk.get("/prints").text
    chest = page.split(f'id="job-{jobs["CHEST"]}"')[1].split("</tr>")[0]
    assert "山田 太郎" in chest and "ID P001" in chest and "A20261203-0001" in chest
    knee = page.split(f'id="job-{jobs["KNEE"]}"')[1].split("</tr>")[0]
    assert "Smith Ann" in knee and "P002" in knee
    for term in ("山田", "yamada tarou", "P001", "20261203-0001"):
        found = desk.get("/prints", query_string={"patient": term}).text
        assert f'id="job-{jobs["CHEST"]}"' in found, term
        assert f'id="job-{jobs["KNEE"]}"' not in found, term
    assert f'id="job-{jobs["KNEE"]}"' in desk.get("/prints?patient=a20261203").text
    assert 'id="job-' not in desk.get("/prints?patient=%25").text  # no wildcard injection
    detail = desk.get(f"/prints/{jobs['CHEST']}").text
    assert '<dd id="job-patient">山田 太郎 <small class="alpha">Yamada Tarou</small></dd>' in detail
    assert '<dd id="job-patient-id">P001</dd>' in detail
    assert '<dd id="job-accession">A20261203-0001</dd>' in detail
    # A reprint is the same patient's film.
    again = history.reprint(web.runtime.config, web.store, jobs["CHEST"])
    assert history.get_job(web.store, again)["patient_id"] == "P001"
    # The filters fold away until one of them is used.
    assert '<details id="more-filters">' in page
    assert '<details id="more-filters" open>' in desk.get("/prints?device=CT1").text
