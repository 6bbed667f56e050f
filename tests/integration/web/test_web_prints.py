"""Printers and print history pages over a running appliance that printed real films."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from PIL import Image

from appliance import accounts
from appliance.printing import history
from appliance.server import Appliance
from tests.helpers import wait_for
from tests.printscu import PrintSCU
from tests.webclient import Web, post, session_csrf
from web import create_app


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
                "STANDARD\\1,2", session_attrs={"FilmSessionLabel": label}, FilmSizeID="8INX10IN"
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
