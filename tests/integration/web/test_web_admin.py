"""Admin pages: devices (pushed live to the DICOM side), users and tokens, catalog, audit."""

from __future__ import annotations

import io
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask.testing import FlaskClient

from appliance import accounts, audit, catalog, paging
from tests.webclient import PASSWORD, Web, field_errors, pager, post, walk

CT2 = {
    "ae_title": "CT2",
    "role": "modality",
    "modality": "CT",
    "description": "CT room 2",
    "host": "10.0.0.22",
    "port": "104",
    "station_filter": "calling-ae",
    "character_set": "ISO 2022 IR 87",
    "max_results": "50",
    "hide_completed": "1",
}


# -- devices -------------------------------------------------------------------------


def test_devices_page_lists_config_devices_read_only(web: Web, admin: FlaskClient) -> None:
    page = admin.get("/admin/devices").text
    assert 'id="device-CT1"' in page and "configuration file" in page
    assert "/admin/devices/CT1" not in page  # no edit link for file-managed devices


def test_add_device_is_live_for_dicom(web: Web, admin: FlaskClient) -> None:
    assert web.runtime.access.device("CT2") is None
    assert admin.get("/admin/devices/new").status_code == 200
    resp = post(admin, "/admin/devices/new", CT2)
    assert resp.status_code == 302
    row = web.store.query("SELECT * FROM devices WHERE ae_title = 'CT2'")[0]
    assert row["managed_by"] == "web" and row["port"] == 104 and row["max_results"] == 50
    live = web.runtime.access.device("CT2")
    assert live is not None and live.character_set == "ISO 2022 IR 87"
    assert live.station_filter == "calling-ae" and live.hide_completed is True
    assert web.count("audit", "action = 'device-add' AND actor = 'admin'") == 1


@pytest.mark.parametrize(
    "over,field",
    [
        ({"ae_title": ""}, "ae_title"),
        ({"ae_title": "X" * 17}, "ae_title"),
        ({"ae_title": "CT1"}, "ae_title"),  # taken
        ({"ae_title": "A\\B"}, "ae_title"),
        ({"port": "70000"}, "port"),
        ({"port": "abc"}, "port"),
        ({"host": "not a host!"}, "host"),
        ({"role": "boss"}, "role"),
        ({"station_filter": "sometimes"}, "station_filter"),
        ({"character_set": "EBCDIC"}, "character_set"),
        ({"max_results": "-1"}, "max_results"),
        ({"modality": "C T"}, "modality"),
        ({"description": "x" * 65}, "description"),
        ({"tls_fingerprint": "sha256:1234"}, "tls_fingerprint"),
    ],
)
def test_bad_device_input(web: Web, admin: FlaskClient, over: dict, field: str) -> None:
    resp = post(admin, "/admin/devices/new", {**CT2, **over})
    assert resp.status_code == 400
    assert field in field_errors(resp.text)
    assert web.count("devices") == 3
    assert web.runtime.access.device("CT2") is None


def test_device_form_pins_a_client_certificate(web: Web, admin: FlaskClient) -> None:
    """The colon form a certificate viewer shows is kept as 'sha256:' and hex."""
    shown = ":".join(["AB"] * 32)
    assert 'name="tls_fingerprint"' in admin.get("/admin/devices/new").text
    resp = post(admin, "/admin/devices/new", {**CT2, "tls_fingerprint": shown})
    assert resp.status_code == 302
    live = web.runtime.access.device("CT2")
    assert live is not None and live.tls_fingerprint == "sha256:" + "ab" * 32
    assert "sha256:" + "ab" * 32 in admin.get("/admin/devices/CT2").text


