"""The sender's own C-STORE wire against pynetdicom peers that answer, warn, fail,
abort, hang or misbehave, and store_wire's response reader on real sockets."""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF

from appliance import status
from appliance.forward import queue, store_wire
from appliance.forward.store_wire import WireError
from appliance.server import Appliance
from tests.forward_factories import make_ct, write_series
from tests.forward_helpers import FakePacs, forward_config, pacs_destination, send_files, senders
from tests.helpers import wait_for
from tests.orthanc import free_port


def _start(
    start_appliance: Callable[..., Appliance], pacs: FakePacs, dicom: dict | None = None, **fwd: Any
) -> Appliance:
    raw = forward_config([pacs_destination("pacs", pacs.ae_title, pacs.port)], **fwd)
    if dicom:
        raw["dicom"] = dicom
    return start_appliance(raw)


def _rows(app: Appliance) -> list[dict]:
    return app.runtime.store.query("SELECT * FROM forward_queue ORDER BY id")


def _all_delivered(app: Appliance, count: int) -> bool:
    rows = _rows(app)
    return len(rows) == count and all(r["state"] == queue.DELIVERED for r in rows)


def _due_together(app: Appliance, count: int) -> bool:
    rows = _rows(app)
    return len(rows) == count and len({r["next_attempt"] for r in rows}) == 1


def _rsp_pdus(context_id: int, message_id: int, code: int = status.SUCCESS) -> bytes:
    """A C-STORE-RSP as pynetdicom encodes it, as P-DATA-TF PDUs."""
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = CTImageStorage
    rsp.AffectedSOPInstanceUID = "1.2.3"
    rsp.Status = code
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    out = b""
    for primitive in msg.encode_msg(context_id, 16384):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        out += pdu.encode()
    return out


