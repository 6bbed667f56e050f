"""Helpers of the DICOMweb tests: a live appliance holding the Q/R test studies, an API
token, dicomweb-client and plain HTTP requests against /dicomweb."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from dicomweb_client.api import DICOMwebClient

from appliance import accounts
from appliance.server import Appliance
from tests.qr_helpers import Held
from tests.webclient import https_context


@dataclass
class Box:
    """A running appliance, what it holds and a token to ask it with."""

    app: Appliance
    held: Held
    token: str

    @property
    def ca(self) -> Path:
        """The box's certificate (self-signed, naming 127.0.0.1): what clients verify with."""
        return Path(self.app.config.data_dir) / "tls" / "appliance.crt"

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.app.web_port}/dicomweb"

    def session(self) -> requests.Session:
        """A requests session that verifies the box's HTTPS certificate."""
        s = requests.Session()
        s.verify = str(self.ca)
        s.trust_env = False  # else $REQUESTS_CA_BUNDLE would replace verify (requests#3829)
        return s

    def client(self) -> DICOMwebClient:
        return DICOMwebClient(
            url=self.base, session=self.session(),
            headers={"Authorization": f"Bearer {self.token}"},
        )  # fmt: skip

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        """A plain HTTP request of ``path`` (from /dicomweb on); (status, headers with
        lower-case names, body)."""
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.app.web_port, timeout=30, context=https_context(self.ca)
        )
        hdrs = dict(headers or {})
        if token:
            hdrs.setdefault("Authorization", f"Bearer {self.token}")
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            got: dict[str, str] = {}
            for k, v in resp.getheaders():
                got[k.lower()] = f"{got[k.lower()]}, {v}" if k.lower() in got else v
            return resp.status, got, data
        finally:
            conn.close()

    def json(self, path: str, **kw: Any) -> tuple[int, dict[str, str], Any]:
        code, headers, data = self.request("GET", path, **kw)
        return code, headers, json.loads(data) if data else None


def api_token(app: Appliance, username: str = "viewer") -> str:
    store = app.runtime.store  # type: ignore[union-attr]
    pk = accounts.create_user(store, username, "correct horse battery", accounts.FRONT_DESK)
    return accounts.create_token(store, pk, "dicomweb")


def values(item: dict[str, Any], tag: str) -> list[Any]:
    return list(item.get(tag, {}).get("Value", []))


def parts(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """The (Content-Type, content) of each part of a multipart/related response, split
    by its boundary as RFC 2046 says (an independent reading of what the box wrote)."""
    params = dict(p.strip().split("=", 1) for p in content_type.split(";")[1:] if "=" in p)
    boundary = params["boundary"].strip('"').encode()
    out = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk[2:].partition(b"\r\n\r\n")
        ctype = ""
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-type":
                ctype = value.strip().decode()
        out.append((ctype, content[:-2]))
    return out


def multipart_body(files: list[bytes], boundary: str = "DICOMwebBoundary") -> tuple[bytes, str]:
    """A STOW-RS request body as PS3.18 10.5.1 shows it, and its Content-Type."""
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + f + b"\r\n"
        for f in files
    )
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'
