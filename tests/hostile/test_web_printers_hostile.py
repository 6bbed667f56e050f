"""Hostile clients of the Printers page over real sockets: no sign-in, the front desk, a
foreign form without the CSRF token, names and addresses built to break out, and a burst
of test pages. Each case is bounded (a few requests, a 10 s socket timeout)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from appliance import accounts
from appliance.server import Appliance
from tests.webclient import PASSWORD, SocketClient, csrf_of


@pytest.fixture
def box(start_appliance: Callable[..., Appliance], tmp_path: Path) -> Appliance:
    app = start_appliance({"printers": [{"name": "ward", "uri": f"folder:{tmp_path / 'ward'}"}]})
    assert app.runtime is not None
    accounts.create_user(app.runtime.store, "admin", PASSWORD, accounts.ADMIN)
    accounts.create_user(app.runtime.store, "desk", PASSWORD, accounts.FRONT_DESK)
    return app


def _signed_in(box: Appliance, user: str) -> tuple[SocketClient, str]:
    client = SocketClient(box.web_port)
    assert client.sign_in(user).status == 302
    return client, csrf_of(client.get("/printers").text)


def _web_printers(box: Appliance) -> int:
    assert box.runtime is not None
    return int(box.runtime.store.query(
        "SELECT count(*) AS n FROM printers WHERE managed_by = 'web'")[0]["n"])  # fmt: skip


def test_strangers_desk_and_foreign_forms_change_nothing(box: Appliance) -> None:
    stranger = SocketClient(box.web_port, source="127.0.0.2")
    form = {"name": "evil", "uri": "folder:/tmp/evil"}
    for path in ("/printers/new", "/printers/ward/test", "/printers/ward/delete"):
        assert stranger.post(path, form).status in (302, 400, 403)
    desk, token = _signed_in(box, "desk")
    for path in ("/printers/new", "/printers/ward/test", "/printers/ward/delete"):
        assert desk.post(path, {**form, "csrf_token": token}).status == 403
    admin, _token = _signed_in(box, "admin")
    assert admin.post("/printers/new", form).status == 400  # no CSRF token: a foreign form
    assert _web_printers(box) == 0


@pytest.mark.parametrize(
    "name,uri,field",
    [
        ("../../etc", "folder:x", "name"),
        ("<script>", "folder:x", "name"),
        ("n" * 5000, "folder:x", "name"),
        ("p1", "ipp://h/\r\nX-Injected: 1", "uri"),
        ("p1", "ipp://" + "h" * 5000, "uri"),
        ("p1", "file:///etc/passwd", "uri"),
        ("p1", "folder:", "uri"),
    ],
)
def test_bad_names_and_addresses_are_400_naming_the_field(
    box: Appliance, name: str, uri: str, field: str
) -> None:
    admin, token = _signed_in(box, "admin")
    resp = admin.post("/printers/new", {"csrf_token": token, "name": name, "uri": uri})
    assert resp.status == 400
    assert f'id="error-{field}"' in resp.text
    assert "<script>" not in resp.text.split("<main", 1)[1]  # shown escaped, if at all
    assert _web_printers(box) == 0


def test_odd_paths_are_404(box: Appliance) -> None:
    admin, token = _signed_in(box, "admin")
    for path in ("/printers/..%2F..%2Fetc/test", "/printers/%00/delete", "/printers/x/edit"):
        status = admin.post(path, {"csrf_token": token}).status if "edit" not in path else (
            admin.get(path).status)  # fmt: skip
        assert status == 404, path
    for png in ("/printers/test/..%2F..%2Fappliance.sqlite.png", "/printers/test/1" + "1" * 80 + ".png",
                "/printers/test/%2Fetc%2Fpasswd.png"):  # fmt: skip
        assert admin.get(png).status == 404, png


def test_a_burst_of_test_pages_keeps_only_the_last_few(box: Appliance, tmp_path: Path) -> None:
    admin, token = _signed_in(box, "admin")
    for _ in range(8):
        assert admin.post("/printers/ward/test", {"csrf_token": token}).status == 302
    assert box.runtime is not None
    kept = [d for d in (Path(box.runtime.config.data_dir) / "prints" / "test").iterdir()]
    assert len(kept) == 5  # testpage.KEEP
    assert len(list((tmp_path / "ward").glob("*.pdf"))) == 8
