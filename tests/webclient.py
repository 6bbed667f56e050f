"""Web test helpers: the app over a real runtime and SQLite file, a signed-in test client."""

from __future__ import annotations

import html
import http.client
import re
import ssl
import urllib.parse
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from appliance import accounts, catalog
from appliance.db import Store
from appliance.runtime import Runtime

PASSWORD = "correct horse battery"
DEVICES = [
    {"ae_title": "CT1", "modality": "CT", "description": "CT room 1"},
    {"ae_title": "MR1", "modality": "MR", "description": "MR room"},
    {"ae_title": "PACS", "role": "pacs"},
]
PROCEDURES = [
    catalog.Procedure("CTHEAD", "LOCAL", "CT Head", "CT", "CTH-R", "LOCAL", "Head routine"),
    catalog.Procedure("MRBRAIN", "LOCAL", "MR Brain", "MR"),
]


@dataclass
class Web:
    app: Flask
    store: Store
    runtime: Runtime
    setup_tokens: list[str] = field(default_factory=list)

    def client(self, **headers: str) -> FlaskClient:
        c = self.app.test_client()
        if headers:
            c.environ_base.update(
                {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}
            )
        return c

    def user(self, username: str, role: str = accounts.FRONT_DESK, language: str = "") -> int:
        return accounts.create_user(self.store, username, PASSWORD, role, language)

    def login(self, username: str, role: str = accounts.FRONT_DESK, **headers: str) -> FlaskClient:
        """A client signed in through the real login form (user created if needed)."""
        if accounts.find_user(self.store, username) is None:
            self.user(username, role)
        c = self.client(**headers)
        page = c.get("/login")
        assert page.status_code == 200, page.status_code
        resp = c.post(
            "/login",
            data={"csrf_token": csrf_of(page.text), "username": username, "password": PASSWORD},
        )
        assert resp.status_code == 302, resp.text
        return c

    def count(self, table: str, where: str = "1", params: tuple = ()) -> int:
        return int(
            self.store.query(f"SELECT count(*) AS n FROM {table} WHERE {where}", params)[0]["n"]
        )


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "page has no CSRF field"
    return m.group(1)


def session_csrf(client: FlaskClient) -> str:
    with client.session_transaction() as s:
        return str(s["csrf"])


def post(client: FlaskClient, url: str, data: dict[str, Any] | None = None, **kw: Any) -> Any:
    """POST a form with this session's CSRF token, as the browser does."""
    return client.post(url, data={"csrf_token": session_csrf(client), **(data or {})}, **kw)


def field_errors(html: str) -> set[str]:
    """The fields that show a message next to them on a rendered form."""
    return set(re.findall(r'id="error-([A-Za-z0-9_.]+)"', html))


PAGE_LINK = re.compile(r'id="page-(first|previous|next|last)" href="([^"]+)"')
PAGE_RANGE = re.compile(r'<span class="range">([^<]*)')


def pager(page: str) -> tuple[str, dict[str, str]]:
    """A list page's range text ("101–200 of 250") and its page links by name."""
    found = PAGE_RANGE.search(page)
    assert found, "page has no pager"
    return found.group(1).strip(), {k: html.unescape(v) for k, v in PAGE_LINK.findall(page)}


def walk(client: FlaskClient, url: str, row_id: str, link: str = "next") -> list[list[str]]:
    """Follow the ``link`` links from ``url`` to the end; the row ids of every page."""
    pages = []
    seen = set()
    while url:
        assert url not in seen, f"the pages go round in a circle at {url}"
        seen.add(url)
        resp = client.get(url)
        assert resp.status_code == 200, (url, resp.status_code)
        pages.append(re.findall(rf'id="{row_id}-([^"]+)"', resp.text))
        url = pager(resp.text)[1].get(link, "")
    return pages


class _InlineCode(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would block on a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"<{tag} {name}=...>")
            elif name == "style":
                self.found.append(f"<{tag} style=...>")
            elif name in ("href", "src", "action") and (value or "").strip().lower().startswith(
                "javascript:"
            ):
                self.found.append(f"<{tag} {name}=javascript:...>")
        if tag == "script":
            self._in_script = True
            if not names.get("src"):
                self.found.append("<script> without src")
        elif tag == "style":
            self.found.append("<style> element")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.found.append("<script> with inline code")


def inline_code(page: str) -> list[str]:
    """Inline scripts, event handler and style attributes, javascript: URLs on a page."""
    parser = _InlineCode()
    parser.feed(page)
    parser.close()
    return parser.found


def https_context(ca: Path | None = None) -> ssl.SSLContext:
    """A client context toward the box: verified against ``ca`` (its certificate file,
    e.g. DATA_DIR/tls/appliance.crt, which names 127.0.0.1), else not verified at all."""
    if ca is not None:
        return ssl.create_default_context(cafile=str(ca))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def box_url(app: Any, path: str = "/") -> str:
    """The URL of ``path`` on a running appliance's web page (https unless turned off)."""
    scheme = "https" if app.config.web.https else "http"
    return f"{scheme}://127.0.0.1:{app.web_port}{path}"


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    text: str

    def json(self) -> Any:
        import json

        return json.loads(self.text)


class SocketClient:
    """A cookie-keeping HTTP client over a real socket to the running appliance, from a
    chosen loopback source address (127.0.0.0/8 all reach 127.0.0.1 on Linux)."""

    def __init__(
        self, port: int, source: str = "127.0.0.1", https: bool = True, ca: Path | None = None
    ) -> None:
        self.port = port
        self.source = source
        self.cookies: dict[str, str] = {}
        self.context = https_context(ca) if https else None

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
    ) -> Reply:
        where = ("127.0.0.1", self.port)
        conn = (
            http.client.HTTPSConnection(
                *where, timeout=10, source_address=(self.source, 0), context=self.context
            )
            if self.context is not None
            else http.client.HTTPConnection(*where, timeout=10, source_address=(self.source, 0))
        )
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        elif json_body is not None:
            import json

            body = json.dumps(json_body)
            sent["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=body, headers=sent)
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
        finally:
            conn.close()
        for cookie in resp.headers.get_all("Set-Cookie") or []:
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0]
            if value and "Max-Age=0" not in cookie and "1970" not in cookie:
                self.cookies[name.strip()] = value
            else:
                self.cookies.pop(name.strip(), None)
        return Reply(resp.status, resp.headers, text)

    def get(self, path: str, **headers: str) -> Reply:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, form: dict[str, str]) -> Reply:
        return self.request("POST", path, form=form)

    def sign_in(self, username: str, password: str = PASSWORD) -> Reply:
        """The login form as a browser sends it: GET for the CSRF token, then POST."""
        token = csrf_of(self.get("/login").text)
        return self.post(
            "/login", {"csrf_token": token, "username": username, "password": password}
        )
