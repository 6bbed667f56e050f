"""The DICOM listener's edge: everything a peer can do before pynetdicom sees it.

pynetdicom (3.0) starts an association thread for every TCP connection and reads the
A-ASSOCIATE-RQ there with no size limit, no deadline that trickling bytes cannot reset,
and a reader thread that dies on an even presentation-context ID. So the appliance's
listener is ``EdgeServer``: a ``ThreadedAssociationServer`` that

- admits a connection only within ``dicom.max_pending`` connections that have not yet
  associated and ``dicom.max_per_address`` connections from its address; any other is
  closed at once, before a thread exists (port scans, TCP health checks, floods);
- reads the first PDU itself, within ``dicom.associate_timeout`` from the connect however
  slowly it trickles, at most ``PRE_ASSOCIATION_PDU_CAP`` bytes, and checks its
  structure (PS3.8 9.3.2): anything else gets an A-ABORT (or, for unusable AE titles, an
  A-ASSOCIATE-RJ) and one log line naming the peer and the reason;
- hands the A-ASSOCIATE-RQ to pynetdicom through ``EdgeSocket``, which replays it and
  then bounds every later read: a PDU must arrive whole within ``dicom.pdu_timeout`` once
  begun, and none may be longer than the appliance accepts.

Idle time between PDUs is pynetdicom's network timeout (``dicom.network_timeout``), the
association count its ``maximum_associations`` (``dicom.max_associations``).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from datetime import datetime
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from appliance import identifiers
from appliance.dicom import compat

log = logging.getLogger(__name__)

# PS3.8 has no limit for an A-ASSOCIATE-RQ; 128 presentation contexts with a dozen
# transfer syntaxes each and every user-information item fit in well under 64 KiB.
PRE_ASSOCIATION_PDU_CAP = 64 * 1024
# A PDU above this is refused after association even when dicom.max_pdu is 0 (no limit).
UNLIMITED_PDU_CAP = 64 * 1024 * 1024
PDU_TYPES = {
    0x01: "A-ASSOCIATE-RQ", 0x02: "A-ASSOCIATE-AC", 0x03: "A-ASSOCIATE-RJ",
    0x04: "P-DATA-TF", 0x05: "A-RELEASE-RQ", 0x06: "A-RELEASE-RP", 0x07: "A-ABORT",
}  # fmt: skip

# A-ABORT reason/diagnostic (PS3.8 Table 9-26), source 2 (service provider).
UNRECOGNIZED_PDU, UNEXPECTED_PDU, INVALID_PARAMETER = 0x01, 0x02, 0x06


class Refusal(Exception):
    """The first PDU cannot be served: ``pdu`` is the answer (A-ABORT or A-ASSOCIATE-RJ)."""

    def __init__(self, reason: str, pdu: bytes | None) -> None:
        super().__init__(reason)
        self.pdu = pdu


def abort_pdu(reason: int) -> bytes:
    """A-ABORT from the service provider (source 2) with a reason/diagnostic."""
    return struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, 0x02, reason)


def reject_pdu(result: int, source: int, reason: int) -> bytes:
    """A-ASSOCIATE-RJ (PS3.8 9.3.4)."""
    return struct.pack(">BBLBBBB", 0x03, 0, 4, 0, result, source, reason)


def _valid_ae(raw: bytes) -> bool:
    """An AE title of the PDU: 16 bytes of the default repertoire, no control characters
    and no backslash (PS3.5 6.2 AE), not all spaces."""
    return identifiers.ae_title_problem(raw.decode("latin-1")) is None


def check_associate_rq(body: bytes) -> None:
    """Raise ``Refusal`` unless ``body`` (the A-ASSOCIATE-RQ after its 6-byte header) is
    well formed: fixed fields, items within the PDU, presentation-context IDs odd and
    unique (PS3.8 9.3.2.2), AE titles usable, and decodable by pynetdicom."""
    if len(body) < 68:
        raise Refusal(f"an A-ASSOCIATE-RQ of {len(body)} bytes", abort_pdu(INVALID_PARAMETER))
    called, calling = body[4:20], body[20:36]
    if not _valid_ae(calling):
        # PS3.8 9.3.4: rejected-permanent, service-user, calling-AE-title-not-recognized
        raise Refusal(f"calling AE title {calling!r} is not valid", reject_pdu(1, 1, 3))
    if not _valid_ae(called):
        raise Refusal(f"called AE title {called!r} is not valid", reject_pdu(1, 1, 7))
    seen: set[int] = set()
    offset = 68
    while offset < len(body):
        if offset + 4 > len(body):
            raise Refusal("a truncated item in the A-ASSOCIATE-RQ", abort_pdu(INVALID_PARAMETER))
        item_type = body[offset]
        (length,) = struct.unpack_from(">H", body, offset + 2)
        end = offset + 4 + length
        if end > len(body):
            raise Refusal(
                f"item 0x{item_type:02X} runs past the end of the A-ASSOCIATE-RQ",
                abort_pdu(INVALID_PARAMETER),
            )
        if item_type == 0x10:
            _check_uid(body[offset + 4 : end], "application context name")
        elif item_type == 0x20:
            if length < 4:
                raise Refusal("a presentation context item too short", abort_pdu(INVALID_PARAMETER))
            cx_id = body[offset + 4]
            if cx_id % 2 == 0:
                raise Refusal(
                    f"presentation context ID {cx_id} is even (PS3.8 9.3.2.2: odd, 1-255)",
                    abort_pdu(INVALID_PARAMETER),
                )
            if cx_id in seen:
                raise Refusal(
                    f"presentation context ID {cx_id} is used twice", abort_pdu(INVALID_PARAMETER)
                )
            seen.add(cx_id)
            _check_sub_items(
                body, offset + 8, end, {0x30: "abstract syntax", 0x40: "transfer syntax"}
            )
        elif item_type == 0x50:
            _check_sub_items(body, offset + 4, end, {0x52: "implementation class UID"})
        offset = end
    try:
        A_ASSOCIATE_RQ().decode(b"\x01\x00" + struct.pack(">L", len(body)) + body)
    except Exception as exc:  # pynetdicom's own reader would log a traceback for it
        raise Refusal(
            f"an A-ASSOCIATE-RQ that does not decode ({type(exc).__name__})",
            abort_pdu(INVALID_PARAMETER),
        ) from None


def _check_uid(raw: bytes, what: str) -> None:
    """A UID of the PDU: digits and dots, at most 64 (a trailing NUL tolerated)."""
    uid = raw.rstrip(b"\0 ")
    if not identifiers.is_uid(uid.decode("latin-1")):
        raise Refusal(f"{what} {uid[:70]!r} is not a UID", abort_pdu(INVALID_PARAMETER))


def _check_sub_items(body: bytes, offset: int, end: int, uids: dict[int, str]) -> None:
    """Sub-items within their item, and those holding UIDs well formed."""
    while offset < end:
        if offset + 4 > end:
            raise Refusal(
                "a truncated sub-item in the A-ASSOCIATE-RQ", abort_pdu(INVALID_PARAMETER)
            )
        sub_type = body[offset]
        (length,) = struct.unpack_from(">H", body, offset + 2)
        if offset + 4 + length > end:
            raise Refusal(
                f"sub-item 0x{sub_type:02X} runs past the end of its item",
                abort_pdu(INVALID_PARAMETER),
            )
        if sub_type in uids:
            _check_uid(body[offset + 4 : offset + 4 + length], uids[sub_type])
        offset += 4 + length


def wait_for(sock: socket.socket, timeout: float, write: bool = False) -> bool:
    """The socket is readable (or writable) within ``timeout`` seconds. poll(), not
    select(): select() cannot take a descriptor above 1023, which a busy box reaches."""
    poller = select.poll()
    poller.register(sock, select.POLLOUT if write else select.POLLIN)
    return bool(poller.poll(max(0.0, timeout) * 1000))


def _titles(rq: bytes) -> tuple[str, str]:
    """(calling, called) AE titles of a checked A-ASSOCIATE-RQ (header included)."""
    return rq[26:42].decode("ascii").strip(), rq[10:26].decode("ascii").strip()


def read_until(sock: socket.socket, size: int, deadline: float, idle: float | None = None) -> bytes:
    """``size`` bytes, or fewer when the peer closed, ``deadline`` (monotonic) passed or
    nothing came for ``idle`` seconds."""
    out = bytearray()
    tls = isinstance(sock, ssl.SSLSocket)
    try:
        previous = sock.gettimeout()
    except OSError:
        return b""
    try:
        while len(out) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wait = remaining if idle is None else min(remaining, idle)
            # A TLS socket may hold decrypted bytes select cannot see; and a readable
            # TLS socket may hold only part of a record, so the read itself has a limit.
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                if not wait_for(sock, wait):
                    break
            if tls:
                sock.settimeout(wait)
            chunk = sock.recv(min(size - len(out), 65536))
            if not chunk:
                break
            out.extend(chunk)
    except (OSError, ValueError):
        pass
    finally:
        if tls:
            with contextlib.suppress(OSError):
                sock.settimeout(previous)
    return bytes(out)


class _Late(Exception):
    """The peer closed or missed the deadline; ``got`` bytes of the PDU had arrived."""

    def __init__(self, got: int) -> None:
        super().__init__(got)
        self.got = got


def read_first_pdu(sock: socket.socket, timeout: float) -> bytes:
    """The A-ASSOCIATE-RQ, header included, complete within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    header = read_until(sock, 6, deadline)
    if len(header) < 6:
        raise _Late(len(header))
    pdu_type, _, length = struct.unpack(">BBL", header)
    if pdu_type != 0x01:
        name = PDU_TYPES.get(pdu_type)
        # PS3.8 9.2 Sta2: any other PDU is answered with A-ABORT (AA-1).
        reason = UNEXPECTED_PDU if name else UNRECOGNIZED_PDU
        what = name or f"unknown PDU type 0x{pdu_type:02X}"
        raise Refusal(f"{what} before A-ASSOCIATE-RQ", abort_pdu(reason))
    if length > PRE_ASSOCIATION_PDU_CAP:
        raise Refusal(
            f"an A-ASSOCIATE-RQ of {length} bytes (at most {PRE_ASSOCIATION_PDU_CAP})",
            abort_pdu(INVALID_PARAMETER),
        )
    body = read_until(sock, length, deadline)
    if len(body) < length:
        raise _Late(6 + len(body))
    check_associate_rq(body)
    return header + body


