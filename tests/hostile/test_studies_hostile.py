"""Hostile requests to the Studies page (web/studies.py) over real sockets: strangers,
missing CSRF tokens, bad UIDs, unknown destinations and devices, bad search fields, an
open redirect through ``back``. Nothing is queued by any of them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from appliance import accounts
from appliance.server import Appliance
from tests.forward_factories import make_ct
from tests.forward_helpers import MODALITY, send_files
from tests.webclient import PASSWORD, SocketClient, csrf_of

NOT_HELD = "1.2.3.4.5.6.7.8.9"


@pytest.fixture
def box(start_appliance: Callable[..., Appliance], tmp_path: Path) -> tuple[Appliance, str]:
    """A box holding one study, a destination, a device with host and port and one without."""
    app = start_appliance({
        "devices": [{"ae_title": MODALITY}, {"ae_title": "WS", "host": "127.0.0.1", "port": 9},
                    {"ae_title": "NOHOST"}],
        "destinations": [{"name": "PACS", "ae_title": "PACS", "host": "127.0.0.1", "port": 9,
                          "from_ae": ["NOBODY"]}],
        "forward": {"reserve_mb": 0},
    })  # fmt: skip
    ds = make_ct(seed=1)
    path = tmp_path / "one.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert send_files(app.dicom_port, [path], calling=MODALITY) == [0]
    store = app.runtime.store  # type: ignore[union-attr]
    accounts.create_user(store, "admin", PASSWORD, accounts.ADMIN)
    accounts.create_user(store, "desk", PASSWORD, accounts.FRONT_DESK)
    return app, str(ds.StudyInstanceUID)


def queued(app: Appliance) -> int:
    store = app.runtime.store  # type: ignore[union-attr]
    return int(store.query("SELECT COUNT(*) AS n FROM forward_queue")[0]["n"])


def desk(app: Appliance) -> tuple[SocketClient, str]:
    client = SocketClient(app.web_port)
    assert client.sign_in("desk").status == 302
    return client, csrf_of(client.get("/studies").text)


def test_strangers_see_nothing_and_send_nothing(box: tuple[Appliance, str]) -> None:
    app, study = box
    stranger = SocketClient(app.web_port, source="127.0.0.2")
    for path in ("/studies", f"/studies/{study}/thumbnail.png"):
        r = stranger.get(path)
        assert r.status == 302 and "/login" in r.headers["Location"], path
    token = csrf_of(stranger.get("/login").text)
    r = stranger.post(f"/studies/{study}/send", {"csrf_token": token, "to": "PACS"})
    assert r.status == 302 and "/login" in r.headers["Location"]
    assert queued(app) == 0


def test_a_send_without_the_csrf_token_is_refused(box: tuple[Appliance, str]) -> None:
    app, study = box
    client, _ = desk(app)
    for form in ({"to": "PACS"}, {"to": "PACS", "csrf_token": "forged"}):
        assert client.post(f"/studies/{study}/send", form).status == 400
    assert queued(app) == 0


@pytest.mark.parametrize(
    ("uid", "to", "code", "field"),
    [
        ("1.2.x", "PACS", 400, "study"),
        ("1." + "2" * 70, "PACS", 400, "study"),
        ("1..2", "PACS", 400, "study"),
        (None, "NOPE", 400, "to"),
        (None, "", 400, "to"),
        (None, "device:NOHOST", 400, "to"),  # a device without host and port
        (None, "device:UNKNOWN", 400, "to"),
        (None, "device:", 400, "to"),
        (NOT_HELD, "PACS", 404, "study"),
    ],
)
def test_bad_sends_name_the_field(
    box: tuple[Appliance, str], uid: str | None, to: str, code: int, field: str
) -> None:
    app, study = box
    client, token = desk(app)
    r = client.post(f"/studies/{uid or study}/send", {"csrf_token": token, "to": to})
    assert r.status == code and f"{field}: " in r.text, r.text[-500:]
    assert queued(app) == 0


def test_bad_thumbnail_uids(box: tuple[Appliance, str]) -> None:
    app, _ = box
    client, _ = desk(app)
    r = client.get("/studies/1.2.x/thumbnail.png")
    assert r.status == 400 and "study: " in r.text
    r = client.get(f"/studies/{NOT_HELD}/thumbnail.png")
    assert r.status == 404 and "study: " in r.text


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("date=2026-13-45", "date"),
        ("date=yesterday", "date"),
        ("modality=C%20T", "modality"),
        ("modality=%3Cscript%3E", "modality"),
        ("name=" + "x" * 65, "name"),
        ("patient_id=" + "1" * 65, "patient_id"),
        ("size=0", "size"),
        ("size=99999999", "size"),
        ("after=not-a-cursor%21", "after"),
    ],
)
def test_bad_search_fields_get_400_naming_them(
    box: tuple[Appliance, str], query: str, field: str
) -> None:
    app, _ = box
    client, _ = desk(app)
    r = client.get(f"/studies?{query}")
    assert r.status == 400 and f'id="error-{field}"' in r.text, r.text[-800:]
    assert "<script>" not in r.text


def test_the_front_desk_may_send_and_back_never_leaves_the_box(box: tuple[Appliance, str]) -> None:
    app, study = box
    client, token = desk(app)
    for back in ("//evil.example/x", "https://evil.example/", "/admin/users"):
        r = client.post(f"/studies/{study}/send", {"csrf_token": token, "to": "device:WS",
                                                   "back": back})  # fmt: skip
        assert r.status == 302 and r.headers["Location"].endswith("/studies"), back
    store = app.runtime.store  # type: ignore[union-attr]
    rows = store.query("SELECT destination, state FROM forward_queue")
    assert rows == [{"destination": "device:WS", "state": "waiting"}]
    [audit] = store.query(
        "SELECT actor, detail FROM audit WHERE action = 'forward-send' ORDER BY id LIMIT 1"
    )
    assert audit == {"actor": "desk", "detail": "to device:WS: 1 of 1 instances queued"}
