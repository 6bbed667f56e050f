"""Fast C-STORE requests: a spooled file streamed as P-DATA-TF PDUs on the association's socket.

pynetdicom sends a C-STORE through its DIMSE and DUL layers: every PDU (16 KB for
Orthanc and DCMTK) passes queues and the state machine, and the reply is read 4 KB at a
time by a reactor that polls with 1 ms sleeps: about 2.7 ms of CPU an image. Here
pynetdicom still negotiates, releases and aborts the association, but for a C-STORE
whose stored transfer syntax was accepted the sender takes the socket over: the command
set is encoded here (PS3.7 9.3.1.1, E.1), the data set is read from the PS3.10 file
after its File Meta group in chunks and written as P-DATA-TF PDUs no larger than the
peer's maximum (PS3.8 9.3.5), and the C-STORE-RSP is read from the socket with exact
reads. Anything else on the wire (A-ABORT, A-RELEASE-RQ, a closed connection, a timeout,
garbage) gives the socket back and aborts the association through pynetdicom; the
caller then retries.

The DUL reactor reads the socket only in ``_is_transport_event`` and writes it only in
its state machine's actions; ``install_guard`` (an EVT_CONN_OPEN handler, so it runs in
the reactor's own thread before any data transfer) wraps both on the DUL instance so
that they run only under the guard's lock. A C-STORE holds that lock from its first
byte out to its response's last byte in, taken between two reactor actions: the reactor
is never in the middle of a read or a write when we write, never reads what is ours,
and an A-ABORT or A-RELEASE-RQ that another thread asks for goes out after the
exchange, not inside one of our PDUs.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from appliance.dicom import compat
from appliance.forward.wire import (
    COMMAND,
    COMMAND_FIELD,
    DATASET_TYPE,
    ERROR_COMMENT,
    LAST,
    NO_DATASET,
    P_DATA_TF,
    PDV_OVERHEAD,
    RESPONDED_TO,
    STATUS,
    Bytes,
    WireError,
    command,
    dataset_offset,
    fragments,
    parse_command,
    pdv_header,
    pdv_items,
    uid_bytes,
    us,
    us_of,
)

A_RELEASE_RQ = 0x05
A_ABORT = 0x07
C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
DATASET_PRESENT = 0x0001
PRIORITY_LOW = 0x0002  # PS3.7 9.1.1.1.7; what pynetdicom's send_c_store sends by default
UNLIMITED_PDV = 1 << 20  # data bytes a PDV when the peer sets no maximum PDU length
BATCH_BYTES = 1 << 20  # file bytes read and written with one sendall
MAX_RESPONSE_PDU = 1 << 20  # a longer PDU is not a C-STORE-RSP


class Unsendable(ValueError):
    """The spooled file has no data set to send."""


# -- encoding and decoding (no I/O) ---------------------------------------------------


def command_set(
    sop_class_uid: str,
    sop_instance_uid: str,
    message_id: int,
    priority: int = PRIORITY_LOW,
    originator: tuple[str, int] | None = None,
) -> bytes:
    """A C-STORE-RQ command set with a data set following (PS3.7 9.3.1.1, E.1); with
    ``originator`` (AE title, Message ID) that of a C-MOVE sub-operation (9.1.1.1)."""
    elements = [
        (0x0002, uid_bytes(sop_class_uid)),
        (COMMAND_FIELD, us(C_STORE_RQ)),
        (0x0110, us(message_id)),
        (0x0700, us(priority)),
        (DATASET_TYPE, us(DATASET_PRESENT)),
        (0x1000, uid_bytes(sop_instance_uid)),
    ]
    if originator is not None:
        ae = originator[0].strip().encode("ascii")[:16]
        elements.append((0x1030, ae + b" " if len(ae) % 2 else ae))
        elements.append((0x1031, us(originator[1])))
    return command(elements)


def c_store_response(fields: dict[int, bytes], message_id: int) -> tuple[int, str]:
    """(Status, Error Comment) of a C-STORE-RSP answering ``message_id`` (PS3.7 9.3.1.2)."""
    command_field = us_of(fields, COMMAND_FIELD)
    if command_field != C_STORE_RSP:
        raise WireError(f"a command 0x{command_field:04X} where a C-STORE-RSP was due")
    answered = us_of(fields, RESPONDED_TO)
    if answered != message_id:
        raise WireError(f"a response to message {answered} while {message_id} waited")
    if DATASET_TYPE in fields and us_of(fields, DATASET_TYPE) != NO_DATASET:
        raise WireError("a C-STORE-RSP announcing a data set")
    comment = fields.get(ERROR_COMMENT, b"").decode("ascii", "replace").rstrip(" \0")
    return us_of(fields, STATUS), comment


def request_pdus(
    command: bytes,
    f: BinaryIO | io.RawIOBase,
    length: int,
    context_id: int,
    max_data: int,
    chunk: bytearray,
) -> Iterator[bytes]:
    """A C-STORE-RQ as P-DATA-TF PDUs (PS3.8 9.3.5, E.2), in batches of whole PDUs: the
    command set, then ``length`` bytes of data set read from ``f``, ``len(chunk)`` at a
    time (a multiple of ``max_data`` splits the data as pynetdicom does)."""
    parts: list[Bytes] = [fragments(command, context_id, max_data, COMMAND)]
    view = memoryview(chunk)
    left = length
    while left:
        n = min(left, len(view))
        try:
            got = f.readinto(view[:n])  # type: ignore[union-attr]
        except OSError as exc:
            raise WireError(f"reading the spooled file failed ({exc})", broken=True) from exc
        if got != n:
            raise WireError("the spooled file is shorter than it was", broken=True)
        left -= n
        for start in range(0, n, max_data):
            piece = view[start : min(start + max_data, n)]
            last = LAST if not left and start + max_data >= n else 0
            parts.append(pdv_header(context_id, len(piece), last))
            parts.append(piece)
        yield b"".join(parts)
        parts = []


def read_response(
    sock: socket.socket,
    context_id: int,
    message_id: int,
    timeout: float,
    other: Callable[[bytes], object] | None = None,
) -> tuple[int, str]:
    """(Status, Error Comment) of the C-STORE-RSP read from ``sock`` within ``timeout``
    seconds; its command set may come in several PDVs and PDUs (PS3.8 9.3.5, E.2).

    ``other``, on an association the peer opened (C-GET sub-operations): a P-DATA-TF
    PDU none of whose PDVs is on ``context_id`` (say a C-CANCEL-RQ of the C-GET, on the
    Query/Retrieve context) is handed to it whole, for pynetdicom, and the wait goes on."""
    deadline = time.monotonic() + timeout
    command = bytearray()
    while True:
        pdu_type, body = _read_pdu(sock, deadline, timeout)
        if (
            other is not None
            and pdu_type == P_DATA_TF
            and not command
            and all(cx != context_id for cx, _, _ in pdv_items(body))
        ):
            other(struct.pack(">BBI", pdu_type, 0, len(body)) + bytes(body))
            continue
        if pdu_type == A_ABORT:
            source, reason = (body[2], body[3]) if len(body) >= 4 else (0, 0)
            raise WireError(f"the peer aborted the association (source {source}, reason {reason})")
        if pdu_type == A_RELEASE_RQ:
            raise WireError("the peer asked for a release while a C-STORE waited")
        if pdu_type != P_DATA_TF:
            raise WireError(f"a PDU of type 0x{pdu_type:02X} where a response was due")
        items = list(pdv_items(body))
        for i, (cx, header, fragment) in enumerate(items):
            if cx != context_id or not header & COMMAND:
                raise WireError("a data set or another context where a response was due")
            command += fragment
            if header & LAST:
                if i != len(items) - 1:
                    raise WireError("data after the response's last fragment")
                return c_store_response(parse_command(command), message_id)


def _read_pdu(sock: socket.socket, deadline: float, timeout: float) -> tuple[int, bytearray]:
    header = _read_exact(sock, 6, deadline, timeout)
    pdu_type, _, length = struct.unpack(">BBI", header)
    if length > MAX_RESPONSE_PDU:
        raise WireError(f"a PDU of {length} bytes where a response was due")
    return pdu_type, _read_exact(sock, length, deadline, timeout)


def _read_exact(sock: socket.socket, n: int, deadline: float, timeout: float) -> bytearray:
    """Exactly ``n`` bytes (never more: what follows is pynetdicom's)."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise WireError(f"no C-STORE response within {timeout:g} s")
        sock.settimeout(left)
        try:
            k = sock.recv_into(view[got:])
        except TimeoutError as exc:
            raise WireError(f"no C-STORE response within {timeout:g} s") from exc
        except OSError as exc:
            raise WireError(f"reading the response failed ({exc})") from exc
        if not k:
            raise WireError("the peer closed the connection")
        got += k
    return buf


# -- the file --------------------------------------------------------------------------


# -- the socket ------------------------------------------------------------------------


class SocketGuard:
    """Keeps pynetdicom's DUL reactor off the socket while a C-STORE here owns it.

    The reactor reads the socket only in ``_is_transport_event`` and writes it only in
    the state machine's actions (``do_action``); both run under ``lock`` here. While the
    lock is taken, a read is skipped and an action (say an A-ABORT asked for by another
    thread) waits.
    """

    def __init__(self, dul: Any) -> None:
        self.lock = threading.Lock()
        self.skipped = 0  # reactor rounds that left the socket alone
        self.acting = 0  # reactor actions waiting for the lock or running (0 or 1)
        compat.wrap_reactor(dul, self._poll, self._act)

    def _poll(self, transport_event: Callable[[], bool]) -> bool:
        """The reactor's socket check, skipped while the socket is ours."""
        if not self.lock.acquire(blocking=False):
            self.skipped += 1
            return False
        try:
            return bool(transport_event())
        finally:
            self.lock.release()

    def _act(self, do_action: Callable[[str], None], event: str) -> None:
        """A state machine action (PS3.8 9.2), after the socket is given back."""
        self.acting += 1
        try:
            with self.lock:
                do_action(event)
        finally:
            self.acting -= 1

    def take(self, timeout: float) -> bool:
        """Hold the lock, between two reactor actions; False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            if not self.acting:
                return True
            self.lock.release()  # let the pending action run first
            time.sleep(0.0005)
        return False


def install_guard(event: Any) -> None:
    """EVT_CONN_OPEN: guard the DUL's socket reads (runs in the DUL reactor's thread)."""
    SocketGuard(event.assoc.dul)


def guard_of(assoc: Any) -> SocketGuard | None:
    """The association's SocketGuard, if ``install_guard`` ran for it."""
    owner = getattr(compat.reactor_wrapper(assoc.dul), "__self__", None)
    return owner if isinstance(owner, SocketGuard) else None


