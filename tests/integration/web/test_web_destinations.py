"""Adding, editing and removing PACS destinations on the web page (pushed live)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from appliance import accounts, destinations
from appliance.app import open_store, web_app
from appliance.config import DestinationSettings
from appliance.forward import queue
from appliance.runtime import Runtime
from tests.helpers import make_config
from tests.webclient import Web, field_errors, post
from web import start

CT = "1.2.840.10008.5.1.4.1.1.2"
NEARBY = {
    "name": "nearby",
    "ae_title": "NEARPACS",
    "host": "10.0.0.50",
    "port": "11112",
    "from_ae": "CT1, MR 1",
    "modalities": "ct, MR",
    "sop_classes": CT,
    "commitment": "delivery",
}


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    """The web app with one destination from the file ("main") and an admin."""
    cfg = make_config(
        tmp_path / "data",
        {"destinations": [{"name": "main", "ae_title": "MAINPACS", "host": "127.0.0.1",
                           "port": 104}]},
    )  # fmt: skip
    store = open_store(cfg.data_dir)
    app = start(web_app(Runtime.create(cfg, store).sync(), test_config={"TESTING": True},
                           announce=print))  # fmt: skip
    w = Web(app, store, app.extensions["appliance"])
    w.user("admin", accounts.ADMIN)
    yield w
    store.close()


@pytest.fixture
def admin(web: Web) -> FlaskClient:
    return web.login("admin")


def live_names(web: Web) -> list[str]:
    return [d.name for d in web.runtime.destinations.current()]


def test_file_destinations_are_read_only(web: Web, admin: FlaskClient) -> None:
    page = admin.get("/admin/destinations").text
    route = page.split('id="route-main"')[1].split("</tr>")[0]
    assert "configuration file" in route and "MAINPACS @ 127.0.0.1:104" in route
    assert "/admin/destinations/main/edit" not in page and 'id="new-destination"' in page
    assert admin.get("/admin/destinations/main/edit").status_code == 404
    resp = post(admin, "/admin/destinations/main/edit", {**NEARBY, "name": "main"})
    assert resp.status_code == 400 and "name" in field_errors(resp.text)
    assert post(admin, "/admin/destinations/main/delete").status_code == 302
    assert live_names(web) == ["main"]
    assert web.store.query("SELECT port FROM destinations WHERE name = 'main'")[0]["port"] == 104


def test_add_destination_is_live_and_audited(web: Web, admin: FlaskClient) -> None:
    told: list[int] = []
    web.runtime.destinations.subscribe(lambda: told.append(1))
    assert admin.get("/admin/destinations/new").status_code == 200
    resp = post(admin, "/admin/destinations/new", NEARBY)
    assert resp.status_code == 302 and resp.location.endswith("/admin/destinations")
    assert told and live_names(web) == ["main", "nearby"]
    live = web.runtime.destinations.get("nearby")
    assert live is not None
    assert (live.ae_title, live.host, live.port) == ("NEARPACS", "10.0.0.50", 11112)
    assert live.from_ae == ("CT1", "MR 1") and live.modalities == ("CT", "MR")
    assert live.sop_classes == (CT,) and live.commitment == "delivery"
    [row] = web.store.query("SELECT managed_by FROM destinations WHERE name = 'nearby'")
    assert row["managed_by"] == "web"
    assert web.count("audit", "action = 'destination-add' AND actor = 'admin'") == 1
    page = admin.get("/admin/destinations").text
    route = page.split('id="route-nearby"')[1].split("</tr>")[0]
    assert "/admin/destinations/nearby/edit" in route and "CT1, MR 1" in route
    assert 'value="CT1, MR 1"' in admin.get("/admin/destinations/nearby/edit").text


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "two words"}, "name"),
        ({"name": "main"}, "name"),  # taken by the file's
        ({"ae_title": ""}, "ae_title"),
        ({"ae_title": "X" * 17}, "ae_title"),
        ({"host": ""}, "host"),
        ({"host": "not a host!"}, "host"),
        ({"port": "0"}, "port"),
        ({"port": "70000"}, "port"),
        ({"port": "abc"}, "port"),
        ({"from_ae": "CT1, A\\B"}, "from_ae"),
        ({"modalities": "C-T"}, "modalities"),
        ({"sop_classes": "1.2.x"}, "sop_classes"),
        ({"commitment": "maybe"}, "commitment"),
    ],
)
def test_bad_destination_input_names_the_field(
    web: Web, admin: FlaskClient, over: dict, field: str
) -> None:
    resp = post(admin, "/admin/destinations/new", {**NEARBY, **over})
    assert resp.status_code == 400
    assert field_errors(resp.text) == {field}
    assert web.count("destinations") == 1 and live_names(web) == ["main"]


def test_bad_input_is_explained_in_japanese(web: Web) -> None:
    c = web.login("admin", **{"Accept-Language": "ja"})
    assert "新しい送信先" in c.get("/admin/destinations").text
    resp = post(c, "/admin/destinations/new", {**NEARBY, "port": "70000"})
    assert resp.status_code == 400 and "70000 はポート番号 (1-65535) ではありません" in resp.text


def test_edit_rename_and_remove_keep_the_queue_rows(web: Web, admin: FlaskClient) -> None:
    post(admin, "/admin/destinations/new", NEARBY)
    resp = post(admin, "/admin/destinations/nearby/edit", {**NEARBY, "port": "2104"})
    assert resp.status_code == 302
    assert web.runtime.destinations.get("nearby").port == 2104  # type: ignore[union-attr]
    info = queue.InstanceInfo("1.2.3", CT, "1.2.840.10008.1.2.1", "CT", "CT1")
    queue.record_instance(web.store, info, "f1", "d1", 1, ["nearby"], now=time.time())
    resp = post(admin, "/admin/destinations/nearby/edit", {**NEARBY, "name": "near2"})
    assert resp.status_code == 302 and live_names(web) == ["main", "near2"]
    assert post(admin, "/admin/destinations/near2/delete").status_code == 302
    assert live_names(web) == ["main"] and web.count("destinations") == 1
    assert web.count("forward_queue", "destination = 'nearby' AND state = 'waiting'") == 1
    row = admin.get("/admin/destinations").text.split('id="dest-nearby"')[1].split("</tr>")[0]
    assert "destination removed" in row
    assert admin.get("/admin/destinations/nearby/waiting").status_code == 200
    actions = {r["action"] for r in web.store.query("SELECT action FROM audit")}
    assert {"destination-add", "destination-change", "destination-delete"} <= actions


def test_unknown_destination_is_404(web: Web, admin: FlaskClient) -> None:
    assert admin.get("/admin/destinations/nope/edit").status_code == 404
    assert post(admin, "/admin/destinations/nope/edit", NEARBY).status_code == 404
    assert post(admin, "/admin/destinations/nope/delete").status_code == 404


def test_only_admins_edit_destinations(web: Web) -> None:
    desk = web.login("desk")
    assert desk.get("/admin/destinations/new").status_code == 403
    assert post(desk, "/admin/destinations/new", NEARBY).status_code == 403
    assert web.count("destinations") == 1


def test_destination_forms_need_the_csrf_token(web: Web, admin: FlaskClient) -> None:
    post(admin, "/admin/destinations/new", NEARBY)
    assert admin.post("/admin/destinations/new", data={**NEARBY, "name": "x"}).status_code == 400
    assert admin.post("/admin/destinations/nearby/delete").status_code == 400
    assert live_names(web) == ["main", "nearby"] and web.count("destinations") == 2


def test_other_process_edit_reaches_the_live_list(web: Web) -> None:
    """Like ``serve --only web``: a change written by another process's store is seen
    through the version counter within REFRESH_S."""
    other = open_store(web.runtime.config.data_dir)
    try:
        dest = destinations.validate(DestinationSettings(
            name="far", ae_title="FAR", host="127.0.0.1", port=11112))  # fmt: skip
        destinations.save(other, dest)
    finally:
        other.close()
    web.runtime.destinations.refresh(force=True)
    assert live_names(web) == ["main", "far"]


# -- the JSON API ---------------------------------------------------------------------


def bearer(web: Web, role: str, name: str) -> FlaskClient:
    token = accounts.create_token(web.store, web.user(name, role), "test")
    return web.client(Authorization=f"Bearer {token}")


def test_api_adds_changes_and_removes_destinations(web: Web) -> None:
    root, ris = bearer(web, accounts.ADMIN, "robot"), bearer(web, accounts.FRONT_DESK, "ris")
    body = {"name": "api", "ae_title": "APIPACS", "host": "127.0.0.1", "port": 11112,
            "modalities": ["CT"], "commitment": "delivery"}  # fmt: skip
    assert ris.get("/api/v1/destinations").status_code == 403
    assert ris.post("/api/v1/destinations", json=body).status_code == 403
    resp = root.post("/api/v1/destinations", json=body)
    assert resp.status_code == 201 and resp.json["managed_by"] == "web"
    assert resp.json["modalities"] == ["CT"] and live_names(web) == ["main", "api"]
    listed = root.get("/api/v1/destinations").json["destinations"]
    assert [(d["name"], d["managed_by"]) for d in listed] == [("main", "config"), ("api", "web")]
    resp = root.put("/api/v1/destinations/api", json={**body, "port": 2104})
    assert resp.status_code == 200 and root.get("/api/v1/destinations/api").json["port"] == 2104
    assert web.runtime.destinations.get("api").port == 2104  # type: ignore[union-attr]
    assert root.put("/api/v1/destinations/main", json=body).json["field"] == "name"
    assert root.delete("/api/v1/destinations/main").json["field"] == "name"
    assert root.delete("/api/v1/destinations/api").status_code == 204
    assert root.delete("/api/v1/destinations/api").status_code == 404
    assert root.get("/api/v1/destinations/api").status_code == 404
    assert live_names(web) == ["main"]


@pytest.mark.parametrize(
    ("over", "field"),
    [({"port": True}, "port"), ({"port": 0}, "port"), ({"name": "a b"}, "name"),
     ({"sop_classes": ["x"]}, "sop_classes"), ({"host": ""}, "host")],
)  # fmt: skip
def test_api_bad_destination_is_400_naming_the_field(web: Web, over: dict, field: str) -> None:
    body = {"name": "api", "ae_title": "APIPACS", "host": "127.0.0.1", "port": 104, **over}
    resp = bearer(web, accounts.ADMIN, "robot").post("/api/v1/destinations", json=body)
    assert resp.status_code == 400 and resp.json["field"] == field
    assert web.count("destinations") == 1


def test_destination_form_sends_over_tls(web: Web, admin: FlaskClient, tmp_path: Path) -> None:
    ca = tmp_path / "pacs-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")  # only its existence is checked here
    assert 'name="tls"' in admin.get("/admin/destinations/new").text
    missing = post(admin, "/admin/destinations/new", {**NEARBY, "tls": "1", "tls_ca": "/nope.pem"})
    assert missing.status_code == 400 and field_errors(missing.text) == {"tls_ca"}
    resp = post(admin, "/admin/destinations/new", {**NEARBY, "tls": "1", "tls_ca": str(ca)})
    assert resp.status_code == 302
    saved = next(d for d in destinations.load(web.store) if d.name == "nearby")
    assert saved.tls is True and saved.tls_ca == str(ca)
    page = admin.get("/admin/destinations/nearby/edit").text
    assert str(ca) in page and 'id="tls" name="tls" value="1" checked' in page
