"""The web page over HTTPS (issue 13): the DICOM TLS certificate, verified by the stdlib
client; the plain-HTTP port only redirects; Secure cookies and HSTS; ``web.https = false``
for development; a certificate of the web's own."""

from __future__ import annotations

import hashlib
import http.client
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance import accounts, statuskey
from appliance.dicom import tls
from appliance.server import Appliance
from tests import tlscerts
from tests.webclient import PASSWORD, SocketClient, https_context


def _box_cert(app: Appliance) -> Path:
    return Path(app.config.data_dir) / "tls" / "appliance.crt"


def _peer_fingerprint(port: int, ca: Path | None = None) -> tuple[str, str]:
    """SHA-256 of the certificate the HTTPS port presents, and the TLS version agreed."""
    ctx = https_context(ca)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            der = conn.getpeercert(binary_form=True)
            assert der is not None
            digest = hashlib.sha256(der).hexdigest().upper()
            return ":".join(digest[i : i + 2] for i in range(0, 64, 2)), str(conn.version())


def _plain(port: int, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=b"x=1" if method == "POST" else None, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp
    finally:
        conn.close()


def test_https_presents_the_dicom_tls_certificate_and_verifies(appliance: Appliance) -> None:
    fingerprint, version = _peer_fingerprint(appliance.web_port, ca=_box_cert(appliance))
    assert fingerprint == appliance.tls_fingerprint == tls.fingerprint(_box_cert(appliance))
    assert version in ("TLSv1.2", "TLSv1.3")
    client = SocketClient(appliance.web_port, ca=_box_cert(appliance))
    reply = client.get(
        "/healthz", Authorization=f"Bearer {statuskey.read(appliance.config.data_dir)}"
    )
    assert reply.status == 200
    web = reply.json()["services"]["web"]
    assert web["https"] is True and web["port"] == appliance.web_port
    assert web["http_redirect_port"] == appliance.web_http_port


def test_an_unknown_certificate_is_refused_by_a_verifying_client(
    appliance: Appliance, tmp_path: Path
) -> None:
    other, _, _ = tlscerts.make_ca(tmp_path / "ca", "Other CA")
    with pytest.raises(ssl.SSLCertVerificationError):
        _peer_fingerprint(appliance.web_port, ca=other.cert)


def test_tls_1_1_is_refused(appliance: Appliance) -> None:
    ctx = https_context()
    try:
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with socket.create_connection(("127.0.0.1", appliance.web_port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, OSError)):
            ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def test_plain_http_port_only_redirects(appliance: Appliance) -> None:
    port, https_port = appliance.web_http_port, appliance.web_port
    assert port and port != https_port
    resp = _plain(port, "GET", "/board?day=2026-01-02&x=%20y")
    assert resp.status == 301
    assert resp.headers["Location"] == f"https://127.0.0.1:{https_port}/board?day=2026-01-02&x=%20y"
    assert "Set-Cookie" not in resp.headers  # no app behind it: no session on plain HTTP
    assert resp.headers["Server"] == "appliance"  # no server software or version told
    named = _plain(port, "GET", "/login", {"Host": "box.clinic.example:8080"})
    assert named.headers["Location"] == f"https://box.clinic.example:{https_port}/login"
    forged = _plain(port, "GET", "/", {"Host": "evil.example/@x"})  # not a host name
    assert "evil" not in forged.headers["Location"]
    post = _plain(port, "POST", "/login", {"Content-Type": "application/x-www-form-urlencoded"})
    assert post.status == 308 and post.headers["Location"].startswith("https://")


def test_plain_http_on_the_https_port_gets_a_clear_400(appliance: Appliance) -> None:
    resp = _plain(appliance.web_port, "GET", "/")
    assert resp.status == 400


def test_cookies_are_secure_and_hsts_is_sent(appliance: Appliance) -> None:
    accounts.create_user(appliance.runtime.store, "admin", PASSWORD, accounts.ADMIN)
    client = SocketClient(appliance.web_port, ca=_box_cert(appliance))
    page = client.get("/login")
    assert page.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    login = client.sign_in("admin")
    assert login.status == 302
    (session,) = [c for c in login.headers.get_all("Set-Cookie") if "appliance_session" in c]
    attributes = {a.strip().split("=")[0].lower() for a in session.split(";")[1:]}
    assert {"secure", "httponly", "samesite"} <= attributes
    assert "SameSite=Lax" in session
    assert client.get("/").status == 200


def test_https_false_serves_plain_http_for_development(
    start_appliance: Callable[..., Appliance],
) -> None:
    app = start_appliance({"web": {"https": False}})
    assert app.web_http_port is None
    accounts.create_user(app.runtime.store, "admin", PASSWORD, accounts.ADMIN)
    client = SocketClient(app.web_port, https=False)
    page = client.get("/login")
    assert page.status == 200
    assert "Strict-Transport-Security" not in page.headers
    login = client.sign_in("admin")
    assert login.status == 302
    cookies = login.headers.get_all("Set-Cookie") or []
    assert cookies and all("Secure" not in c for c in cookies)


def test_web_certificate_of_its_own(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    ca, ca_key, ca_cert = tlscerts.make_ca(tmp_path / "ca", "Clinic CA")
    web = tlscerts.issue(tmp_path / "ca", "box-web", ca_key, ca_cert)
    app = start_appliance(
        {"web": {"tls_cert": str(web.cert), "tls_key": str(web.key), "http_redirect": False}}
    )
    assert app.web_http_port is None
    fingerprint, _ = _peer_fingerprint(app.web_port, ca=ca.cert)
    assert fingerprint == tls.fingerprint(web.cert) != app.tls_fingerprint