def test_edit_rename_and_delete_device(web: Web, admin: FlaskClient) -> None:
    post(admin, "/admin/devices/new", CT2)
    assert 'value="CT room 2"' in admin.get("/admin/devices/CT2").text
    resp = post(admin, "/admin/devices/CT2", {**CT2, "ae_title": "CT3", "character_set": ""})
    assert resp.status_code == 302
    assert web.runtime.access.device("CT2") is None
    assert web.runtime.access.device("CT3").character_set == ""
    assert post(admin, "/admin/devices/CT3/delete").status_code == 302
    assert web.runtime.access.device("CT3") is None and web.count("devices") == 3


def test_config_devices_cannot_be_changed_in_the_web(web: Web, admin: FlaskClient) -> None:
    resp = post(admin, "/admin/devices/CT1", {**CT2, "ae_title": "CT1"})
    assert resp.status_code == 400 and "ae_title" in field_errors(resp.text)
    post(admin, "/admin/devices/CT1/delete")
    assert web.runtime.access.device("CT1") is not None and web.count("devices") == 3


def test_unknown_device_is_404(web: Web, admin: FlaskClient) -> None:
    assert admin.get("/admin/devices/NOPE").status_code == 404
    assert post(admin, "/admin/devices/NOPE", CT2).status_code == 404
    assert post(admin, "/admin/devices/NOPE/delete").status_code == 404


@pytest.mark.parametrize(
    "url", ["/admin/devices/new", "/admin/destinations/new", "/admin/catalog", "/steps/new"]
)
def test_forms_never_cut_what_is_typed(admin: FlaskClient, url: str) -> None:
    """No maxlength: a browser silently cuts "CT-ROOM-ONE-TOO-LONG" to 16 characters;
    the server refuses it instead, naming the field (test_bad_device_input)."""
    page = admin.get(url)
    assert page.status_code == 200
    assert "maxlength" not in page.text


# -- users and tokens -------------------------------------------------------------------


def test_add_user(web: Web, admin: FlaskClient) -> None:
    resp = post(
        admin,
        "/admin/users",
        {
            "username": "hanako",
            "role": "frontdesk",
            "language": "ja",
            "password": PASSWORD,
            "password2": PASSWORD,
        },
    )
    assert resp.status_code == 302
    user = accounts.find_user(web.store, "hanako")
    assert user.role == "frontdesk" and user.language == "ja"
    assert "hanako" in admin.get("/admin/users").text


@pytest.mark.parametrize(
    "over,field",
    [
        ({"username": ""}, "username"),
        ({"username": "ha nako"}, "username"),
        ({"username": "admin"}, "username"),
        ({"username": "ADMIN"}, "username"),
        ({"password": "short", "password2": "short"}, "password"),
        ({"password2": "different password"}, "password2"),
        ({"role": "root"}, "role"),
    ],
)
def test_bad_user_input(web: Web, admin: FlaskClient, over: dict, field: str) -> None:
    data = {
        "username": "hanako",
        "role": "frontdesk",
        "password": PASSWORD,
        "password2": PASSWORD,
        **over,
    }
    resp = post(admin, "/admin/users", data)
    assert resp.status_code == 400 and field in field_errors(resp.text)
    assert web.count("users") == 1


def test_change_user_role_password_and_deactivate(web: Web, admin: FlaskClient) -> None:
    pk = web.user("desk")
    desk = web.login("desk")
    resp = post(
        admin,
        f"/admin/users/{pk}",
        {"role": "admin", "language": "en", "active": "1", "password": "brand new password"},
    )
    assert resp.status_code == 302
    assert accounts.get_user(web.store, pk).is_admin
    assert accounts.authenticate(web.store, "desk", "brand new password") is not None
    assert desk.get("/").status_code == 302  # role and password changed: session ended
    post(admin, f"/admin/users/{pk}", {"role": "frontdesk", "language": "", "active": "0"})
    assert accounts.authenticate(web.store, "desk", "brand new password") is None


