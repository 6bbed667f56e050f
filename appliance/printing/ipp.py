"""A small IPP/1.1-2.0 client: Get-Printer-Attributes, Print-Job, Get-Job-Attributes.

IPP is binary attributes over HTTP POST (RFC 8010 encoding, RFC 8011 semantics); the
printer side we talk to is an IPP Everywhere printer (PWG 5100.14). Collections are
skipped when decoding: nothing here needs their members.
"""

from __future__ import annotations

import http.client
import itertools
import struct
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from appliance.errors import ApplianceError

# Operations (RFC 8011 5.4)
PRINT_JOB = 0x0002
GET_JOB_ATTRIBUTES = 0x0009
GET_PRINTER_ATTRIBUTES = 0x000B
# Delimiter and value tags (RFC 8010 3.5)
OPERATION_GROUP, JOB_GROUP, END, PRINTER_GROUP = 0x01, 0x02, 0x03, 0x04
INTEGER, BOOLEAN, ENUM = 0x21, 0x22, 0x23
DATETIME, RESOLUTION, RANGE = 0x31, 0x32, 0x33
BEG_COLLECTION, END_COLLECTION, MEMBER_NAME = 0x34, 0x37, 0x4A
TEXT, NAME, KEYWORD, URI, CHARSET, LANGUAGE, MIME = 0x41, 0x42, 0x44, 0x45, 0x47, 0x48, 0x49
# Status codes (RFC 8011 B.1)
SERVER_ERROR_BUSY = 0x0507
SERVER_ERROR_NOT_ACCEPTING = 0x0506
# job-state (RFC 8011 5.3.7)
JOB_STATES = {
    3: "pending",
    4: "pending-held",
    5: "processing",
    6: "processing-stopped",
    7: "canceled",
    8: "aborted",
    9: "completed",
}
# printer-state (RFC 8011 5.4.11)
PRINTER_STATES = {3: "idle", 4: "processing", 5: "stopped"}

_ids = itertools.count(1)


class IppError(ApplianceError):
    """The printer could not be reached or refused the request."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def busy(self) -> bool:
        """True when the printer asked us to try again later."""
        return self.status in (SERVER_ERROR_BUSY, SERVER_ERROR_NOT_ACCEPTING)


@dataclass
class IppResponse:
    """Status and attribute groups of an IPP response (each group: name -> list of values)."""

    status: int
    request_id: int
    groups: list[tuple[int, dict[str, list[Any]]]] = field(default_factory=list)

    def group(self, tag: int) -> dict[str, list[Any]]:
        """The first group with this tag (empty when absent)."""
        for gtag, attrs in self.groups:
            if gtag == tag:
                return attrs
        return {}

    @property
    def ok(self) -> bool:
        """successful-ok and its -ignored-or-substituted / -conflicting variants."""
        return self.status < 0x0100


def _attr(tag: int, name: str, values: Any) -> bytes:
    if not isinstance(values, list | tuple):
        values = [values]
    out = bytearray()
    for i, value in enumerate(values):
        if tag in (INTEGER, ENUM):
            data = struct.pack(">i", value)
        elif tag == BOOLEAN:
            data = b"\x01" if value else b"\x00"
        else:
            data = str(value).encode("utf-8")
        key = name.encode("ascii") if i == 0 else b""
        out += struct.pack(">BH", tag, len(key)) + key + struct.pack(">H", len(data)) + data
    return bytes(out)


def encode_request(
    operation: int,
    printer_uri: str,
    operation_attrs: list[tuple[int, str, Any]] = (),  # type: ignore[assignment]
    job_attrs: list[tuple[int, str, Any]] = (),  # type: ignore[assignment]
    request_id: int | None = None,
) -> bytes:
    """An IPP/2.0 request: the required operation attributes, then ours (RFC 8011 4.1.4)."""
    rid = request_id if request_id is not None else next(_ids)
    out = bytearray(struct.pack(">BBHI", 2, 0, operation, rid))
    out.append(OPERATION_GROUP)
    out += _attr(CHARSET, "attributes-charset", "utf-8")
    out += _attr(LANGUAGE, "attributes-natural-language", "en")
    out += _attr(URI, "printer-uri", printer_uri)
    for tag, name, value in operation_attrs:
        out += _attr(tag, name, value)
    if job_attrs:
        out.append(JOB_GROUP)
        for tag, name, value in job_attrs:
            out += _attr(tag, name, value)
    out.append(END)
    return bytes(out)


def _value(tag: int, data: bytes) -> Any:
    if tag in (INTEGER, ENUM) and len(data) == 4:
        return struct.unpack(">i", data)[0]
    if tag == BOOLEAN:
        return data != b"\x00"
    if tag == RANGE and len(data) == 8:
        return struct.unpack(">ii", data)
    if tag == RESOLUTION and len(data) == 9:
        return struct.unpack(">iib", data)
    if tag in (DATETIME,) or tag < 0x40:
        return data
    return data.decode("utf-8", "replace")


def decode_response(data: bytes) -> IppResponse:
    """Parse an IPP response; collection values are skipped."""
    if len(data) < 9:
        raise IppError("short IPP response")
    _major, _minor, status, rid = struct.unpack(">BBHI", data[:8])
    resp = IppResponse(status, rid)
    pos, depth = 8, 0
    current: dict[str, list[Any]] | None = None
    last = ""
    while pos < len(data):
        tag = data[pos]
        pos += 1
        if tag == END:
            break
        if tag < 0x10:  # a new attribute group
            current = {}
            resp.groups.append((tag, current))
            continue
        (nlen,) = struct.unpack(">H", data[pos : pos + 2])
        name = data[pos + 2 : pos + 2 + nlen].decode("ascii", "replace")
        pos += 2 + nlen
        (vlen,) = struct.unpack(">H", data[pos : pos + 2])
        raw = data[pos + 2 : pos + 2 + vlen]
        pos += 2 + vlen
        if tag == BEG_COLLECTION:
            depth += 1
            if depth == 1 and current is not None:
                last = name or last
                current.setdefault(last, []).append(None)
            continue
        if tag == END_COLLECTION:
            depth -= 1
            continue
        if depth or current is None:
            continue
        last = name or last
        current.setdefault(last, []).append(_value(tag, raw))
    return resp


def http_url(ipp_uri: str) -> tuple[str, int, str, bool]:
    """(host, port, path, tls) of an ipp:// or ipps:// URI (default port 631)."""
    parts = urllib.parse.urlsplit(ipp_uri)
    if parts.scheme not in ("ipp", "ipps") or not parts.hostname:
        raise IppError(f"{ipp_uri!r} is not an ipp:// URI")
    return parts.hostname, parts.port or 631, parts.path or "/", parts.scheme == "ipps"