class EdgeSocket(AssociationSocket):
    """pynetdicom's socket for one association: first replays the A-ASSOCIATE-RQ the edge
    has read, then serves each read within ``pdu_timeout`` and below ``cap`` bytes. A
    read that cannot be served returns short, which pynetdicom treats as a closed
    connection (PS3.8 Evt17)."""

    def __init__(
        self, assoc: Association, client: socket.socket, first: bytes, pdu_timeout: float, cap: int
    ) -> None:
        super().__init__(assoc, client_socket=client)
        self._replay = bytearray(first)
        self.pdu_timeout = pdu_timeout
        self.cap = cap

    @property
    def ready(self) -> bool:
        """As pynetdicom's (3.0.4), with poll() instead of select() (which fails, and so
        closes the connection, once the box holds more than 1023 descriptors)."""
        if self._replay:
            return True
        sock = self.socket
        if sock is None or self._is_connected is False:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        try:
            return wait_for(sock, 0)
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # the transport connection closed
            return False

    def recv(self, nr_bytes: int) -> bytearray:
        out = bytearray()
        if self._replay:
            out += self._replay[:nr_bytes]
            del self._replay[: len(out)]
            if len(out) == nr_bytes:
                return out
        if nr_bytes > self.cap:
            log.warning(
                "association from %s aborted: a PDU of %d bytes (at most %d)",
                self._peer(), nr_bytes, self.cap,
            )  # fmt: skip
            return out
        sock = self.socket
        if sock is None:
            return out
        want = nr_bytes - len(out)
        start = time.monotonic()
        idle = self.assoc.network_timeout
        rest = read_until(sock, want, start + self.pdu_timeout, idle)
        out += rest
        partial = 0 < len(out) < nr_bytes  # a PDU cut off, not a connection ending between
        if len(rest) < want and sock.fileno() >= 0 and (partial or self._late(start)):
            waited = time.monotonic() - start
            log.warning(
                "association from %s closed: %s",
                self._peer(),
                f"a PDU not complete within {self.pdu_timeout} s"
                if waited >= self.pdu_timeout
                else "the connection ended or went silent inside a PDU",
            )
        return out

    def _late(self, start: float) -> bool:
        return time.monotonic() - start >= self.pdu_timeout

    def _peer(self) -> str:
        try:
            info = self.assoc.requestor
            return f"{info.ae_title or '?'}@{info.address}"
        except Exception:
            return "?"