class StoreWire:
    """C-STORE requests written on one association's socket, by one thread at a time."""

    def __init__(self, assoc: Any, guard: SocketGuard, timeout: float) -> None:
        self.assoc = assoc
        self.guard = guard
        self.timeout = timeout  # seconds for each write, and for the response
        # The peer: the acceptor of our own association, or (C-GET sub-operations on
        # an association a peer opened) its requestor.
        peer = assoc.requestor if assoc.is_acceptor else assoc.acceptor
        peer_max = int(peer.maximum_length or 0)
        self.max_data = max(peer_max - PDV_OVERHEAD, 1) if peer_max else UNLIMITED_PDV
        self.chunk = bytearray(max(1, BATCH_BYTES // self.max_data) * self.max_data)
        self.message_id = 0
        self.failure = ""  # why the last one failed
        # What the peer sends meanwhile on its own association (C-GET: a C-CANCEL)
        # goes to pynetdicom as its reader would have given it.
        self._other: Callable[[bytes], object] | None = (
            functools.partial(compat.hand_pdu_to_dul, assoc.dul) if assoc.is_acceptor else None
        )

    def store(
        self,
        path: Path | io.RawIOBase | BinaryIO,
        context_id: int,
        sop_class_uid: str,
        sop_instance_uid: str,
        originator: tuple[str, int] | None = None,
    ) -> tuple[int, str] | None:
        """Send the data set of a file (a path, or a spooled instance opened by
        ``Spool.open``: a journal record is read straight from its segment; ``originator``:
        of a C-MOVE, see ``command_set``); (Status, Error Comment), or None when the
        association failed (it is aborted then). A missing file raises FileNotFoundError."""
        self.message_id = self.message_id % 0xFFFF + 1
        command = command_set(
            sop_class_uid, sop_instance_uid, self.message_id, originator=originator
        )
        named = isinstance(path, Path)
        opened = open(path, "rb") if isinstance(path, Path) else contextlib.nullcontext(path)  # noqa: SIM115
        with opened as f:
            offset = dataset_offset(f, path if isinstance(path, Path) else None)
            total = os.fstat(f.fileno()).st_size if named else f.seek(0, io.SEEK_END)
            length = total - offset
            if length <= 0:
                raise Unsendable("the spooled file holds no data set")
            f.seek(offset)
            try:
                with self._owned() as sock:
                    self._send(sock, f, length, context_id, command)
                    rsp = read_response(
                        sock, context_id, self.message_id, self.timeout, self._other
                    )
            except WireError as exc:
                self._abort(str(exc), exc.broken)
                return None
        return rsp

    @contextlib.contextmanager
    def _owned(self) -> Iterator[socket.socket]:
        """The raw socket, the DUL reactor kept off it; given back with its timeout."""
        if not self.guard.take(self.timeout):
            raise WireError("the DUL reactor did not let go of the socket")
        dul = self.assoc.dul
        try:
            sock = compat.raw_socket(dul)
            if (
                sock is None
                or not self.assoc.is_established
                or compat.dul_state(dul) != "Sta6"
                or compat.events_pending(dul)
            ):
                # The PACS aborted between two messages, or a release or abort is due.
                raise WireError("the association ended before the C-STORE")
            previous = sock.gettimeout()
            try:
                yield sock
            finally:
                with contextlib.suppress(OSError):
                    sock.settimeout(previous)
                compat.restart_idle_timer(dul)
        finally:
            self.guard.lock.release()

    def _send(
        self,
        sock: socket.socket,
        f: BinaryIO | io.RawIOBase,
        length: int,
        context_id: int,
        command: bytes,
    ) -> None:
        """The command, then the data set as P-DATA-TF PDUs, about a MB a write."""
        sock.settimeout(self.timeout)
        for batch in request_pdus(command, f, length, context_id, self.max_data, self.chunk):
            try:
                sock.sendall(batch)
            except OSError as exc:
                raise WireError(f"writing the data set failed ({exc})", broken=True) from exc
            compat.restart_idle_timer(self.assoc.dul)  # not idle: the network timeout waits

    def _abort(self, reason: str, broken: bool) -> None:
        """End the association through pynetdicom; a half-written PDU shuts the socket first."""
        self.failure = reason
        if broken:
            sock = compat.raw_socket(self.assoc.dul)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        if compat.dul_state(self.assoc.dul) == "Sta6":
            self.assoc.abort()
        else:  # the DUL already handles the peer's A-ABORT or a closed connection
            self.assoc.kill()
