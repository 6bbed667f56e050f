"""Issue 15, points 6 and 7 in headless Chromium against `appliance serve`: printers
managed on the Printers page with a test page, print history filters that stay small on
a phone and a laptop, and waiting images that say whose they are (sent by DCMTK
storescu to a box whose PACS is down) with a C-ECHO result that names what failed."""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import PASSWORD, SHOTS, Box, chromium
from tests.forward_factories import write_series
from tests.helpers import peer_env, require_peer, wait_for

pytestmark = pytest.mark.interop

JP_NAME = "Yamada^Tarou=山田^太郎"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when this returns: nothing listens


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    port = _closed_port()
    b = Box(
        tmp_path_factory.mktemp("clinic"),
        '[[devices]]\nae_title = "CT1"\nmodality = "CT"\n'
        f'[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\nport = {port}\n',
    )
    b.pacs_port = port  # type: ignore[attr-defined]
    yield b
    b.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


@pytest.fixture(scope="module")
def page(box: Box, browser: Any) -> Any:
    """The admin, signed in after the first start (setup token, password)."""
    pg = browser.new_page()
    pg.set_default_timeout(15_000)
    pg.on("dialog", lambda dialog: dialog.accept())  # "Delete office?"
    pg.goto(box.url + "/")
    pg.fill("#username", "admin")
    pg.fill("#password", PASSWORD)
    pg.fill("#password2", PASSWORD)
    pg.fill("#token", box.setup_token)
    pg.click("main button[type=submit]")
    pg.wait_for_url(re.compile(r"/admin/devices$"))
    return pg


def _flash(page: Any) -> str:
    return str(page.inner_text("p.flash"))


def test_printer_added_tested_changed_and_removed_on_the_page(box: Box, page: Any) -> None:
    page.goto(box.url + "/printers")
    assert "built in" in page.inner_text("#printer-folder")
    page.click("#new-printer")
    page.fill("#name", "office")
    page.fill("#uri", "http://nowhere/")
    page.click("button.primary")
    assert "folder:PATH" in page.inner_text("#error-uri")  # refused beside the field
    page.fill("#uri", "folder:/tmp/elsewhere")  # outside the data folder: refused too
    page.click("button.primary")
    assert "inside the data folder" in page.inner_text("#error-uri")
    page.fill("#uri", "folder:office")  # the data folder's office/
    page.click("button.primary")
    page.wait_for_url(re.compile(r"/printers$"))
    row = page.locator("#printer-office")
    assert "web" in row.inner_text() and "NORMAL" in row.inner_text()
    assert page.locator("#printer-folder").count() == 0  # the built-in folder gives way

    row.locator("form.test-page button").click()
    page.wait_for_selector("p.flash")
    [pdf] = list((box.data_dir / "office").glob("*test_page_office*.pdf"))
    assert _flash(page) == f"Test page sent to office: {pdf}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "printers.png"), full_page=True, animations="disabled")

    page.click("#printer-office >> text=Edit")
    page.fill("#uri", "folder:office2")
    page.click("button.primary")
    page.wait_for_url(re.compile(r"/printers$"))
    assert "folder:office2" in page.inner_text("#printer-office")
    page.click("#printer-office >> text=Delete")
    page.wait_for_selector("#printer-folder")
    assert "office removed" in _flash(page)


@pytest.mark.parametrize("size", [(390, 844), (1366, 768)])
def test_print_history_filters_stay_small(box: Box, page: Any, size: tuple[int, int]) -> None:
    width, height = size
    page.set_viewport_size({"width": width, "height": height})
    try:
        page.goto(box.url + "/prints")
        form = page.locator("#search-form").bounding_box()
        assert form is not None and form["height"] < 0.25 * height, form
        assert form["width"] <= width
        assert not page.locator("input[name=device]").is_visible()  # folded away
        page.click("#more-filters summary")
        assert page.locator("input[name=device]").is_visible()
        page.fill("#patient", "山田")
        page.press("#patient", "Enter")
        page.wait_for_url(re.compile(r"patient="))
        assert not page.locator("input[name=device]").is_visible()  # no other filter used
    finally:
        page.set_viewport_size({"width": 1366, "height": 768})


def test_waiting_images_say_whose_they_are_and_echo_says_what_failed(
    box: Box, page: Any, tmp_path: Path
) -> None:
    files = write_series(
        tmp_path / "images", 2, PatientName=JP_NAME, PatientID="P-77",
        AccessionNumber="ACC-2026-77", StudyDescription="CT Head", StudyDate="20261203",
        SpecificCharacterSet="ISO_IR 192",
    )  # fmt: skip
    out = subprocess.run(
        [require_peer("storescu"), "-aet", "CT1", "-aec", "APPLIANCE", "127.0.0.1",
         str(box.dicom_port), *map(str, files)],
        capture_output=True, text=True, timeout=60, env=peer_env(),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr

    def shown() -> bool:
        page.goto(box.url + "/admin/destinations")
        rows = page.locator("#waiting-pacs tbody tr[id^=item-]")
        return rows.count() == 2 and "destination unreachable" in rows.last.inner_text()

    wait_for(shown, timeout=30, interval=1)
    for i in range(2):
        row = page.locator("#waiting-pacs tbody tr[id^=item-]").nth(i)
        patient, study = (
            row.locator("td.patient").inner_text(),
            row.locator("td.study").inner_text(),
        )
        assert "山田 太郎" in patient and "P-77" in patient
        assert "ACC-2026-77" in study and "CT" in study and "CT Head" in study
        assert "2026-12-03" in study
        assert row.locator("td.attempts").inner_text() == "—"  # never "Attempts 0"
        why = row.locator("td.why").inner_text()
        assert why.startswith("not tried yet: destination unreachable")
        assert f"PACS@127.0.0.1:{box.pacs_port}" in why  # type: ignore[attr-defined]
    page.screenshot(path=str(SHOTS / "queues.png"), full_page=True, animations="disabled")

    page.click("#dest-pacs >> text=Test (C-ECHO)")
    page.wait_for_selector("p.flash.error")
    echo = _flash(page)
    port = box.pacs_port  # type: ignore[attr-defined]
    assert re.fullmatch(
        rf"C-ECHO to pacs \(PACS@127\.0\.0\.1:{port}\) at \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d "
        rf"failed: no association with PACS@127\.0\.0\.1:{port}: connection refused .*",
        echo,
    ), echo


def test_csp_blocked_nothing_on_these_pages(browser: Any) -> None:
    assert browser.csp_refusals == []
