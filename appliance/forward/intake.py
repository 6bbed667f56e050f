"""Fast C-STORE receive: P-DATA read straight from the association's socket into the spool.

pynetdicom moves every PDU through its Python reactor (4 KB socket reads, an event
queue, the state machine, 1 ms sleeps when a queue is empty) before a C-STORE handler
sees the data set: a handler that does nothing already runs at a fifth of DCMTK
storescp's speed. Here the DUL thread's PDU reader is replaced for associations on the
appliance's listener. While the association is established (Sta6), P-DATA-TF PDUs
(PS3.8 9.3.5) are read whole from the socket:

- a C-STORE-RQ command (PS3.7 9.3.1.1) on a storage presentation context starts a
  stream: each data set fragment goes to a new file in ``spool/tmp`` as it arrives,
  behind a File Meta group (PS3.10 7.1); the last fragment ends it, the receiver makes
  the file durable and queues it, and the C-STORE-RSP is written on the socket; nothing
  of the data set is kept in memory beyond the PDU being read;
- every other message (C-ECHO, N-ACTION, C-FIND ...) and every other PDU (release,
  abort) goes on to pynetdicom, byte for byte, as if this reader were not there.

A message may end and the next begin without a trip through pynetdicom's reactor:
while the peer keeps sending, the reader waits for the next PDU itself, in slices, so
an abort asked for by the appliance (its provider queue) is never held up for long.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from appliance import status
from appliance.access import Access
from appliance.dicom import compat, edge
from appliance.forward import wire
from appliance.forward.receiver import SERVICE, Receiver, refusal_for

log = logging.getLogger(__name__)

HEAD_BYTES = 64 * 1024  # the start of a data set kept for the routing header
NO_LIMIT_CAP = 64 << 20  # the largest PDU read when no maximum was announced (dicom.max_pdu 0)
WAIT_SLICE = 0.05  # seconds a wait for the next PDU lasts before the reactor gets a turn
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1421.1"
IMPLEMENTATION_VERSION = "APPLIANCE_1"

_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ UC UN UR UT SV UV".split())
IMPLICIT_LE = "1.2.840.10008.1.2"
NOT_PLAIN = frozenset({"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"})  # big endian, deflate


class ProtocolViolation(Exception):
    """The peer broke PS3.7/PS3.8 rules mid-message; pynetdicom aborts the association."""


@dataclass
class Command:
    """The elements of a received command set this reader needs (PS3.7 E.1)."""

    field: int
    message_id: int
    sop_class: str
    sop_instance: str
    has_dataset: bool


def parse_command(data: bytes | bytearray) -> Command | None:
    """Decode an implicit VR little endian command set; None when it is not one."""
    try:
        fields = wire.parse_command(data)
        field = wire.us_of(fields, wire.COMMAND_FIELD)
    except wire.WireError:
        return None
    return Command(
        field=field,
        message_id=wire.us_of(fields, wire.MESSAGE_ID, 0),
        sop_class=wire.ui_of(fields, wire.AFFECTED_SOP_CLASS),
        sop_instance=wire.ui_of(fields, wire.AFFECTED_SOP_INSTANCE),
        has_dataset=wire.us_of(fields, wire.DATASET_TYPE, wire.NO_DATASET) != wire.NO_DATASET,
    )


def store_response(
    message_id: int, sop_class: str, sop_instance: str, code: int, comment: str = ""
) -> bytes:
    """A C-STORE-RSP command set, implicit VR little endian (PS3.7 9.3.1.2, E.1)."""
    elements = [
        (wire.AFFECTED_SOP_CLASS, wire.uid_bytes(sop_class)),
        (wire.COMMAND_FIELD, wire.us(wire.C_STORE_RSP)),
        (wire.RESPONDED_TO, wire.us(message_id)),
        (wire.DATASET_TYPE, wire.us(wire.NO_DATASET)),
        (wire.STATUS, wire.us(code)),
    ]
    if comment:
        text = comment[:64].encode("ascii", "replace")
        elements.append((wire.ERROR_COMMENT, text + b" " if len(text) % 2 else text))
    elements.append((wire.AFFECTED_SOP_INSTANCE, wire.uid_bytes(sop_instance)))
    return wire.command(elements)


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str) -> bytes:
    """Preamble, prefix and File Meta Information group of a PS3.10 file (explicit VR LE)."""

    def el(elem: int, vr: bytes, value: bytes) -> bytes:
        if vr == b"OB":
            return (
                struct.pack("<HH", 0x0002, elem)
                + vr
                + b"\0\0"
                + struct.pack("<I", len(value))
                + value
            )
        return struct.pack("<HH", 0x0002, elem) + vr + struct.pack("<H", len(value)) + value

    ae = source_ae.encode("ascii", "replace")
    body = (
        el(0x0001, b"OB", b"\x00\x01")
        + el(0x0002, b"UI", wire.uid_bytes(sop_class))
        + el(0x0003, b"UI", wire.uid_bytes(sop_instance))
        + el(0x0010, b"UI", wire.uid_bytes(transfer_syntax))
        + el(0x0012, b"UI", wire.uid_bytes(IMPLEMENTATION_CLASS_UID))
        + el(
            0x0013,
            b"SH",
            IMPLEMENTATION_VERSION.encode("ascii")
            + (b" " if len(IMPLEMENTATION_VERSION) % 2 else b""),
        )
    )
    if ae:
        body += el(0x0016, b"AE", ae + b" " if len(ae) % 2 else ae)
    return b"\0" * 128 + b"DICM" + el(0x0000, b"UL", struct.pack("<I", len(body))) + body


def header_values(data: bytes | bytearray, transfer_syntax: str) -> dict[int, str] | None:
    """SOP Instance UID (0008,0018) and Modality (0008,0060) from the start of a little
    endian data set; None when the start is not enough or not plain (deflated, big
    endian, undefined lengths): the caller then reads the file with pydicom."""
    if transfer_syntax in NOT_PLAIN:
        return None
    explicit = transfer_syntax != IMPLICIT_LE
    wanted = {0x00080018: "", 0x00080060: ""}
    pos, end = 0, len(data)
    while True:
        if pos + 8 > end:
            return None
        group, elem = struct.unpack_from("<HH", data, pos)
        tag = (group << 16) | elem
        if tag > 0x00080060:
            return wanted
        if explicit:
            vr = bytes(data[pos + 4 : pos + 6])
            if vr in _LONG_VRS:
                if pos + 12 > end:
                    return None
                length = struct.unpack_from("<I", data, pos + 8)[0]
                pos += 12
            else:
                length = struct.unpack_from("<H", data, pos + 6)[0]
                pos += 8
        else:
            length = struct.unpack_from("<I", data, pos + 4)[0]
            pos += 8
        if length == 0xFFFFFFFF or pos + length > end:
            return None
        if tag in wanted:
            wanted[tag] = bytes(data[pos : pos + length]).decode("ascii", "replace").strip("\0 ")
        pos += length


class _Sink:
    """One data set on its way to a file in ``spool/tmp``, written as it comes.

    (Starting the write-back of each fragment at once with sync_file_range was tried: it
    cost more CPU than the final fdatasync saved, 0.41 against 0.53 s of CPU for 300
    images.)"""

    def __init__(self, receiver: Receiver, meta: bytes) -> None:
        self.fd, self.path = receiver.spool.new_temp()
        self.size = 0
        self.head = bytearray()
        self.write(meta, header=False)

    def write(self, data: Any, header: bool = True) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.size += len(data)
        if header and len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]

    def close(self) -> None:
        try:
            os.fdatasync(self.fd)
        finally:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class _RecordSink(_Sink):
    """One data set on its way into a journal record (``appliance/forward/journal.py``),
    written in place in its segment as it comes; the receiver commits it."""

    def __init__(self, receiver: Receiver, meta: bytes, sop_instance: str) -> None:
        self.append = receiver.spool.journal.begin(sop_instance)
        self.fd, self.path = -1, ""
        self.size = 0
        self.head = bytearray()
        self.write(meta, header=False)

    def write(self, data: Any, header: bool = True) -> None:
        self.append.write(data)
        self.size += len(data)
        if header and len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]

    def close(self) -> None:
        """Nothing to do: ``Receiver.admit_record`` makes the record durable."""

    def discard(self) -> None:
        self.append.abort()


class Intake:
    """The PDU reader of one association: C-STORE streams here, everything else to pynetdicom."""

    def __init__(
        self, dul: Any, receiver: Receiver, access: Access, storage_uids: frozenset[str]
    ) -> None:
        self.dul = dul
        self.receiver = receiver
        self.access = access
        self.storage_uids = storage_uids
        self.original: Callable[[], None] = lambda: None  # pynetdicom's, once installed
        self.max_pdu = int(dul.assoc.acceptor.maximum_length or 0) or NO_LIMIT_CAP
        self.contexts: dict[int, tuple[str, str]] | None = None
        self.accepted: frozenset[int] | None = None
        self.mode: str | None = None  # None between messages, "fast", or "pynetdicom"
        self.command = bytearray()
        self.held: list[bytes] = []  # raw PDUs of a command not yet decided
        self.context_id = 0
        self.request: Command | None = None
        self.sink: _Sink | None = None
        self.refusal: tuple[int, str] | None = None
        self._buffer = bytearray()

    # -- pynetdicom's side -------------------------------------------------------

    def read_pdu_data(self) -> None:
        """Stands in for ``DULServiceProvider._read_pdu_data``."""
        dul = self.dul
        sock = compat.raw_socket(dul)
        if compat.dul_state(dul) != "Sta6" or sock is None:
            self._reset()
            self.original()
            return
        try:
            while True:
                header = self._recv(sock, 6)
                if header is None:
                    self._closed()
                    return
                pdu_type, _, length = struct.unpack(">BBL", header)
                if length > self.max_pdu:
                    # PS3.8 9.3.1: longer than this side announced; never buffered.
                    raise ProtocolViolation(f"a PDU of {length} bytes (at most {self.max_pdu})")
                body = self._recv(sock, length, reuse=True)
                if body is None:
                    self._closed()
                    return
                if pdu_type != wire.P_DATA_TF:
                    self._reset()
                    self._hand_over(bytes(header) + bytes(body))
                    return
                if not self._pdata(header, body) or not self._more(sock):
                    return
        except ProtocolViolation as exc:
            # PS3.8 9.3.8: A-ABORT (invalid PDU parameter), then as a closed transport
            # (Evt17); one log line, where pynetdicom's reactor would log a traceback.
            log.warning("association from %s aborted: %s", self._calling(), exc)
            self._reset()
            with contextlib.suppress(OSError):
                sock.sendall(edge.abort_pdu(edge.INVALID_PARAMETER))
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            compat.transport_closed(dul)

    def _more(self, sock: socket.socket) -> bool:
        """Wait a slice for the next PDU; False gives the reactor its turn."""
        dul = self.dul
        if compat.dul_has_work(dul):
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        try:
            return edge.wait_for(sock, WAIT_SLICE)
        except (OSError, ValueError):
            return False

    def _recv(self, sock: socket.socket, size: int, reuse: bool = False) -> memoryview | None:
        """Exactly ``size`` bytes, or None when the peer closed the connection or sent
        nothing for ``dicom.network_timeout`` seconds in the middle of a PDU. With
        ``reuse`` they land in the reader's own buffer, valid until the next such read."""
        if reuse:
            if len(self._buffer) < size:
                self._buffer = bytearray(size)
            view = memoryview(self._buffer)[:size]
        else:
            view = memoryview(bytearray(size))
        got = 0
        # However slowly it trickles, a PDU arrives whole within the edge's pdu_timeout.
        # and never stays silent in it for longer than dicom.network_timeout.
        if isinstance(sock, ssl.SSLSocket):
            idle, whole = self._timeouts()
            return self._recv_tls(sock, view, time.monotonic() + whole, idle, whole)
        deadline = 0.0  # set when the socket first has nothing to read (then time counts)
        try:
            while got < size:
                try:
                    n = sock.recv_into(view[got:], size - got, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    idle, whole = self._timeouts()
                    if not deadline:
                        deadline = time.monotonic() + whole
                    remaining = deadline - time.monotonic()
                    if not edge.wait_for(sock, min(remaining, idle)):
                        self._late(remaining, idle, whole)
                        return None
                    continue
                if not n:
                    return None
                got += n
        except (OSError, ValueError):
            return None
        return view

    def _timeouts(self) -> tuple[float, float]:
        """(dicom.network_timeout, the edge's pdu_timeout or else the same)."""
        idle = self.dul.network_timeout
        return idle, getattr(self.dul.socket, "pdu_timeout", None) or idle

    def _late(self, remaining: float, idle: float, whole: float) -> None:
        log.warning(
            "association from %s closed: %s", self._calling(),
            f"a PDU not complete within {whole} s" if remaining <= idle
            else f"nothing for {idle} s inside a PDU",
        )  # fmt: skip

    def _recv_tls(
        self, sock: ssl.SSLSocket, view: memoryview, deadline: float, idle: float, whole: float
    ) -> memoryview | None:
        """``_recv`` on a TLS connection: no MSG_DONTWAIT there, decrypted bytes may wait
        unseen by select, and a record may arrive in parts, so each read has a timeout."""
        got, size = 0, len(view)
        try:
            while got < size:
                remaining = deadline - time.monotonic()
                wait = max(min(remaining, idle), 0)
                ready = sock.pending() or edge.wait_for(sock, wait)
                if not ready or remaining <= 0:
                    self._late(remaining, idle, whole)
                    return None
                sock.settimeout(wait)
                try:
                    n = sock.recv_into(view[got:], size - got)
                finally:
                    sock.settimeout(None)
                if not n:
                    return None
                got += n
        except (OSError, ValueError):
            return None
        return view

    def _closed(self) -> None:
        """The connection ended without a release (PS3.8 Evt17); a message in the middle
        of its transfer is dropped."""
        if self.mode is not None or self.command:
            log.warning("connection from %s closed during a message", self._calling())
        else:
            log.info("connection from %s closed without a release", self._calling())
        self._reset()
        compat.transport_closed(self.dul)

    def _hand_over(self, raw: bytes) -> None:
        """Give one whole PDU to pynetdicom, as its own reader would have."""
        if not compat.hand_pdu_to_dul(self.dul, raw):  # queued as Evt19, as pynetdicom does
            log.warning("unable to decode a PDU from %s", self._calling())

    # -- messages ----------------------------------------------------------------

    def _pdata(self, header: memoryview, body: memoryview) -> bool:
        """Handle one P-DATA-TF PDU; False when pynetdicom must act before the next read."""
        if self.mode == "pynetdicom":
            self._hand_over(bytes(header) + bytes(body))
            self._track_end(body)
            return False
        if self.mode is None:
            # Kept until the command is decoded: pynetdicom may have to take it.
            self.held.append(bytes(header) + bytes(body))
        items = self._pdvs(body)
        for n, (context_id, flags, data) in enumerate(items):
            is_command, last = bool(flags & wire.COMMAND), bool(flags & wire.LAST)
            if context_id not in self._accepted():
                # pynetdicom's DIMSE layer would take it for a message and stall.
                raise ProtocolViolation(f"a PDV on presentation context {context_id}, not accepted")
            if self.mode == "fast":
                if is_command or context_id != self.context_id:
                    raise ProtocolViolation("a command fragment inside a C-STORE data set")
                if self.sink is not None:
                    try:
                        self.sink.write(data)
                    except OSError as exc:  # a full disk: the rest is read and dropped
                        self._sink_failed(exc)
                if last:
                    if n + 1 < len(items):
                        raise ProtocolViolation("data after the last fragment of a data set")
                    self._finish()
                continue
            if not is_command:
                # A data set with no command before it: pynetdicom's DIMSE layer decides.
                return self._defer(None, body)
            self.command += data
            self.context_id = context_id
            if not last:
                continue
            cmd = parse_command(self.command)
            if cmd is None:
                # pynetdicom's reactor thread dies on a command set without Command Field.
                raise ProtocolViolation("a command set that does not decode")
            if not self._fast_eligible(cmd, context_id):
                return self._defer(cmd, body)
            assert cmd is not None
            self.held = []
            self.command = bytearray()
            self._start(cmd, context_id)
        return True

    @staticmethod
    def _pdvs(body: memoryview) -> list[tuple[int, int, memoryview]]:
        try:
            return list(wire.pdv_items(body))
        except wire.WireError as exc:
            raise ProtocolViolation(str(exc)) from exc

    def _defer(self, cmd: Command | None, body: memoryview) -> bool:
        """pynetdicom takes this message: the PDUs held so far, and what follows."""
        for raw in self.held:
            self._hand_over(raw)
        self.held = []
        self.command = bytearray()
        self.mode = "pynetdicom" if cmd is not None and cmd.has_dataset else None
        if self.mode:
            self._track_end(body)
        return False

    def _track_end(self, body: memoryview) -> None:
        """Follow a message pynetdicom is taking until its last data set fragment."""
        for _, flags, _ in self._pdvs(body):
            if not flags & wire.COMMAND and flags & wire.LAST:
                self.mode = None

    def _fast_eligible(self, cmd: Command | None, context_id: int) -> bool:
        if cmd is None or cmd.field != wire.C_STORE_RQ or not cmd.has_dataset:
            return False
        ctx = self._context(context_id)
        return ctx is not None and ctx[0] in self.storage_uids

    def _accepted(self) -> frozenset[int]:
        if self.accepted is None:
            self.accepted = frozenset(int(cx.context_id) for cx in self.dul.assoc.accepted_contexts)
        return self.accepted

    def _context(self, context_id: int) -> tuple[str, str] | None:
        if self.contexts is None:
            self.contexts = {
                int(cx.context_id): (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                for cx in self.dul.assoc.accepted_contexts
                if cx.as_scp
            }
        return self.contexts.get(context_id)

    def _calling(self) -> str:
        try:
            return str(self.dul.assoc.requestor.ae_title).strip()
        except AttributeError:
            return ""

    def _start(self, cmd: Command, context_id: int) -> None:
        """A C-STORE-RQ: decide now whether the data set is kept, then stream it."""
        self.mode = "fast"
        self.request = cmd
        self.refusal = None
        self.sink = None
        calling = self._calling()
        _, transfer_syntax = self._context(context_id) or ("", "")
        if not self.access.allowed(calling, SERVICE, str(self.dul.assoc.requestor.address)):
            log.warning("C-STORE refused: AE title %r may not store", calling)
            self.refusal = (status.NOT_AUTHORIZED, "calling AE title may not store here")
            return
        refused = self.receiver.precheck(cmd.sop_class, cmd.sop_instance)
        if refused is not None:
            log.warning("C-STORE from %s refused: %s", calling, refused[1])
            self.refusal = refused
            return
        meta = file_meta(cmd.sop_class, cmd.sop_instance, transfer_syntax, calling)
        try:
            if self.receiver.spool.journaled:
                self.sink = _RecordSink(self.receiver, meta, cmd.sop_instance)
            else:
                self.sink = _Sink(self.receiver, meta)
        except OSError as exc:
            self._sink_failed(exc)

    def _sink_failed(self, exc: OSError) -> None:
        log.error("C-STORE from %s: spool write failed: %s", self._calling(), exc.strerror)
        if self.sink is not None:
            self.sink.discard()
        self.sink = None
        self.refusal = (status.OUT_OF_RESOURCES, "out of resources: spool write failed")

    def _finish(self) -> None:
        """The last fragment is in: spool durably, then answer."""
        cmd, sink = self.request, self.sink
        assert cmd is not None
        self.mode, self.request, self.sink = None, None, None
        code, comment = self.refusal or (status.SUCCESS, "")
        if sink is not None:
            calling = self._calling()
            _, transfer_syntax = self._context(self.context_id) or ("", "")
            try:
                sink.close()
            except OSError as exc:
                sink.discard()
                log.error("C-STORE from %s: spool write failed: %s", calling, exc.strerror)
                code, comment = status.OUT_OF_RESOURCES, "out of resources: spool write failed"
            else:
                header = header_values(sink.head, transfer_syntax)
                try:
                    self._admit(sink, cmd, transfer_syntax, calling, header)
                except Exception as exc:
                    sink.discard()
                    refusal = refusal_for(exc, calling)
                    if refusal is None:
                        raise
                    code, comment = refusal
        self.receiver.count_streamed()
        self._respond(cmd, code, comment)

    def _admit(
        self,
        sink: _Sink,
        cmd: Command,
        transfer_syntax: str,
        calling: str,
        header: dict[int, str] | None,
    ) -> None:
        """Hand the received data set to the receiver: a journal record, or a file."""
        if isinstance(sink, _RecordSink):
            self.receiver.admit_record(
                sink.append,
                cmd.sop_class,
                cmd.sop_instance,
                transfer_syntax,
                calling,
                header=header,
                head=bytes(sink.head),
            )
            return
        self.receiver.admit(
            sink.path,
            cmd.sop_class,
            cmd.sop_instance,
            transfer_syntax,
            calling,
            synced=True,
            header=header,
            size=sink.size,
            head=bytes(sink.head),
        )

    def _respond(self, cmd: Command, code: int, comment: str) -> None:
        rsp = store_response(cmd.message_id, cmd.sop_class, cmd.sop_instance, code, comment)
        peer_max = int(self.dul.assoc.requestor.maximum_length or 0)
        step = wire.max_fragment(peer_max, max(len(rsp), 1))
        try:
            sock = compat.raw_socket(self.dul)
            if sock is None:
                raise OSError("the connection is closed")
            sock.sendall(wire.fragments(rsp, self.context_id, step, wire.COMMAND))
        except OSError:
            self._closed()

    def _reset(self) -> None:
        """A message cut short (release, abort, closed connection): nothing is kept."""
        if self.sink is not None:
            self.sink.discard()
        self.sink = None
        self.request = None
        self.mode = None
        self.command = bytearray()
        self.held = []


_warned: list[str] = []


def install(event: Any, receiver: Receiver, access: Access, storage_uids: Iterable[str]) -> None:
    """EVT_CONN_OPEN: put the intake reader in front of pynetdicom's for an accepted
    connection (the appliance's own outgoing associations keep pynetdicom's reader)."""
    assoc = event.assoc
    if not assoc.is_acceptor:
        return
    missing = compat.missing_internals(assoc.dul)
    if missing:
        if not _warned:
            _warned.append("yes")
            log.warning(
                "this pynetdicom lacks %s: C-STORE goes through pynetdicom (slower)",
                ", ".join(missing),
            )
        return
    intake = Intake(assoc.dul, receiver, access, frozenset(storage_uids))
    intake.original = compat.replace_pdu_reader(assoc.dul, intake.read_pdu_data)