class _Budget:
    """Connections not yet associated, and connections per address.

    When a budget is full, the connection that has waited longest to associate makes
    room: a real peer sends its A-ASSOCIATE-RQ within milliseconds of connecting, so the
    one waiting longest is almost always a silent or trickling socket, and a flood of
    them (however fast) cannot keep a real peer out.
    """

    STALE = 0.0  # least time waited before a connection may be evicted (0: any)

    def __init__(self, max_pending: int, max_per_address: int) -> None:
        self.max_pending = max_pending
        self.max_per_address = max_per_address
        self.waiting: dict[socket.socket, tuple[str, float]] = {}  # not yet associated
        self.per_address: Counter[str] = Counter()
        self.lock = threading.Lock()

    @property
    def pending(self) -> int:
        return len(self.waiting)

    def admit(self, sock: socket.socket, address: str) -> tuple[str | None, socket.socket | None]:
        """(None, evicted socket or None) if admitted and counted, else (why not, None)."""
        now = time.monotonic()
        with self.lock:
            victim = None
            if len(self.waiting) >= self.max_pending:
                victim = self._stale(now, None)
                if victim is None:
                    return f"{len(self.waiting)} connections are waiting to associate", None
            elif self.per_address[address] >= self.max_per_address:
                victim = self._stale(now, address)
                if victim is None:
                    return f"{self.per_address[address]} connections are open from it", None
            if victim is not None:
                victim_address, _ = self.waiting.pop(victim)
                self._drop(victim_address)
            self.waiting[sock] = (address, now)
            self.per_address[address] += 1
            return None, victim

    def _stale(self, now: float, address: str | None) -> socket.socket | None:
        oldest = None
        for sock, (addr, since) in self.waiting.items():  # insertion order: oldest first
            if address is None or addr == address:
                oldest = (sock, since)
                break
        if oldest is not None and now - oldest[1] >= self.STALE:
            return oldest[0]
        return None

    def replace(self, old: socket.socket, new: socket.socket) -> None:
        """The waiting connection's socket is now ``new`` (wrapped in TLS)."""
        with self.lock:
            if old in self.waiting:
                self.waiting[new] = self.waiting.pop(old)

    def associated(self, sock: socket.socket) -> bool:
        """Moved from waiting to associated; False if it was evicted meanwhile."""
        with self.lock:
            return self.waiting.pop(sock, None) is not None

    def release(self, sock: socket.socket, address: str) -> None:
        """The connection ended (waiting or associated); an evicted one was released."""
        with self.lock:
            if sock in self.waiting:
                del self.waiting[sock]
                self._drop(address)

    def release_associated(self, address: str) -> None:
        with self.lock:
            self._drop(address)

    def _drop(self, address: str) -> None:
        self.per_address[address] -= 1
        if self.per_address[address] <= 0:
            del self.per_address[address]


