"""Images acknowledged while no destination takes them are kept, listed ("unrouted" on
the queue page, /healthz and `forward status`) and can be sent to a destination later."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from appliance import accounts, status
from appliance.forward import queue
from appliance.server import Appliance
from tests.forward_factories import write_series
from tests.forward_helpers import FakePacs, forward_config, pacs_destination, send_files
from tests.helpers import wait_for
from tests.webclient import PASSWORD, SocketClient, csrf_of


def _admin(app: Appliance) -> SocketClient:
    accounts.create_user(app.runtime.store, "admin", PASSWORD, accounts.ADMIN)
    client = SocketClient(app.web_port)
    assert client.sign_in("admin").status in (302, 303)
    return client


def _forward_status(app: Appliance) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "appliance", "forward", "status", "--data-dir", str(app.config.data_dir)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_images_with_no_destination_are_kept_and_shown(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    app = start_appliance(forward_config([]))
    assert send_files(app.dicom_port, write_series(tmp_path / "in", 3)) == [status.SUCCESS] * 3
    assert queue.unrouted_count(app.runtime.store) == 3
    page = _admin(app).get("/admin/destinations").text
    assert 'id="no-destination"' in page  # said in red: nothing will be sent
    assert "Unrouted images (3)" in page
    assert page.count('<tr id="unrouted-') == 3
    assert app.health()["services"]["forward"]["unrouted"] == 3
    text = _forward_status(app)
    assert "no destination is configured" in text and "unrouted: 3" in text


def test_unrouted_images_are_sent_when_routed_later(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    pacs = fake_pacs()
    # A destination whose rule takes none of them: they arrive unrouted.
    dest = pacs_destination("pacs", pacs.ae_title, pacs.port, from_ae=["SOMEONE"])
    app = start_appliance(forward_config([dest]))
    paths = write_series(tmp_path / "in", 4)
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 4
    assert queue.unrouted_count(app.runtime.store) == 4
    client = _admin(app)
    token = csrf_of(client.get("/admin/destinations").text)
    bad = client.post(
        "/admin/destinations/unrouted/route", {"csrf_token": token, "destination": "nowhere"}
    )
    assert bad.status == 400 and "destination" in bad.text
    ok = client.post(
        "/admin/destinations/unrouted/route", {"csrf_token": token, "destination": "pacs"}
    )
    assert ok.status in (302, 303)
    wait_for(lambda: len(pacs.stored_uids()) == 4, timeout=15)
    assert queue.unrouted_count(app.runtime.store) == 0
    [entry] = app.runtime.store.query("SELECT * FROM audit WHERE action = 'forward-route'")
    assert entry["detail"] == "4 unrouted images"
