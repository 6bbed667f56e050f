"""The Studies page in headless Chromium against `appliance serve`: two studies sent by
DCMTK storescu, their thumbnails shown, found by a Japanese name, and sent to a 3D
workstation (a device that is DCMTK's storescp), which receives every image; the CSP
blocks nothing. Screenshot: build/screenshots/studies.png."""

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

JP_NAME = "Yamada^Tarou=山田^太郎=やまだ^たろう"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def storescp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    out = tmp_path_factory.mktemp("ws3d")
    port = _free_port()
    proc = subprocess.Popen(
        [require_peer("storescp"), "-aet", "WS3D", "-od", str(out), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=peer_env(),
    )  # fmt: skip

    def listening() -> bool:
        assert proc.poll() is None, "storescp exited"
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, timeout=10)
    yield port, out
    proc.kill()
    proc.wait(5)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, storescp: tuple[int, Path]) -> Iterator[Box]:
    b = Box(
        tmp_path_factory.mktemp("studies"),
        '[[devices]]\nae_title = "CT1"\nmodality = "CT"\n'
        f'[[devices]]\nae_title = "WS3D"\nhost = "127.0.0.1"\nport = {storescp[0]}\n'
        'description = "3D workstation"\n',
    )
    yield b
    b.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(
        tmp_path_factory.mktemp("chromium-profile"), locale="ja-JP", height=900
    ) as context:
        yield context


def _store(box: Box, tmp: Path) -> None:
    """Two studies from the CT by storescu: a Japanese patient (3 images), another (2)."""
    files = write_series(
        tmp / "a", 3, PatientName=JP_NAME, PatientID="P-77", AccessionNumber="ACC-77",
        StudyDescription="CT Head", StudyDate="20261203", StudyTime="101500",
        SpecificCharacterSet="ISO_IR 192",
    ) + write_series(
        tmp / "b", 2, PatientName="Doe^John", PatientID="P-12", AccessionNumber="ACC-12",
        StudyDescription="CT Chest", StudyDate="20261202", StudyTime="090000",
    )  # fmt: skip
    out = subprocess.run(
        [require_peer("storescu"), "-aet", "CT1", "-aec", "APPLIANCE", "127.0.0.1",
         str(box.dicom_port), *map(str, files)],
        capture_output=True, text=True, timeout=60, env=peer_env(),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_studies_thumbnails_search_and_send_to_a_workstation(
    box: Box, browser: Any, storescp: tuple[int, Path], tmp_path: Path
) -> None:
    _store(box, tmp_path)
    page = browser.new_page()
    page.set_default_timeout(15_000)
    page.goto(box.url + "/")
    page.fill("#username", "admin")
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    page.fill("#token", box.setup_token)
    page.click("main button[type=submit]")
    page.wait_for_url(re.compile(r"/admin/devices$"))

    page.click("nav.menu >> text=検査一覧")  # the menu link, in Japanese
    page.wait_for_url(re.compile(r"/studies$"))
    rows = page.locator("tr.study")
    assert rows.count() == 2
    assert "山田" in rows.nth(0).inner_text()  # 2026-12-03 before 2026-12-02
    page.wait_for_function(
        "() => [...document.querySelectorAll('img.thumbnail')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    assert "3 / 3" in rows.nth(0).locator("td.counts").inner_text()

    page.fill("#name", "やまだ")
    page.press("#name", "Enter")
    page.wait_for_url(re.compile(r"name="))
    assert page.locator("tr.study").count() == 1

    row = page.locator("tr.study").first
    row.locator("select[name=to]").select_option("device:WS3D")
    row.locator("form.send button").click()
    page.wait_for_selector("p.flash")
    assert "WS3D" in page.inner_text("p.flash")
    assert re.search(r"name=", page.url)  # back on the same search

    out = storescp[1]
    wait_for(lambda: len(list(out.iterdir())) == 3, timeout=30, interval=0.5)

    def delivered() -> bool:
        page.reload()
        return "3 件配信済み" in page.locator("tr.study").first.locator("td.delivery").inner_text()

    wait_for(delivered, timeout=20, interval=1)
    page.goto(box.url + "/studies")
    page.wait_for_function(
        "() => [...document.querySelectorAll('img.thumbnail')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "studies.png"), full_page=True, animations="disabled")
    assert browser.csp_refusals == []
