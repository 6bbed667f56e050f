"""A DICOM peer at the byte level, for tests that play a hostile or careless peer: PDUs
built by hand (PS3.8 9.3), sent on a plain socket, answers read back raw."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT = "1.2.840.10008.1.2"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"


def item(item_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(payload)) + payload


def pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(body)) + body


def associate_rq(
    called: bytes = b"APPLIANCE",
    calling: bytes = b"HOSTILE",
    contexts: Iterable[tuple[int, str, list[str]]] = ((1, VERIFICATION, [IMPLICIT]),),
    max_length: int = 16384,
) -> bytes:
    """A well-formed A-ASSOCIATE-RQ unless its arguments say otherwise."""
    body = struct.pack(">HH", 1, 0) + called.ljust(16)[:16] + calling.ljust(16)[:16] + bytes(32)
    body += item(0x10, APPLICATION_CONTEXT.encode())
    for cx_id, abstract, syntaxes in contexts:
        sub = item(0x30, abstract.encode()) + b"".join(item(0x40, ts.encode()) for ts in syntaxes)
        body += item(0x20, bytes([cx_id, 0, 0, 0]) + sub)
    body += item(0x50, item(0x51, struct.pack(">L", max_length)) + item(0x52, b"1.2.826.0.1.3"))
    return pdu(0x01, body)


def connect(port: int, source: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
    """A TCP connection from ``source`` (any 127.x.y.z on Linux loopback)."""
    sock = socket.create_connection(
        ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
    )
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_pdu(sock: socket.socket, timeout: float = 5.0) -> tuple[int, bytes] | None:
    """(type, body) of the next PDU, or None if the connection closed first."""
    sock.settimeout(timeout)
    header = _exactly(sock, 6)
    if header is None:
        return None
    pdu_type, _, length = struct.unpack(">BBL", header)
    body = _exactly(sock, length)
    return None if body is None else (pdu_type, body)


def _exactly(sock: socket.socket, size: int) -> bytes | None:
    out = b""
    while len(out) < size:
        try:
            chunk = sock.recv(size - len(out))
        except (ConnectionError, TimeoutError, OSError):
            return None
        if not chunk:
            return None
        out += chunk
    return out


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the peer closed (reading and dropping anything it sent), or None."""
    start = time.monotonic()
    sock.settimeout(0.05)
    while time.monotonic() - start < seconds:
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - start
    return None


def echo_seconds(port: int, title: str = "APPLIANCE", source: str = "127.0.0.1") -> float:
    """Seconds for a whole association with one C-ECHO; raises if it fails."""
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    start = time.monotonic()
    assoc = ae.associate("127.0.0.1", port, ae_title=title, bind_address=(source, 0))
    try:
        assert assoc.is_established, "C-ECHO association not established"
        status = assoc.send_c_echo()
        assert status and status.Status == 0x0000, f"C-ECHO status {status}"
    finally:
        if assoc.is_established:
            assoc.release()
    return time.monotonic() - start


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")