class _Throttled:
    """One log line per address and reason every ``every`` seconds, with a count."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.seen: dict[tuple[str, str], tuple[float, int]] = {}
        self.lock = threading.Lock()

    def warning(self, address: str, reason: str, text: str) -> None:
        now = time.monotonic()
        with self.lock:
            first, count = self.seen.get((address, reason), (0.0, 0))
            if now - first < self.every:
                self.seen[(address, reason)] = (first, count + 1)
                return
            if len(self.seen) > 1024:
                self.seen.clear()
            self.seen[(address, reason)] = (now, 0)
        more = f" (and {count} more like it)" if count else ""
        log.warning("%s%s", text, more)


class EdgeHandler(RequestHandler):
    """pynetdicom's request handler, given the A-ASSOCIATE-RQ the edge has read."""

    request: Any

    def handle(self) -> None:
        sock, first = self.request
        self.request = sock
        assoc = self._create_edge_association(sock, first)
        server: EdgeServer = self.server  # type: ignore[assignment]
        server.edge_associations[threading.get_ident()] = assoc
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()

    def _create_edge_association(self, sock: socket.socket, first: bytes) -> Association:
        """An acceptor as pynetdicom makes it, on an EdgeSocket that replays ``first``."""
        server: EdgeServer = self.server  # type: ignore[assignment]
        # A PDU's length counts its 6-byte header (PS3.8 9.3.1 counts only the rest).
        cap = (self.ae.maximum_pdu_size or UNLIMITED_PDU_CAP) + 6
        return compat.new_acceptor(
            server, self.ae, self.local, self.remote,
            lambda assoc: EdgeSocket(assoc, sock, first, server.pdu_timeout, cap),
        )  # fmt: skip


