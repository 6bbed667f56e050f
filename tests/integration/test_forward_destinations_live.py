"""Destinations edited on the web page take effect on the forwarder without a restart.

The appliance runs as two processes would under systemd (``serve --only dicom`` and
``serve --only web`` on one data directory), so a change reaches the DICOM side only
through the database's change counter; the admin uses the real web server over HTTP.
"""

from __future__ import annotations

import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from appliance import accounts, live, status
from appliance.forward import queue
from appliance.server import Appliance
from tests.forward_factories import write_series
from tests.forward_helpers import FakePacs, forward_config, pacs_destination, send_files
from tests.helpers import make_config, wait_for
from tests.webclient import https_context

PASSWORD = "correct horse battery"


class Browser:
    """A cookie-keeping HTTP client that fills in each form's CSRF token."""

    def __init__(self, port: int) -> None:
        self.base = f"https://127.0.0.1:{port}"
        jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(jar),
            urllib.request.HTTPSHandler(context=https_context()),
        )

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=10) as resp:
            return str(resp.read().decode("utf-8"))

    def submit(self, form_page: str, action: str, data: dict[str, Any]) -> tuple[int, str]:
        """POST a form of ``form_page`` (its CSRF token) to ``action``; (status, page)."""
        token = re.search(r'name="csrf_token" value="([^"]+)"', self.get(form_page))
        assert token, "page has no CSRF field"
        body = urllib.parse.urlencode({"csrf_token": token.group(1), **data}).encode()
        try:
            with self.opener.open(self.base + action, body, timeout=10) as resp:
                return resp.status, resp.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8")


@pytest.fixture
def pacs_servers() -> Iterator[list[FakePacs]]:
    started: list[FakePacs] = []
    yield started
    for pacs in started:
        pacs.close()


def start(raw: dict[str, Any], data_dir: Path, started: list[Appliance]) -> tuple[Appliance, ...]:
    cfg = make_config(data_dir, raw)
    dicom = Appliance(cfg, only=("dicom",)).start()
    started.append(dicom)
    web = Appliance(cfg, only=("web",)).start()
    started.append(web)
    return dicom, web


def forward(app: Appliance) -> Any:
    return next(s for s in app.services if s.name == "forward")


def added(dicom: Appliance) -> Any:
    lanes = forward(dicom).senders.get("added")
    return lanes[0].dest if lanes else None


def uids(paths: list[Path]) -> list[str]:
    return [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths]


def test_add_edit_remove_readd_and_restart(
    tmp_path: Path, pacs_servers: list[FakePacs], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "REFRESH_S", 0.2)  # the other process looks sooner
    filed, first, second = (FakePacs(ae_title=t) for t in ("FILED", "WEBPACS", "WEBPACS"))
    pacs_servers += [filed, first, second]
    raw = forward_config([pacs_destination("filed", "FILED", filed.port)])
    started: list[Appliance] = []
    try:
        dicom, web = start(raw, tmp_path / "data", started)
        accounts.create_user(web.runtime.store, "admin", PASSWORD, accounts.ADMIN)  # type: ignore[union-attr]
        browser = Browser(web.web_port)  # type: ignore[arg-type]
        code, _ = browser.submit("/login", "/login", {"username": "admin", "password": PASSWORD})
        assert code == 200
        form = {"name": "added", "ae_title": "WEBPACS", "host": "127.0.0.1",
                "port": str(first.port), "commitment": "delivery"}  # fmt: skip

        # Added on the web page: images received afterwards go to it, no restart.
        code, _ = browser.submit("/admin/destinations/new", "/admin/destinations/new", form)
        assert code == 200
        wait_for(lambda: added(dicom) is not None, timeout=10)
        one = write_series(tmp_path / "one", 2)
        assert send_files(dicom.dicom_port, one) == [status.SUCCESS] * 2  # type: ignore[arg-type]
        wait_for(lambda: sorted(first.stored_uids()) == sorted(uids(one)), timeout=10)

        # Its port changed: delivery goes to the new port.
        edit = "/admin/destinations/added/edit"
        code, _ = browser.submit(edit, edit, {**form, "port": str(second.port)})
        assert code == 200
        wait_for(lambda: added(dicom).port == second.port, timeout=10)
        two = write_series(tmp_path / "two", 1)
        assert send_files(dicom.dicom_port, two) == [status.SUCCESS]  # type: ignore[arg-type]
        wait_for(lambda: second.stored_uids() == uids(two), timeout=10)
        assert len(first.stored_uids()) == 2

        # The PACS goes down with an image waiting; the destination is removed: nothing
        # more is sent there (though the PACS is back), its waiting row stays.
        for assoc in second.server.active_associations:  # the sender's idle association
            assoc.abort()
        second.close()
        pacs_servers.remove(second)
        three = write_series(tmp_path / "three", 1)
        assert send_files(dicom.dicom_port, three) == [status.SUCCESS]  # type: ignore[arg-type]
        code, _ = browser.submit("/admin/destinations", "/admin/destinations/added/delete", {})
        assert code == 200
        wait_for(lambda: added(dicom) is None, timeout=10)
        back = FakePacs(ae_title="WEBPACS", port=second.port)
        pacs_servers.append(back)
        four = write_series(tmp_path / "four", 1)
        assert send_files(dicom.dicom_port, four) == [status.SUCCESS]  # type: ignore[arg-type]
        wait_for(lambda: set(uids(four)) <= set(filed.stored_uids()), timeout=10)
        store = dicom.runtime.store  # type: ignore[union-attr]
        rows = store.query("SELECT state FROM forward_queue WHERE destination = 'added'")
        assert [r["state"] for r in rows].count(queue.WAITING) == 1  # "three"; none for "four"
        assert back.received == []
        page = browser.get("/admin/destinations")
        assert "destination removed" in page.split('id="dest-added"')[1].split("</tr>")[0]

        # Added again under the same name: the waiting row is sent.
        code, _ = browser.submit("/admin/destinations/new", "/admin/destinations/new",
                                 {**form, "port": str(back.port)})  # fmt: skip
        assert code == 200
        wait_for(lambda: back.stored_uids() == uids(three), timeout=10)
    finally:
        for app in reversed(started):
            app.stop()

    # A restart keeps the web's entry and seeds the file's again (here: a new one).
    other = FakePacs(ae_title="OTHER")
    pacs_servers.append(other)
    raw = forward_config([pacs_destination("other", "OTHER", other.port)])
    app = Appliance(make_config(tmp_path / "data", raw)).start()
    try:
        assert [d.name for d in app.runtime.destinations.current()] == ["other", "added"]  # type: ignore[union-attr]
        assert set(forward(app).senders) == {"other", "added"}
        five = write_series(tmp_path / "five", 1)
        assert send_files(app.dicom_port, five) == [status.SUCCESS]  # type: ignore[arg-type]
        wait_for(lambda: other.stored_uids() == uids(five), timeout=10)
        wait_for(lambda: back.stored_uids() == uids(three) + uids(five), timeout=10)
    finally:
        app.stop()