def send(
    ipp_uri: str, request: bytes, document: BinaryIO | None = None, timeout: float = 30.0
) -> IppResponse:
    """POST one IPP request (and a document) to the printer; raises IppError on failure."""
    host, port, path, tls = http_url(ipp_uri)
    conn_cls = http.client.HTTPSConnection if tls else http.client.HTTPConnection
    conn = conn_cls(host, port, timeout=timeout)
    try:
        body: Any = request
        headers = {"Content-Type": "application/ipp"}
        if document is not None:
            body = _Chained(request, document)
            headers["Transfer-Encoding"] = "chunked"
        conn.request("POST", path, body=body, headers=headers, encode_chunked=document is not None)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise IppError(f"printer answered HTTP {resp.status}")
    except (OSError, http.client.HTTPException) as exc:
        raise IppError(f"cannot reach printer {host}:{port}: {exc}") from exc
    finally:
        conn.close()
    decoded = decode_response(data)
    if not decoded.ok:
        message = decoded.group(OPERATION_GROUP).get("status-message", [""])[0]
        raise IppError(f"printer refused: 0x{decoded.status:04x} {message}", decoded.status)
    return decoded


class _Chained:
    """The IPP request followed by the document, read in chunks (no copy of the document)."""

    def __init__(self, head: bytes, document: BinaryIO) -> None:
        self.head = head
        self.document = document

    def __iter__(self) -> Any:
        yield self.head
        while chunk := self.document.read(64 * 1024):
            yield chunk


def get_printer_attributes(ipp_uri: str, timeout: float = 10.0) -> dict[str, list[Any]]:
    """The printer's attributes (Get-Printer-Attributes, all groups of interest)."""
    req = encode_request(
        GET_PRINTER_ATTRIBUTES,
        ipp_uri,
        [
            (NAME, "requesting-user-name", "appliance"),
            (KEYWORD, "requested-attributes", ["printer-description", "job-template"]),
        ],
    )
    return send(ipp_uri, req, timeout=timeout).group(PRINTER_GROUP)


def print_job(
    ipp_uri: str,
    document: BinaryIO,
    document_format: str,
    job_name: str,
    job_attrs: list[tuple[int, str, Any]],
    timeout: float = 60.0,
) -> int:
    """Print-Job; returns the printer's job-id."""
    req = encode_request(
        PRINT_JOB,
        ipp_uri,
        [
            (NAME, "requesting-user-name", "appliance"),
            (NAME, "job-name", job_name[:255] or "film"),
            (MIME, "document-format", document_format),
        ],
        job_attrs,
    )
    resp = send(ipp_uri, req, document, timeout=timeout)
    job_id = resp.group(JOB_GROUP).get("job-id", [None])[0]
    if not isinstance(job_id, int):
        raise IppError("Print-Job response has no job-id")
    return job_id


def get_job_attributes(ipp_uri: str, job_id: int, timeout: float = 10.0) -> dict[str, list[Any]]:
    """job-state and job-state-reasons of one job."""
    req = encode_request(
        GET_JOB_ATTRIBUTES,
        ipp_uri,
        [
            (INTEGER, "job-id", job_id),
            (NAME, "requesting-user-name", "appliance"),
            (KEYWORD, "requested-attributes", ["job-state", "job-state-reasons"]),
        ],
    )
    return send(ipp_uri, req, timeout=timeout).group(JOB_GROUP)
