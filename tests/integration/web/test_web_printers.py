"""Printers managed on the web as devices and destinations are, against a running
appliance: the Print SCP (over a real association) follows every edit without a restart,
also one made by another process; the test page goes through the printer's own output."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance import accounts
from appliance import printers as printer_list
from appliance.app import open_store, web_app
from appliance.config import PrinterSettings
from appliance.printing import history
from appliance.server import Appliance
from tests.helpers import wait_for
from tests.printscu import PRINTER, PRINTER_INSTANCE, PrintSCU
from tests.webclient import Web, field_errors, post
from web import start


@pytest.fixture
def box(start_appliance: Callable[..., Appliance], tmp_path: Path) -> tuple[Appliance, Web]:
    """A box with one printer of the file ('ward') and a profile 'MAMMO' that names it."""
    app = start_appliance(
        {
            "devices": [{"ae_title": "CT1"}],
            "printers": [{"name": "ward", "uri": f"folder:{tmp_path / 'ward'}"}],
            "print_profiles": [{"dpi": 30}, {"ae_title": "MAMMO", "printer": "ward", "dpi": 30}],
        }
    )
    rt = app.runtime
    assert rt is not None
    flask_app = start(web_app(rt, test_config={"TESTING": True}, announce=lambda _t: None))
    web = Web(flask_app, rt.store, rt)
    web.user("admin", accounts.ADMIN)
    return app, web


def _printer_name(app: Appliance) -> str:
    """What the Print SCP says its printer is (Printer N-GET, PS3.4 H.4.6)."""
    scu = PrintSCU(app.dicom_port, calling="CT1")
    try:
        st, ds = scu.get(PRINTER, PRINTER_INSTANCE)
        assert st == 0, hex(st)
        return str(ds.PrinterName)
    finally:
        scu.release()


def _print(app: Appliance) -> str:
    scu = PrintSCU(app.dicom_port, calling="CT1")
    try:
        _box, job = scu.print_film("STANDARD\\1,1", FilmSizeID="8INX10IN")
    finally:
        scu.release()
    rt = app.runtime
    assert rt is not None
    wait_for(lambda: history.get_job(rt.store, job)["state"] in ("DONE", "FAILURE"))
    return str(history.get_job(rt.store, job)["printer"])


def test_added_changed_removed_on_the_page_and_the_scp_follows(
    box: tuple[Appliance, Web], tmp_path: Path
) -> None:
    app, web = box
    admin = web.login("admin")
    page = admin.get("/printers").text
    ward = page.split('id="printer-ward"')[1].split("</tr>")[0]
    assert "configuration file" in ward and "/printers/ward/edit" not in ward
    assert "Print test page" in ward
    assert admin.get("/printers/ward/edit").status_code == 404  # the file's: read-only
    assert admin.get("/printers/new").status_code == 200

    # A printer added on the page: listed, audited, and the next film may go to it.
    data = app.config.data_dir
    resp = post(admin, "/printers/new", {"name": "laser", "uri": f"folder:{data / 'laser'}"})
    assert resp.status_code == 302
    assert web.count("audit", "action = 'printer-add' AND object = 'printer laser'") == 1
    row = admin.get("/printers").text.split('id="printer-laser"')[1].split("</tr>")[0]
    assert ">web<" in row and "/printers/laser/edit" in row
    assert [p.name for p in app.runtime.printers.current()] == ["ward", "laser"]
    assert _print(app) == "ward"  # the first printer is still the file's
    assert app.services[_svc(app)].printers["laser"].path == data / "laser"

    # Changed: the SCP uses the new address for the next film, without a restart.
    assert admin.get("/printers/laser/edit").status_code == 200
    resp = post(admin, "/printers/laser/edit", {"name": "laser", "uri": "folder:l2"})
    assert resp.status_code == 302
    assert _printer_name(app) == "ward"  # the next association sees the list as it is now
    assert app.services[_svc(app)].printers["laser"].path == data / "l2"  # under the data folder

    # Removed: gone from the SCP's outputs; the file's printer stays.
    assert post(admin, "/printers/laser/delete").status_code == 302
    assert _printer_name(app) == "ward"
    assert "laser" not in app.services[_svc(app)].printers
    assert web.count("audit", "action = 'printer-delete'") == 1


def _svc(app: Appliance) -> int:
    return next(i for i, s in enumerate(app.services) if s.name == "print")


def test_first_web_printer_takes_the_films_of_a_box_without_printers(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    """No [[printers]]: films go to the prints folder until a printer is added on the page;
    one added by another process (serve --only web) counts within seconds."""
    app = start_appliance({"devices": [{"ae_title": "CT1"}], "print_profiles": [{"dpi": 30}]})
    assert _printer_name(app) == "folder" and _print(app) == "folder"
    other = open_store(app.config.data_dir)  # another process's connection
    try:
        printer_list.save(other, PrinterSettings("lobby", f"folder:{tmp_path / 'lobby'}"))
    finally:
        other.close()
    wait_for(lambda: _printer_name(app) == "lobby", timeout=10)
    assert _print(app) == "lobby"
    assert any((tmp_path / "lobby").glob("*.pdf"))


@pytest.mark.parametrize(
    "form,field",
    [
        ({"name": "", "uri": "folder:x"}, "name"),
        ({"name": "bad name!", "uri": "folder:x"}, "name"),
        ({"name": "x" * 33, "uri": "folder:x"}, "name"),
        ({"name": "p1", "uri": "http://printer/"}, "uri"),
        ({"name": "p1", "uri": ""}, "uri"),
        ({"name": "ward", "uri": "folder:x"}, "name"),  # the file's printer has that name
    ],
)
def test_bad_printer_is_400_naming_the_field(
    box: tuple[Appliance, Web], form: dict, field: str
) -> None:
    _app, web = box
    resp = post(web.login("admin"), "/printers/new", form)
    assert resp.status_code == 400
    assert field in field_errors(resp.text)
    assert web.count("printers", "managed_by = 'web'") == 0


def test_refusals(box: tuple[Appliance, Web], tmp_path: Path) -> None:
    app, web = box
    admin = web.login("admin")
    resp = post(admin, "/printers/ward/delete", follow_redirects=True)
    assert "ward: is managed by the configuration file" in resp.text
    assert web.count("printers", "name = 'ward'") == 1  # the file's printer stays
    for url in ("/printers/nowhere/delete", "/printers/nowhere/test"):
        resp = post(admin, url)
        assert resp.status_code == 404 and "printer:" in resp.text
    assert admin.get("/printers/nowhere/edit").status_code == 404
    # A web printer that a profile names keeps its name and stays.
    printer_list.save(app.runtime.store, PrinterSettings("spare", "folder:spare"))
    in_use = {"spare": "MAMMO"}
    with pytest.raises(Exception, match="print profile MAMMO"):
        printer_list.delete(app.runtime.store, "spare", in_use)
    desk = web.login("desk")
    assert desk.get("/printers").status_code == 200  # the list is for the front desk too
    assert "Print test page" not in desk.get("/printers").text
    for url in ("/printers/new", "/printers/ward/test", "/printers/spare/delete"):
        assert post(desk, url, {"name": "x", "uri": "folder:x"}).status_code == 403
    assert web.count("audit", "action LIKE 'printer-%' AND actor = 'desk'") == 0


def test_test_page_goes_through_the_folder_output(
    box: tuple[Appliance, Web], tmp_path: Path
) -> None:
    _app, web = box
    admin = web.login("admin")
    resp = post(admin, "/printers/ward/test", follow_redirects=True)
    assert resp.status_code == 200
    pdfs = list((tmp_path / "ward").glob("*test_page_ward*.pdf"))
    assert len(pdfs) == 1 and pdfs[0].read_bytes().startswith(b"%PDF-")
    assert f"Test page sent to ward: {pdfs[0]}" in resp.text
    # The page shows the test page as it was sent: the folder printer's own PNG of it.
    [png] = re.findall(r'<img src="(/printers/test/[0-9.]+\.png)"', resp.text)
    preview = admin.get(png)
    assert preview.status_code == 200 and preview.mimetype == "image/png"
    [sent_png] = (tmp_path / "ward").glob("*test_page_ward*.png")
    assert preview.data == sent_png.read_bytes()
    assert admin.get("/printers/test/1.2.3.png").status_code == 404
    assert admin.get("/printers/test/..%2F..%2Fx.png").status_code == 404
    assert web.login("desk").get(png).status_code == 403
    assert 'id="test-page"' not in admin.get("/printers?test=../../etc").text
    assert web.count("audit", "action = 'printer-test' AND object = 'printer ward'") == 1


def test_test_page_to_an_unreachable_printer_says_why(box: tuple[Appliance, Web]) -> None:
    _app, web = box
    admin = web.login("admin")
    post(admin, "/printers/new", {"name": "gone", "uri": "ipp://127.0.0.1:9/ipp/print"})
    resp = post(admin, "/printers/gone/test", follow_redirects=True)
    assert 'class="flash error"' in resp.text
    assert "Test page to gone failed: " in resp.text and "127.0.0.1:9" in resp.text
    assert web.count("audit", "action = 'printer-test' AND detail LIKE 'failed:%'") == 1


def test_printers_over_the_json_api(box: tuple[Appliance, Web], tmp_path: Path) -> None:
    """/api/v1/printers: the same list, rules and live effect as the page, for admins."""
    app, web = box
    token = accounts.create_token(web.store, web.user("robot", accounts.ADMIN), "test")
    api = web.client(Authorization=f"Bearer {token}")
    assert api.get("/api/v1/printers").json == {
        "printers": [{"name": "ward", "uri": f"folder:{tmp_path / 'ward'}", "managed_by": "config"}]
    }
    laser = {"name": "laser", "uri": "folder:laser"}
    resp = api.post("/api/v1/printers", json=laser)
    assert resp.status_code == 201 and resp.json == {**laser, "managed_by": "web"}
    assert [p.name for p in app.runtime.printers.current()] == ["ward", "laser"]
    assert _printer_name(app) == "ward"  # the next association sees the list as it is now
    assert app.services[_svc(app)].printers["laser"].path == app.config.data_dir / "laser"
    # Bad input names the field; the file's printer is read-only; unknown is 404.
    resp = api.post("/api/v1/printers", json={"name": "x", "uri": "lpr://x"})
    assert resp.status_code == 400 and "uri" in resp.json["errors"]
    resp = api.put("/api/v1/printers/ward", json={"name": "ward", "uri": "folder:elsewhere"})
    assert resp.status_code == 400 and "configuration file" in str(resp.json["errors"])
    assert api.delete("/api/v1/printers/ward").status_code == 400
    assert api.get("/api/v1/printers/nowhere").status_code == 404
    resp = api.put("/api/v1/printers/laser", json={**laser, "uri": "folder:l2"})
    assert resp.status_code == 200 and _printer_name(app) == "ward"
    assert app.services[_svc(app)].printers["laser"].path == app.config.data_dir / "l2"
    assert api.delete("/api/v1/printers/laser").status_code == 204
    assert _printer_name(app) == "ward"
    assert "laser" not in app.services[_svc(app)].printers
    assert web.count("audit", "action LIKE 'printer-%' AND actor = 'robot'") == 3
    # The front desk's token reads nothing here and changes nothing.
    desk_token = accounts.create_token(web.store, web.user("ris"), "test")
    desk = web.client(Authorization=f"Bearer {desk_token}")
    assert desk.get("/api/v1/printers").status_code == 403
    assert desk.post("/api/v1/printers", json=laser).status_code == 403


@pytest.mark.parametrize(
    "uri", ["folder:/tmp/elsewhere", "folder:../outside", "folder:.", "folder:spool/../../x"]
)
def test_a_web_printer_cannot_write_outside_the_data_folder(
    box: tuple[Appliance, Web], uri: str
) -> None:
    """The file may name any folder; a web admin may not make the box write elsewhere."""
    _app, web = box
    resp = post(web.login("admin"), "/printers/new", {"name": "out", "uri": uri})
    assert resp.status_code == 400 and "uri" in field_errors(resp.text)
    assert "inside the data folder" in resp.text
    assert web.count("printers", "managed_by = 'web'") == 0
