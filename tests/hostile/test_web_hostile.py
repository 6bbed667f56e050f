"""Hostile web clients over real sockets: sign-in guessing, inline script, /healthz
reconnaissance and a cross-site language change (issue 11, point 8).

Attackers connect from other loopback source addresses (127.0.0.2 ...), which the box
sees as other peers: it trusts no X-Forwarded-For.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from urllib.parse import urlsplit

import pytest

from appliance import accounts, catalog
from appliance.server import Appliance
from tests.webclient import PASSWORD, PROCEDURES, SocketClient, csrf_of, inline_code

SKIP_LINKS = re.compile(r"\.(csv|png|pdf|json|gz)(\?|$)|/changes|^/login")


@pytest.fixture
def box(start_appliance: Callable[..., Appliance]) -> Appliance:
    """A box with an admin, a CT, a catalog entry and a PACS destination (nothing there)."""
    app = start_appliance(
        {
            "devices": [{"ae_title": "CT1", "modality": "CT"}],
            "destinations": [
                {"name": "offsite", "ae_title": "FARPACS", "host": "127.0.0.1", "port": 9}
            ],
        }
    )
    accounts.create_user(app.runtime.store, "admin", PASSWORD, accounts.ADMIN)
    catalog.save(app.runtime.store, PROCEDURES[0])
    return app


def _token(box: Appliance) -> str:
    user = accounts.find_user(box.runtime.store, "admin")
    assert user is not None
    return accounts.create_token(box.runtime.store, user.pk, "monitoring")


def test_guesses_slow_the_guessing_addresses_not_the_admin(box: Appliance) -> None:
    attacker = SocketClient(box.web_port, source="127.0.0.2")
    codes = [attacker.sign_in("admin", f"guess-{i:04d}").status for i in range(10)]
    assert codes[:5] == [401] * 5 and codes[-1] == 429
    refused = attacker.sign_in("admin", PASSWORD)  # even the right password, from there
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "Too many failed sign-ins" in refused.text
    for i in range(3, 13):  # and one guess from each of ten more addresses
        assert SocketClient(box.web_port, f"127.0.0.{i}").sign_in("admin", "guess").status == 401

    admin = SocketClient(box.web_port, source="127.0.0.1")
    resp = admin.sign_in("admin")
    assert resp.status == 302, resp.text  # at once: this address has not been failing
    assert admin.get("/admin/users").status == 200
    assert attacker.get("/admin/users").status == 302  # still not signed in


def test_no_page_has_inline_script_and_the_csp_forbids_it(box: Appliance) -> None:
    step = SocketClient(box.web_port).request(
        "POST",
        "/api/v1/procedures",
        headers={"Authorization": f"Bearer {_token(box)}"},
        json_body={"patient_id": "P1", "patient_name": "Doe^Jane", "procedure": "CTHEAD",
                   "station_ae": "CT1", "start": f"{date.today().isoformat()}T10:30"},
    )  # fmt: skip
    assert step.status == 201, step.text
    pages = {"/login": SocketClient(box.web_port).get("/login")}
    admin = SocketClient(box.web_port)
    assert admin.sign_in("admin").status == 302
    queue, seen = ["/"], {"/login"}
    while queue and len(seen) < 60:  # every page linked from the board, once per path
        url = queue.pop(0)
        if urlsplit(url).path in seen:
            continue
        seen.add(urlsplit(url).path)
        resp = admin.get(url)
        assert resp.status == 200, (url, resp.status)
        pages[url] = resp
        for href in re.findall(r'href="(/[^"]*)"', resp.text):
            href = href.replace("&amp;", "&").split("#")[0]  # a browser never sends the fragment
            if not SKIP_LINKS.search(href) and not href.startswith("/static/"):
                queue.append(href)
    expected = {"/", "/steps/new", "/account", "/admin/devices", "/admin/audit", "/prints"}
    assert expected | {"/admin/destinations", "/steps/1"} <= {urlsplit(u).path for u in pages}
    for path, resp in pages.items():
        csp = [d.strip() for d in resp.headers["Content-Security-Policy"].split(";")]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp, path
        assert "unsafe-inline" not in resp.headers["Content-Security-Policy"], path
        assert inline_code(resp.text) == [], path
        scripts = re.findall(r'<script src="([^"]+)"', resp.text)
        assert scripts and all(urlsplit(s).path.startswith("/static/") for s in scripts), path


def test_healthz_tells_anonymous_callers_only_up_or_down(box: Appliance) -> None:
    anonymous = SocketClient(box.web_port, source="127.0.0.2")
    for auth in ("", "Bearer apl_guessed", "Bearer " + "0" * 43):
        resp = anonymous.get("/healthz", **({"Authorization": auth} if auth else {}))
        assert resp.status == 200 and resp.json() == {"status": "ok"}
        for secret in ("APPLIANCE", str(box.dicom_port), "offsite", "FARPACS", "free"):
            assert secret not in resp.text

    admin = SocketClient(box.web_port)
    assert admin.sign_in("admin").status == 302
    full = admin.get("/healthz")
    assert full.json()["services"]["dicom"]["port"] == box.dicom_port
    assert "offsite" in full.text  # the destination's state, for those who may see it
    by_token = SocketClient(box.web_port).get("/healthz", Authorization=f"Bearer {_token(box)}")
    assert by_token.json()["services"]["dicom"]["port"] == box.dicom_port


def test_language_cannot_be_changed_by_a_link_or_a_foreign_form(box: Appliance) -> None:
    client = SocketClient(box.web_port)
    assert client.sign_in("admin").status == 302
    assert client.get("/language/ja?next=/").status == 405  # an <img src> or a link
    forged = client.post("/language/ja", {"next": "/"})  # a form on another site
    assert forged.status == 400
    assert accounts.find_user(box.runtime.store, "admin").language == ""
    token = csrf_of(client.get("/").text)
    chosen = client.post("/language/ja", {"csrf_token": token, "next": "/"})
    assert chosen.status == 302 and chosen.headers["Location"] == "/"
    assert accounts.find_user(box.runtime.store, "admin").language == "ja"
    assert 'lang="ja"' in client.get("/").text