# -- the response reader on a socket pair ------------------------------------------------


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_reader_takes_exactly_the_response_and_leaves_what_follows(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    peer.sendall(_rsp_pdus(5, 9, status.COERCION_OF_DATA_ELEMENTS) + b"NEXT")
    assert store_wire.read_response(ours, 5, 9, 2.0) == (status.COERCION_OF_DATA_ELEMENTS, "")
    assert ours.recv(16) == b"NEXT"  # the next PDU stays for pynetdicom


def test_reader_joins_a_command_split_over_pdus_and_writes(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 3
    rsp.Status = status.OUT_OF_RESOURCES
    rsp.ErrorComment = "spool full, try later"
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    wire = b""
    for primitive in msg.encode_msg(1, 24):  # 18 bytes of command set a PDU
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        wire += pdu.encode()
    for i in range(0, len(wire), 7):  # and the bytes trickle in
        peer.sendall(wire[i : i + 7])
    assert store_wire.read_response(ours, 1, 3, 2.0) == (
        status.OUT_OF_RESOURCES,
        "spool full, try later",
    )


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x01", "peer aborted the association (source 2"),
        (b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00", "asked for a release"),
        (b"\xff\x00\x00\x00\x00\x02ab", "a PDU of type 0xFF"),
        (b"\x04\x00\x7f\xff\xff\xff", "a PDU of 2147483647 bytes"),
        (b"\x04\x00\x00\x00\x00\x08\x00\x00\x00\x04\x05\x02ab", "a data set or another context"),
        (b"\x04\x00\x00\x00\x00\x08\x00\x00\x00\x09\x05\x03ab", "wrong length"),
        (b"\x04\x00\x00\x00", "no C-STORE response within 0.2 s"),
        (b"", "no C-STORE response within 0.2 s"),
    ],
)
def test_reader_refuses_what_is_not_the_response(
    pair: tuple[socket.socket, socket.socket], wire: bytes, error: str
) -> None:
    ours, peer = pair
    peer.sendall(wire)
    with pytest.raises(WireError, match=re.escape(error)):
        store_wire.read_response(ours, 5, 1, 0.2)


def test_reader_refuses_another_message_and_a_closed_connection(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    peer.sendall(_rsp_pdus(5, 2))
    with pytest.raises(WireError, match="message 2 while 1 waited"):
        store_wire.read_response(ours, 5, 1, 1.0)
    peer.sendall(_rsp_pdus(5, 1)[:9])
    peer.close()
    with pytest.raises(WireError, match="closed the connection"):
        store_wire.read_response(ours, 5, 1, 1.0)


# -- the sender against pynetdicom peers ---------------------------------------------------


def test_a_batch_goes_over_the_wire_with_increasing_message_ids_and_is_released(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    port = free_port()  # the PACS comes up once all six wait: one batch, one association
    dest = pacs_destination("pacs", "FAKEPACS", port)
    app = start_appliance(forward_config([dest], idle_release=0.2, batch_size=10))
    paths = write_series(tmp_path / "in", 6)
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 6
    wait_for(lambda: _due_together(app, 6), timeout=10)
    pacs = fake_pacs(max_pdu=4096, port=port)
    wait_for(lambda: _all_delivered(app, 6), timeout=10)
    wait_for(lambda: pacs.released == 1, timeout=10)  # an ordinary A-RELEASE afterwards
    assert pacs.aborted == 0 and pacs.associations == 1
    assert pacs.message_ids == list(range(1, 7))
    assert senders(app, "pacs")[0].wire_stores == 6
    for path, (_, got, syntax) in zip(paths, pacs.received, strict=True):
        assert syntax == ExplicitVRLittleEndian
        assert got == dcmread(path)


@pytest.mark.parametrize("max_pdu", [0, 4096])
def test_a_file_of_several_megabytes_is_streamed(
    start_appliance: Callable[..., Appliance],
    fake_pacs: Callable[..., FakePacs],
    tmp_path: Path,
    max_pdu: int,
) -> None:
    """More than one read and write of the file, with and without a PDU size limit."""
    pacs = fake_pacs(max_pdu=max_pdu)
    app = _start(start_appliance, pacs)
    big = make_ct(rows=1024, columns=1280, seed=5)  # 2.6 MB of pixels
    path = tmp_path / "big.dcm"
    big.save_as(path, enforce_file_format=True)
    assert send_files(app.dicom_port, [path]) == [status.SUCCESS]
    wait_for(lambda: _all_delivered(app, 1), timeout=20)
    assert pacs.received[0][1] == dcmread(path)
    assert senders(app, "pacs")[0].wire_stores == 1


def test_statuses_and_error_comments_reach_retry_and_dead_letters(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    paths = write_series(tmp_path / "in", 4)
    uids = [str(dcmread(p).SOPInstanceUID) for p in paths]
    answers: list[int | tuple[int, str]] = [
        (status.COERCION_OF_DATA_ELEMENTS, "patient name trimmed"),
        (status.OUT_OF_RESOURCES, "archive disk full"),  # then Success
        (status.CANNOT_UNDERSTAND, "no pixel module"),
        (status.SOP_CLASS_NOT_SUPPORTED, "not here"),
    ]
    pacs = fake_pacs(by_uid={uid: [a] for uid, a in zip(uids, answers, strict=True)})
    app = _start(start_appliance, pacs, batch_size=10)
    store = app.runtime.store
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 4
    wait_for(lambda: len(queue.dead_letters(store)) == 2, timeout=10)
    wait_for(lambda: queue.summary(store)[0]["delivered"] == 2, timeout=10)
    rows = {r["sop_instance_uid"]: r for r in store.query(
        "SELECT q.*, i.sop_instance_uid FROM forward_queue q "
        "JOIN forward_instances i ON i.id = q.instance_id"
    )}  # fmt: skip
    assert rows[uids[0]]["state"] == queue.DELIVERED
    assert rows[uids[0]]["last_status"] == status.COERCION_OF_DATA_ELEMENTS
    # A700: retried once, then delivered; the comment was kept as why it waited.
    assert (rows[uids[1]]["state"], rows[uids[1]]["attempts"]) == (queue.DELIVERED, 1)
    dead = {d["sop_instance_uid"]: d for d in queue.dead_letters(store)}
    assert dead[uids[2]]["reason"] == "cannot understand 0xC000: no pixel module"
    assert dead[uids[2]]["last_status"] == status.CANNOT_UNDERSTAND
    assert dead[uids[3]]["reason"].endswith(": not here")
    assert dead[uids[3]]["last_status"] == status.SOP_CLASS_NOT_SUPPORTED
    sender = senders(app, "pacs")[0]
    assert sender.wire_stores == 5  # four first tries and the retry, all on the wire
    # The PACS's own comments reach the sender's last error (A700 now backs the whole
    # destination off, so which failure came last depends on the retry order).
    assert any(c in sender.last_error for c in ("archive disk full", "no pixel module", "not here"))


@pytest.mark.parametrize(
    ("rows", "reset", "error"),
    [
        # 64 KB each: all written, then the A-ABORT is read instead of a response.
        (128, False, "the peer aborted the association"),
        # 8 MB each, more than the socket buffers hold: a write fails on the reset.
        (16384, True, "writing the data set failed"),
    ],
    ids=["a-abort", "reset"],
)
def test_abort_in_the_middle_of_a_data_set_is_retried(
    start_appliance: Callable[..., Appliance],
    fake_pacs: Callable[..., FakePacs],
    tmp_path: Path,
    rows: int,
    reset: bool,
    error: str,
) -> None:
    pacs = fake_pacs(max_pdu=4096, abort_mid_dataset=1, reset=reset)
    app = _start(start_appliance, pacs, batch_size=10)
    paths = write_series(tmp_path / "in", 3, rows=rows, columns=256)
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 3
    wait_for(lambda: _all_delivered(app, 3), timeout=15)
    assert pacs.aborted_mid_dataset == 1 and pacs.associations == 2
    # The aborted one counted an attempt; the rest of its batch waited without one.
    assert sorted(r["attempts"] for r in _rows(app)) == [0, 0, 1]
    assert sorted(str(ds.SOPInstanceUID) for _, ds, _ in pacs.received) == sorted(
        str(dcmread(p).SOPInstanceUID) for p in paths
    )  # each stored once: the aborted one was not taken for delivered on the way
    sender = senders(app, "pacs")[0]
    assert "association aborted or timed out during C-STORE" in sender.last_error
    assert error in sender.last_error
    assert sender.state == "running"
    more = write_series(tmp_path / "more", 2)
    assert send_files(app.dicom_port, more) == [status.SUCCESS] * 2
    wait_for(lambda: _all_delivered(app, 5), timeout=10)


def test_a_peer_that_never_answers_times_out_and_the_next_try_succeeds(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    pacs = fake_pacs(hang_at=[0])
    app = _start(start_appliance, pacs, dicom={"dimse_timeout": 0.5})
    paths = write_series(tmp_path / "in", 1)
    assert send_files(app.dicom_port, paths) == [status.SUCCESS]
    wait_for(lambda: _all_delivered(app, 1), timeout=15)
    assert _rows(app)[0]["attempts"] == 1
    assert pacs.stored_uids() == [str(dcmread(paths[0]).SOPInstanceUID)]
    sender = senders(app, "pacs")[0]
    assert "no C-STORE response within 0.5 s" in sender.last_error
    more = write_series(tmp_path / "more", 2)
    assert send_files(app.dicom_port, more) == [status.SUCCESS] * 2
    wait_for(lambda: _all_delivered(app, 3), timeout=10)
    assert sender.state == "running"


def _write(data: bytes) -> Callable[[Any], None]:
    def misbehave(event: Any) -> None:
        event.assoc.dul.socket.socket.sendall(data)

    return misbehave


def _wrong_message(event: Any) -> None:
    cx = event.context.context_id
    event.assoc.dul.socket.socket.sendall(_rsp_pdus(cx, int(event.request.MessageID) + 1))


def _hang_up(event: Any) -> None:
    event.assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)


@pytest.mark.parametrize(
    ("misbehave", "error"),
    [
        (_write(b"\xff\x00\x00\x00\x00\x02ab"), "a PDU of type 0xFF"),
        (_write(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"), "asked for a release"),
        (_wrong_message, "message 2 while 1 waited"),
        (_hang_up, "the peer closed the connection"),
    ],
    ids=["garbage", "release-request", "wrong-message", "closed"],
)
def test_a_peer_that_misbehaves_is_aborted_and_the_item_retried(
    start_appliance: Callable[..., Appliance],
    fake_pacs: Callable[..., FakePacs],
    tmp_path: Path,
    misbehave: Callable[[Any], None],
    error: str,
) -> None:
    pacs = fake_pacs(before_answer={0: misbehave})
    app = _start(start_appliance, pacs)
    paths = write_series(tmp_path / "in", 2)
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 2
    wait_for(lambda: _all_delivered(app, 2), timeout=15)
    assert sorted(r["attempts"] for r in _rows(app)) == [0, 1]
    sender = senders(app, "pacs")[0]
    assert error in sender.last_error
    assert pacs.associations == 2 and sender.state == "running"


def test_decompressed_and_wire_stores_share_an_association(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    """pynetdicom sends the decompressed file, then the socket is ours again, and back."""
    port = free_port()  # the PACS comes up once all three wait, to take them in one batch
    dest = pacs_destination("pacs", "FAKEPACS", port)
    app = start_appliance(forward_config([dest], batch_size=10, idle_release=5.0))
    rle = make_ct(rows=32, columns=32, seed=9)
    rle.compress(RLELossless)
    rle_path = tmp_path / "rle.dcm"
    rle.save_as(rle_path, enforce_file_format=True)
    plain = write_series(tmp_path / "in", 2)
    assert send_files(app.dicom_port, [plain[0], rle_path, plain[1]]) == [status.SUCCESS] * 3
    # Once a failed try deferred all three to one time, they stay due together.
    wait_for(lambda: _due_together(app, 3), timeout=10)
    pacs = fake_pacs(syntaxes=[ExplicitVRLittleEndian, ImplicitVRLittleEndian], port=port)
    wait_for(lambda: _all_delivered(app, 3), timeout=10)
    assert pacs.associations == 1 and pacs.aborted == 0
    assert senders(app, "pacs")[0].wire_stores == 2
    assert len(pacs.stored_uids()) == 3


def _guarded_association(pacs: FakePacs) -> Any:
    from pynetdicom import AE

    from appliance.forward.sender import SENDER_HANDLERS

    ae = AE("GUARDTEST")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(
        "127.0.0.1", pacs.port, ae_title=pacs.ae_title, evt_handlers=SENDER_HANDLERS
    )
    assert assoc.is_established
    return assoc


def test_the_socket_guard_keeps_the_reactor_from_reading(
    fake_pacs: Callable[..., FakePacs],
) -> None:
    """A PDU that arrives while a C-STORE owns the socket is not read by pynetdicom."""
    pacs = fake_pacs()
    assoc = _guarded_association(pacs)
    try:
        guard = store_wire.guard_of(assoc)
        assert guard is not None and guard.take(1.0)
        sock = assoc.dul.socket.socket
        try:
            # The peer writes a PDU on its own socket while ours is owned.
            pending = struct.pack(">BBI", 0x04, 0, 0)
            peer_sock = pacs.server.active_associations[0].dul.socket.socket
            peer_sock.sendall(pending)
            wait_for(lambda: _readable(sock), timeout=2)
            skipped = guard.skipped
            wait_for(lambda: guard.skipped >= skipped + 20, timeout=5)  # reactor rounds
            assert assoc.dul.event_queue.empty()
            assert sock.recv(6) == pending  # still there for us
        finally:
            guard.lock.release()
        assert assoc.is_established
    finally:
        assoc.release()
    wait_for(lambda: pacs.released == 1, timeout=5)


def test_the_socket_guard_holds_an_abort_until_the_socket_is_given_back(
    fake_pacs: Callable[..., FakePacs],
) -> None:
    """An A-ABORT asked for by another thread does not land inside our PDUs."""
    pacs = fake_pacs()
    assoc = _guarded_association(pacs)
    guard = store_wire.guard_of(assoc)
    assert guard is not None and guard.take(1.0)
    try:
        assoc.abort(block=False)
        wait_for(lambda: guard.acting == 1, timeout=5)  # the action waits for the socket
        assert pacs.aborted == 0 and assoc.dul.state_machine.current_state == "Sta6"
    finally:
        guard.lock.release()
    wait_for(lambda: pacs.aborted == 1, timeout=5)


def _readable(sock: socket.socket) -> bool:
    import select

    return bool(select.select([sock], [], [], 0)[0])