def test_last_admin_cannot_be_removed(web: Web, admin: FlaskClient) -> None:
    pk = accounts.find_user(web.store, "admin").pk
    resp = post(admin, f"/admin/users/{pk}", {"role": "frontdesk", "language": "", "active": "1"})
    assert resp.status_code == 400 and f"user{pk}.active" in field_errors(resp.text)
    resp = post(admin, f"/admin/users/{pk}", {"role": "admin", "language": "", "active": "0"})
    assert resp.status_code == 400
    assert accounts.get_user(web.store, pk).is_admin and accounts.get_user(web.store, pk).active


def test_bad_user_change_input(web: Web, admin: FlaskClient) -> None:
    pk = web.user("desk")
    resp = post(
        admin,
        f"/admin/users/{pk}",
        {"role": "frontdesk", "language": "", "active": "1", "password": "short"},
    )
    assert resp.status_code == 400 and f"user{pk}.password" in field_errors(resp.text)
    assert post(admin, "/admin/users/999", {"role": "frontdesk", "active": "1"}).status_code == 404


def test_api_token_shown_once_then_works_then_revoked(web: Web, admin: FlaskClient) -> None:
    pk = web.user("ris")
    resp = post(admin, f"/admin/users/{pk}/tokens", {"token_name": "RIS bridge"})
    assert resp.status_code == 200
    token = resp.text.split('<code id="new-token">')[1].split("<")[0]
    assert token.startswith("apl_")
    assert token not in admin.get("/admin/users").text
    assert web.store.query("SELECT token_sha256 FROM api_tokens")[0]["token_sha256"] != token
    api = web.client(Authorization=f"Bearer {token}")
    assert api.get("/api/v1/devices").status_code == 200
    tpk = web.store.query("SELECT pk FROM api_tokens")[0]["pk"]
    assert post(admin, f"/admin/tokens/{tpk}/revoke").status_code == 302
    assert api.get("/api/v1/devices").status_code == 401


def test_token_needs_a_name(web: Web, admin: FlaskClient) -> None:
    pk = web.user("ris")
    resp = post(admin, f"/admin/users/{pk}/tokens", {"token_name": ""})
    assert resp.status_code == 400 and f"user{pk}.token_name" in field_errors(resp.text)
    assert web.count("api_tokens") == 0
    assert post(admin, "/admin/users/999/tokens", {"token_name": "x"}).status_code == 404
    assert post(admin, "/admin/tokens/999/revoke").status_code == 404


# -- catalog --------------------------------------------------------------------------

ENTRY = {
    "code_value": "USABD",
    "scheme": "LOCAL",
    "meaning": "US Abdomen",
    "modality": "us",
    "protocol_value": "",
    "protocol_scheme": "",
    "protocol_meaning": "",
}


def test_catalog_form_defaults_add_an_entry_without_protocol(web: Web, admin: FlaskClient) -> None:
    page = admin.get("/admin/catalog").text
    assert 'name="protocol_scheme" type="text" value="LOCAL"' in page
    data = {**ENTRY, "scheme": "LOCAL", "protocol_scheme": "LOCAL"}
    assert post(admin, "/admin/catalog", data).status_code == 302
    entry = catalog.get(web.store, "USABD")
    assert entry.protocol is None and entry.protocol_scheme == ""


def test_catalog_add_edit_delete(web: Web, admin: FlaskClient) -> None:
    assert post(admin, "/admin/catalog", ENTRY).status_code == 302
    assert catalog.get(web.store, "USABD").modality == "US"
    assert 'value="US Abdomen"' in admin.get("/admin/catalog?edit=USABD").text
    resp = post(
        admin,
        "/admin/catalog",
        {**ENTRY, "original": "USABD", "code_value": "USABD2", "meaning": "US Abdomen full"},
    )
    assert resp.status_code == 302
    assert catalog.get(web.store, "USABD2").meaning == "US Abdomen full"
    assert web.count("catalog", "code_value = 'USABD'") == 0
    assert post(admin, "/admin/catalog/USABD2/delete").status_code == 302
    assert web.count("catalog") == 2
    assert admin.get("/admin/catalog?edit=NOPE").status_code == 404
    assert post(admin, "/admin/catalog/NOPE/delete").status_code == 404