class EdgeServer(ThreadedAssociationServer):
    """The appliance's DICOM listener (see the module docstring)."""

    request_queue_size = 128  # socketserver's 5 drops connects during a burst
    daemon_threads = True

    def __init__(self, *args: Any, settings: Any, **kwargs: Any) -> None:
        kwargs["request_handler"] = EdgeHandler
        self.settings = settings
        self.budget = _Budget(settings.max_pending, settings.max_per_address)
        self.pdu_timeout = float(settings.pdu_timeout)
        self.associate_timeout = float(settings.associate_timeout)
        self.edge_associations: dict[int, Association] = {}
        self._throttle = _Throttled()
        self.tls: ssl.SSLContext | None = kwargs.pop("tls", None)
        # gate.admits(calling, called, address, tls, peer_cert) -> bool: the device policy.
        self.gate: Any = kwargs.pop("gate", None)
        super().__init__(*args, **kwargs)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept only: a TLS handshake happens in the connection's own thread, within
        the associate timeout (pynetdicom would do it here, in the accept loop, where one
        silent peer stops every other)."""
        assert self.socket is not None
        return self.socket.accept()

    def _handshake(self, sock: socket.socket, address: str) -> ssl.SSLSocket | None:
        """The TLS handshake within ``dicom.associate_timeout``; None (logged) if it fails."""
        assert self.tls is not None
        deadline = time.monotonic() + self.associate_timeout
        try:
            tls = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError) as exc:
            log.warning("TLS connection from %s refused: %s", address, exc)
            return None
        self.budget.replace(sock, tls)
        tls.setblocking(False)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no TLS handshake within {self.associate_timeout} s")
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    wait_for(tls, remaining)
                except ssl.SSLWantWriteError:
                    wait_for(tls, remaining, write=True)
        except Exception as exc:  # ssl errors, timeouts, a socket closed by an eviction
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            self._throttle.warning(
                address,
                "tls",
                f"TLS connection from {address} refused: {reason}"
                + (" (plain DICOM on the TLS port?)" if "VERSION" in str(reason) else ""),
            )
            self._close(tls)
            self.budget.replace(tls, sock)  # released under the socket the caller holds
            return None
        tls.setblocking(True)
        return tls

    def process_request(self, request: Any, client_address: Any) -> None:
        """In the accept loop: admit within the budgets, or close at once."""
        address = str(client_address[0])
        why, evicted = self.budget.admit(request, address)
        if why is not None:
            self._throttle.warning(address, "budget", f"connection from {address} refused: {why}")
            self._close(request)
            return
        if evicted is not None:
            log.debug("a connection that sent nothing made room for one from %s", address)
            self._close(evicted)
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(
            target=self._serve, args=(request, client_address), name=f"edge@{address}",
            daemon=True,
        ).start()  # fmt: skip

    def _serve(self, sock: socket.socket, client_address: Any) -> None:
        address = str(client_address[0])
        try:
            if self.tls is not None:
                wrapped = self._handshake(sock, address)
                if wrapped is None:
                    return
                sock = wrapped
            try:
                first = read_first_pdu(sock, self.associate_timeout)
            except _Late as late:
                if late.got:
                    self._throttle.warning(
                        address, "late",
                        f"connection from {address} closed: no complete A-ASSOCIATE-RQ "
                        f"within {self.associate_timeout} s",
                    )  # fmt: skip
                else:
                    log.debug("connection from %s closed before any PDU", address)
                return
            except Refusal as refusal:
                self._throttle.warning(
                    address, str(refusal), f"connection from {address} refused: {refusal}"
                )
                if refusal.pdu:
                    with contextlib.suppress(OSError):
                        sock.settimeout(1.0)
                        sock.sendall(refusal.pdu)
                return
            calling, called = _titles(first)
            tls = self.tls is not None
            peer = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
            if self.gate is not None and not self.gate.admits(calling, called, address, tls, peer):
                log.warning(
                    "association from %s@%s rejected by the device policy (see the audit log)",
                    calling, address,
                )  # fmt: skip
                with contextlib.suppress(OSError):
                    sock.settimeout(1.0)
                    sock.sendall(reject_pdu(1, 1, 3))  # calling AE title not recognized
                return
            if not self.budget.associated(sock):
                return  # evicted while its A-ASSOCIATE-RQ was arriving
            try:
                self._associate(sock, first, client_address)
            finally:
                self.budget.release_associated(address)
        finally:
            self.budget.release(sock, address)
            self._close(sock)

    def _associate(self, sock: socket.socket, first: bytes, client_address: Any) -> None:
        """Hand the connection to pynetdicom and wait for its association to end."""
        try:
            # EdgeHandler takes the socket and the A-ASSOCIATE-RQ read from it.
            self.finish_request((sock, first), client_address)  # type: ignore[arg-type]
        except Exception:
            log.exception("association from %s could not start", client_address[0])
            return
        assoc = self.edge_associations.pop(threading.get_ident(), None)
        if assoc is not None:
            assoc.join()

    @staticmethod
    def _close(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def server_close(self) -> None:
        super().server_close()
        with self.budget.lock:
            waiting = list(self.budget.waiting)
        for sock in waiting:
            self._close(sock)

    def connection_counts(self) -> dict[str, int]:
        """For health: connections waiting to associate, and addresses connected."""
        with self.budget.lock:
            return {"pending": self.budget.pending, "addresses": len(self.budget.per_address)}


def start_server(ae: Any, address: tuple[str, int], settings: Any, **kwargs: Any) -> EdgeServer:
    """As ``ae.start_server(address, block=False, ...)``, with the edge in front."""
    server = ae.make_server(address, server_class=EdgeServer, settings=settings, **kwargs)
    thread = threading.Thread(
        target=server.serve_forever, name=f"AcceptorServer@{datetime.now():%Y%m%d%H%M%S}",
        daemon=True,
    )  # fmt: skip
    thread.start()
    ae._servers.append(server)
    return server
