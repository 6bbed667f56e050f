"""The one C-ECHO client (PS3.4 A): `appliance status`, `forward echo` and the queue
page's test button all ask through here, and all say the same about the answer."""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

# A-ASSOCIATE-RJ (PS3.8 Table 9-21) by (source, reason).
REJECTIONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "our calling AE title is not recognized there",
    (1, 7): "the called AE title is not recognized there",
    (2, 1): "no reason given (ACSE)",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}


def set_nodelay(event: Any) -> None:
    """EVT_CONN_OPEN: no Nagle delay on our requests (each waits for its response)."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


NODELAY: list[Any] = [(evt.EVT_CONN_OPEN, set_nodelay)]


def _why_not(host: str, port: int, timeout: float) -> str:
    """Why no association came about, in words: what a plain TCP connect meets."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "the connection was accepted, then closed or aborted before an association"
    except ConnectionRefusedError:
        return "connection refused (nothing listens on that port)"
    except TimeoutError:
        return f"no answer within {timeout:g} s (host down or port filtered)"
    except socket.gaierror:
        return f"host name {host!r} is not known"
    except OSError as exc:
        return exc.strerror or str(exc)


def echo(
    host: str, port: int, called: str, calling: str, timeout: float = 10.0
) -> tuple[bool, str]:
    """(answered Success, what happened in words: the time, or why not)."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    ae.add_requested_context(Verification)
    start = time.monotonic()
    assoc = ae.associate(host, port, ae_title=called, evt_handlers=NODELAY)
    where = f"{called}@{host}:{port}"
    if assoc.is_rejected:
        rj = assoc.acceptor.primitive
        key = (int(getattr(rj, "result_source", 0) or 0), int(getattr(rj, "diagnostic", 0) or 0))
        return False, f"association rejected by {where}: {REJECTIONS.get(key, f'reason {key}')}"
    if not assoc.is_established:
        return False, f"no association with {where}: {_why_not(host, port, timeout)}"
    try:
        rsp = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
    if not rsp or "Status" not in rsp:
        return False, f"no answer from {where} within {timeout:g} s"
    code = int(rsp.Status)
    ms = (time.monotonic() - start) * 1000
    if code == 0x0000:
        return True, f"success in {ms:.0f} ms"
    return False, f"status 0x{code:04X} from {where}"