@pytest.mark.parametrize(
    "over,field",
    [
        ({"code_value": ""}, "code_value"),
        ({"code_value": "X" * 17}, "code_value"),
        ({"code_value": "CTHEAD"}, "code_value"),  # taken
        ({"scheme": ""}, "scheme"),
        ({"meaning": ""}, "meaning"),
        ({"meaning": "x" * 65}, "meaning"),
        ({"modality": "U S"}, "modality"),
        ({"protocol_value": "P1"}, "protocol_scheme"),
    ],
)
def test_bad_catalog_input(web: Web, admin: FlaskClient, over: dict, field: str) -> None:
    resp = post(admin, "/admin/catalog", {**ENTRY, **over})
    assert resp.status_code == 400 and field in field_errors(resp.text)
    assert web.count("catalog") == 2


def upload(client: FlaskClient, text: str) -> Any:
    return post(
        client,
        "/admin/catalog/import",
        {"file": (io.BytesIO(text.encode()), "catalog.csv")},
        content_type="multipart/form-data",
    )


def test_catalog_csv_import_and_export(web: Web, admin: FlaskClient) -> None:
    text = (
        "code_value,scheme,meaning,modality,protocol_value,protocol_scheme,protocol_meaning\n"
        "CTHEAD,LOCAL,CT Head (new),CT,,,\n"
        "XRCHEST,LOCAL,胸部X線,DX,XRC-PA,LOCAL,PA view\n"
    )
    resp = upload(admin, text)
    assert resp.status_code == 302
    assert catalog.get(web.store, "CTHEAD").meaning == "CT Head (new)"
    assert catalog.get(web.store, "XRCHEST").protocol_meaning == "PA view"
    out = admin.get("/admin/catalog.csv")
    assert out.mimetype == "text/csv" and "XRCHEST,LOCAL,胸部X線,DX" in out.text
    assert web.count("audit", "action = 'catalog-import'") == 1


@pytest.mark.parametrize(
    "text,fragment",
    [
        # Each message is a sentence that names the line and the column.
        ("code,meaning\nA,B\n", "The header row must name code_value"),
        ("code_value,scheme,meaning,colour\nA,L,M,red\n", "unknown column, &#39;colour&#39;."),
        ("code_value,scheme,meaning\nOK1,L,Fine\n,L,No code\n", "Line 3: code_value is required."),
        (
            "code_value,scheme,meaning\nDUP,L,One\nDUP,L,Two\n",
            "Line 3: code_value &#39;DUP&#39; appears twice.",
        ),
        ("code_value,scheme,meaning\n", "The file holds no procedures."),
        ("code_value,scheme,meaning\nA,L,M,extra\n", "Line 2: more fields than the header row."),
    ],
)
def test_bad_catalog_csv_imports_nothing(
    web: Web, admin: FlaskClient, text: str, fragment: str
) -> None:
    resp = upload(admin, text)
    assert resp.status_code == 400 and "file" in field_errors(resp.text)
    assert fragment in resp.text
    assert web.count("catalog") == 2


def test_catalog_import_reads_excel_shift_jis(web: Web, admin: FlaskClient) -> None:
    text = "code_value,scheme,meaning,modality\r\nXRCHEST,LOCAL,胸部Ｘ線,DX\r\n"
    data = {"file": (io.BytesIO(text.encode("cp932")), "catalog.csv")}
    resp = post(admin, "/admin/catalog/import", data, content_type="multipart/form-data")
    assert resp.status_code == 302
    assert catalog.get(web.store, "XRCHEST").meaning == "胸部Ｘ線"


def test_catalog_import_needs_a_utf8_file(web: Web, admin: FlaskClient) -> None:
    assert (
        post(admin, "/admin/catalog/import", {}, content_type="multipart/form-data").status_code
        == 400
    )
    resp = post(
        admin,
        "/admin/catalog/import",
        {"file": (io.BytesIO("x,é".encode("latin-1")), "c.csv")},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 400 and "UTF-8 or Shift_JIS" in resp.text


# -- audit --------------------------------------------------------------------------


def test_audit_log_shows_who_did_what(web: Web, admin: FlaskClient) -> None:
    post(admin, "/admin/catalog", ENTRY)
    audit.record_now(web.store, "CT1", "worklist-query", "worklist", "3 items", "dicom 10.0.0.21")
    page = admin.get("/admin/audit").text
    assert "catalog-add" in page and "worklist-query" in page and "3 items" in page
    only = admin.get("/admin/audit?action=worklist-query").text
    table = only[only.index('id="audit"') :]
    assert "worklist-query" in table and "catalog-add" not in table


def _log(web: Web, n: int) -> None:
    """``n`` audit rows in one commit (many in the same millisecond: ties on ``at``);
    every third a "schedule", the others "worklist-query"."""
    with web.store.write() as db:
        for i in range(n):
            action = "schedule" if i % 3 == 0 else "worklist-query"
            audit.record(db, "CT1", action, f"object {i}", f"{i} items", "dicom 10.0.0.21")


def _newest_first(web: Web, action: str = "") -> list[str]:
    where, params = ("WHERE action = ?", (action,)) if action else ("", ())
    rows = web.store.query(f"SELECT id FROM audit {where} ORDER BY at DESC, id DESC", params)
    return [str(r["id"]) for r in rows]


def test_audit_log_pages_through_every_row_once_newest_first(web: Web, admin: FlaskClient) -> None:
    _log(web, 250)
    everything = _newest_first(web)
    total = len(everything)  # and the rows of signing in and setting up
    pages = walk(admin, "/admin/audit", "entry")
    assert [len(p) for p in pages] == [100, 100, total - 200]
    assert sum(pages, []) == everything
    text, links = pager(admin.get("/admin/audit").text)
    assert text == f"1–100 of {total}" and set(links) == {"next", "last"}
    assert pager(admin.get(links["next"]).text)[0] == f"101–200 of {total}"
    last = admin.get(links["last"]).text
    assert pager(last)[0] == f"201–{total} of {total}"  # the page "Next" would reach
    back = walk(admin, pager(last)[1]["previous"], "entry", link="previous")
    assert back == pages[1::-1]


def test_audit_log_links_keep_the_action_and_size(web: Web, admin: FlaskClient) -> None:
    _log(web, 250)
    wanted = _newest_first(web, "schedule")
    url = "/admin/audit?action=schedule&size=40"
    pages = walk(admin, url, "entry")
    assert [len(p) for p in pages] == [40, 40, 4] and sum(pages, []) == wanted
    first = admin.get(url).text
    text, links = pager(first)
    assert text == "1–40 of 84"
    for name in ("next", "last"):
        query = parse_qs(urlsplit(links[name]).query)
        assert query["action"] == ["schedule"] and query["size"] == ["40"]
    assert "<option selected>40</option>" in first and "<option selected>schedule</option>" in first
    assert pager(admin.get("/admin/audit?action=nothing-like-it").text) == ("No rows", {})


def test_audit_row_logged_between_page_loads_neither_shifts_nor_repeats(
    web: Web, admin: FlaskClient
) -> None:
    _log(web, 250)
    everything = _newest_first(web)
    first = admin.get("/admin/audit").text
    assert re.findall(r'id="entry-(\d+)"', first) == everything[:100]
    audit.record_now(web.store, "admin", "device-add", "CT9")  # the newest now
    second = admin.get(pager(first)[1]["next"]).text
    assert re.findall(r'id="entry-(\d+)"', second) == everything[100:200]
    assert pager(second)[0] == f"102–201 of {len(everything) + 1}"


@pytest.mark.parametrize(
    "query,field",
    [
        ("size=0", "size"),
        ("size=501", "size"),
        ("size=ten", "size"),
        ("after=not-a-cursor", "after"),
        ("before=WzEsMl0", "before"),  # [1,2]: well formed, but the key is a text and an id
        ("after=WyJhIl0", "after"),  # ["a"]: one value, not two
        ("after=WyJhIiwxXQ&before=end", "before"),  # ["a",1]: both ways at once
    ],
)
def test_audit_log_bad_paging_is_400_naming_the_parameter(
    admin: FlaskClient, query: str, field: str
) -> None:
    resp = admin.get(f"/admin/audit?action=schedule&{query}")
    assert resp.status_code == 400
    assert f"{field}: " in resp.text and 'id="entry-' not in resp.text


def test_audit_log_paging_in_japanese(web: Web) -> None:
    _log(web, 150)
    ja = web.login("admin", **{"Accept-Language": "ja"})
    page = ja.get("/admin/audit").text
    total = len(_newest_first(web))
    assert f"{total} 件中 1–100 件目" in page and "新しい順" in page and "次へ ›" in page
    assert "表示件数" in page and "すべての操作" in page
    resp = ja.get("/admin/audit?size=501")
    assert resp.status_code == 400 and "size: 1 から 500 までの整数にしてください" in resp.text


def test_audit_log_queries_read_index_ranges(web: Web) -> None:
    _log(web, 300)
    statements: list[str] = []
    conn = web.store.db.conn
    conn.set_trace_callback(statements.append)
    first = audit.page(web.store, "schedule", paging.PageRequest(50))
    audit.page(web.store, "schedule", paging.PageRequest(50, after=first.last))
    audit.page(web.store, "schedule", paging.PageRequest(50, before=paging.END))
    actions = audit.actions(web.store)
    conn.set_trace_callback(None)
    distinct = web.store.query("SELECT DISTINCT action FROM audit ORDER BY action")
    assert actions == [r["action"] for r in distinct] and "schedule" in actions
    plans = [r[3] for sql in statements if sql.lstrip().startswith(("SELECT", "WITH"))
             for r in conn.execute("EXPLAIN QUERY PLAN " + sql)]  # fmt: skip
    assert plans and not [p for p in plans if p.startswith("SCAN audit") or "TEMP B-TREE" in p]
    assert any("audit_action_at (action=? AND at<?)" in p for p in plans)


def test_admin_menu_keeps_places_for_printers_and_destinations(
    web: Web, admin: FlaskClient
) -> None:
    page = admin.get("/").text
    assert "Printers" in page and "Destinations" in page


def test_a_device_can_be_tested_with_c_echo(web: Web, admin: FlaskClient) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    scp = AE(ae_title="ECHOSCP")
    scp.require_called_aet = True  # a device whose AE title is entered wrong rejects us
    scp.add_supported_context(Verification)
    server = scp.start_server(("127.0.0.1", 0), block=False)
    try:
        port = server.server_address[1]
        device = {**CT2, "ae_title": "ECHOSCP", "host": "127.0.0.1", "port": str(port)}
        assert post(admin, "/admin/devices/new", device).status_code == 302
        page = admin.get("/admin/devices").text
        assert "/admin/devices/ECHOSCP/echo" in page
        done = post(admin, "/admin/devices/ECHOSCP/echo", follow_redirects=True)
        assert "C-ECHO to ECHOSCP: success in" in done.text
        wrong = {**device, "ae_title": "WRONGAE"}
        assert post(admin, "/admin/devices/new", wrong).status_code == 302
        failed = post(admin, "/admin/devices/WRONGAE/echo", follow_redirects=True)
        assert "C-ECHO to WRONGAE failed: association rejected" in failed.text
    finally:
        server.shutdown()
    assert post(admin, "/admin/devices/NOPE/echo").status_code == 404
