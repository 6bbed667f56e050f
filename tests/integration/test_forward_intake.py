"""The intake: C-STORE data sets read from the socket into the spool, over real associations.

Fragmented commands and data sets, every little/big endian and deflated syntax, other
messages on the same association, and peers that abort, hang up or break the protocol
in the middle of a data set: nothing half-received is kept and the listener goes on.
"""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification

from appliance import status
from appliance.dicom import compat
from appliance.forward.spool import Spool
from appliance.server import Appliance
from tests.forward_factories import encoded, make_ct, write_series
from tests.forward_helpers import MODALITY, forward_config, pacs_destination, send_files
from tests.helpers import require_peer, wait_for

NOWHERE = pacs_destination("pacs", "PACS", 9)  # nothing listens: rows stay waiting
ENV = {**os.environ, "TCP_NODELAY": "1"}


@pytest.fixture(params=["journal", "files"])
def spool_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def start_appliance(
    start_appliance: Callable[..., Appliance], spool_mode: str
) -> Callable[..., Appliance]:
    """Every test of this module with either spool (forward.spool)."""

    def start(raw: dict | None = None, data_dir: Path | None = None) -> Appliance:
        raw = dict(raw or {})
        raw["forward"] = {"spool": spool_mode, **raw.get("forward", {})}
        return start_appliance(raw, data_dir)

    return start


def _spool(app: Appliance) -> Spool:
    return next(s for s in app.services if s.name == "forward").spool


def _rows(app: Appliance) -> list[dict]:
    return app.runtime.store.query("SELECT * FROM forward_instances ORDER BY id")


def _spooled(app: Appliance, row: dict) -> bytes:
    """The bytes kept for a row, read by the spool's reader (a file or a record)."""
    with _spool(app).open(row["file"]) as f:
        return f.read()


def _tmp_files(app: Appliance) -> list[Path]:
    """Data sets being received: temporary files, or journal records being written."""
    writing = [Path("journal")] * _spool(app).journal.writing()
    return list((app.config.data_dir / "spool" / "tmp").iterdir()) + writing


def _streamed(app: Appliance) -> int:
    return int(app.health()["services"]["forward"]["received_since_start"])


def _dataset_bytes(path: Path | bytes) -> bytes:
    """The data set of a PS3.10 file as stored, without preamble and File Meta."""
    raw = path if isinstance(path, bytes) else path.read_bytes()
    return raw[144 + struct.unpack_from("<I", raw, 140)[0] :]


def test_fragmented_commands_and_data_sets_are_reassembled(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    raw = forward_config([NOWHERE])
    raw["dicom"] = {"max_pdu": 100}  # the command set (~190 bytes) needs two PDUs
    app = start_appliance(raw)
    paths = write_series(tmp_path / "in", 3)
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 3
    rows = _rows(app)
    assert len(rows) == 3 and _streamed(app) == 3
    by_uid = {r["sop_instance_uid"]: r for r in rows}
    for path in paths:
        sent = dcmread(path)
        assert _dataset_bytes(_spooled(app, by_uid[sent.SOPInstanceUID])) == encoded(sent)
    assert _tmp_files(app) == []


@pytest.mark.parametrize("pdu", [4096, 65536])
@pytest.mark.interop  # needs a peer program
def test_storescu_with_small_and_large_pdus(
    start_appliance: Callable[..., Appliance], tmp_path: Path, pdu: int
) -> None:
    require_peer("storescu")
    raw = forward_config([NOWHERE])
    raw["dicom"] = {"max_pdu": pdu}
    app = start_appliance(raw)
    paths = write_series(tmp_path / "in", 4, rows=256, columns=256)
    proc = subprocess.run(
        ["storescu", "-aet", MODALITY, "-aec", "APPLIANCE", "127.0.0.1", str(app.dicom_port),
         *map(str, paths)],
        capture_output=True, text=True, env=ENV, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    by_uid = {r["sop_instance_uid"]: r for r in _rows(app)}
    assert len(by_uid) == 4 and _streamed(app) == 4
    for path in paths:
        sent = dcmread(path)
        assert _dataset_bytes(_spooled(app, by_uid[sent.SOPInstanceUID])) == encoded(sent)


@pytest.mark.parametrize(
    "syntax",
    [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
     DeflatedExplicitVRLittleEndian],
)  # fmt: skip
def test_every_uncompressed_syntax_is_kept_as_sent(
    start_appliance: Callable[..., Appliance], tmp_path: Path, syntax: str
) -> None:
    app = start_appliance(forward_config([NOWHERE]))
    ds = make_ct(Modality="MR")
    ds.file_meta.TransferSyntaxUID = syntax
    path = tmp_path / "in.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert send_files(app.dicom_port, [path]) == [status.SUCCESS]
    [row] = _rows(app)
    # The routing header came from the data set whatever its encoding.
    assert row["modality"] == "MR" and row["transfer_syntax"] == syntax
    got = dcmread(BytesIO(_spooled(app, row)))
    assert got.file_meta.TransferSyntaxUID == syntax
    assert got.SOPInstanceUID == ds.SOPInstanceUID and got.PixelData == ds.PixelData
    if syntax != DeflatedExplicitVRLittleEndian:
        # byte for byte what pydicom wrote (and pynetdicom sent) in that syntax
        assert _dataset_bytes(_spooled(app, row)) == _dataset_bytes(path)


def test_other_messages_share_the_association(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    app = start_appliance(forward_config([NOWHERE]))
    datasets = [dcmread(p) for p in write_series(tmp_path / "in", 2)]
    ae = AE(ae_title=MODALITY)
    ae.add_requested_context(Verification)
    ae.add_requested_context(datasets[0].SOPClassUID, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", app.dicom_port, ae_title="APPLIANCE")
    try:
        assert assoc.send_c_echo().Status == status.SUCCESS
        assert assoc.send_c_store(datasets[0]).Status == status.SUCCESS
        assert assoc.send_c_echo().Status == status.SUCCESS
        assert assoc.send_c_store(datasets[1]).Status == status.SUCCESS
        assert assoc.send_c_echo().Status == status.SUCCESS
    finally:
        assoc.release()
    assert assoc.is_released
    assert len(_rows(app)) == 2 and _streamed(app) == 2


# -- peers that misbehave in the middle of a data set ------------------------------------


def _store_command(ds, message_id: int = 1) -> bytes:
    req = C_STORE()
    req.MessageID = message_id
    req.AffectedSOPClassUID = ds.SOPClassUID
    req.AffectedSOPInstanceUID = ds.SOPInstanceUID
    req.Priority = 0
    req.DataSet = BytesIO(b"")
    msg = C_STORE_RQ()
    msg.primitive_to_message(req)
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, True
    write_dataset(buf, msg.command_set)
    return buf.getvalue()


def _pdu(context_id: int, data: bytes, command: bool, last: bool) -> bytes:
    flags = (0x01 if command else 0) | (0x02 if last else 0)
    pdv = struct.pack(">IBB", len(data) + 2, context_id, flags) + data
    return struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv


def _half_sent(app: Appliance):
    """An association that sent a C-STORE command and half of its data set."""
    ds = make_ct(rows=128, columns=128)
    ae = AE(ae_title=MODALITY)
    ae.add_requested_context(ds.SOPClassUID, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", app.dicom_port, ae_title="APPLIANCE")
    assert assoc.is_established
    cx = assoc.accepted_contexts[0].context_id
    data = encoded(ds)
    sock = assoc.dul.socket.socket
    sock.sendall(_pdu(cx, _store_command(ds), command=True, last=True))
    sock.sendall(_pdu(cx, data[: len(data) // 2], command=False, last=False))
    wait_for(lambda: _tmp_files(app), timeout=5)  # the intake is writing it
    return assoc, sock, cx, ds


def _still_serves(app: Appliance, tmp_path: Path) -> None:
    assert send_files(app.dicom_port, write_series(tmp_path / "after", 1)) == [status.SUCCESS]


def test_abort_in_the_middle_keeps_nothing(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    app = start_appliance(forward_config([NOWHERE]))
    assoc, _, _, _ = _half_sent(app)
    assoc.abort()
    wait_for(lambda: not _tmp_files(app), timeout=5)
    assert _rows(app) == []
    _still_serves(app, tmp_path)
    assert len(_rows(app)) == 1


def test_connection_closed_in_the_middle_keeps_nothing(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    app = start_appliance(forward_config([NOWHERE]))
    assoc, sock, _, _ = _half_sent(app)
    assoc.dul.kill_dul()
    sock.close()
    wait_for(lambda: not _tmp_files(app), timeout=5)
    assert _rows(app) == []
    _still_serves(app, tmp_path)


def test_a_command_inside_a_data_set_aborts_the_association(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    app = start_appliance(forward_config([NOWHERE]))
    assoc, sock, cx, ds = _half_sent(app)
    sock.sendall(_pdu(cx, _store_command(ds, 2), command=True, last=True))
    wait_for(lambda: assoc.is_aborted, timeout=5)  # PS3.8 A-ABORT from the appliance
    wait_for(lambda: not _tmp_files(app), timeout=5)
    assert _rows(app) == []
    _still_serves(app, tmp_path)


def test_rows_lost_with_the_power_are_rebuilt_from_the_spool(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    """The receiver's queue commits do not wait for the disk (its files do): an instance
    acknowledged just before a power cut may come back with no rows. The spooled file
    carries what is needed to queue it again at the next start."""
    cfg = forward_config([NOWHERE], retry_initial=30.0, retry_max=60.0)
    data = tmp_path / "data"
    app = start_appliance(cfg, data_dir=data)
    paths = write_series(tmp_path / "in", 2, modality="MR")
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 2
    before = {r["sop_instance_uid"]: r for r in _rows(app)}
    app.stop()
    import sqlite3

    conn = sqlite3.connect(data / "appliance.db")
    victim = sorted(before)[0]
    with conn:
        conn.execute(
            "DELETE FROM forward_queue WHERE instance_id = "
            "(SELECT id FROM forward_instances WHERE sop_instance_uid = ?)",
            (victim,),
        )
        conn.execute("DELETE FROM forward_instances WHERE sop_instance_uid = ?", (victim,))
    conn.close()
    again = start_appliance(cfg, data_dir=data)
    after = {r["sop_instance_uid"]: r for r in _rows(again)}
    assert set(after) == set(before)
    rebuilt = after[victim]
    assert rebuilt["file"] == before[victim]["file"]
    assert rebuilt["calling_ae"] == MODALITY and rebuilt["modality"] == "MR"
    assert rebuilt["sop_class_uid"] == before[victim]["sop_class_uid"]
    assert rebuilt["transfer_syntax"] == before[victim]["transfer_syntax"]
    queued = again.runtime.store.query(
        "SELECT q.destination, q.state FROM forward_queue q JOIN forward_instances i "
        "ON i.id = q.instance_id WHERE i.sop_instance_uid = ?",
        (victim,),
    )
    assert queued == [{"destination": "pacs", "state": "waiting"}]


def test_a_pdu_longer_than_announced_aborts_the_association(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    raw = forward_config([NOWHERE])
    raw["dicom"] = {"max_pdu": 4096}
    app = start_appliance(raw)
    ds = make_ct(rows=64, columns=64)
    ae = AE(ae_title=MODALITY)
    ae.add_requested_context(ds.SOPClassUID, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", app.dicom_port, ae_title="APPLIANCE")
    assert assoc.is_established and assoc.acceptor.maximum_length == 4096
    cx = assoc.accepted_contexts[0].context_id
    sock = assoc.dul.socket.socket
    sock.sendall(_pdu(cx, _store_command(ds), command=True, last=True))
    sock.sendall(_pdu(cx, encoded(ds)[:8192], command=False, last=False))
    wait_for(lambda: assoc.is_aborted, timeout=5)
    wait_for(lambda: not _tmp_files(app), timeout=5)
    assert _rows(app) == []
    _still_serves(app, tmp_path)


def test_a_full_disk_in_the_middle_is_out_of_resources(
    start_appliance: Callable[..., Appliance], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from appliance.forward import intake

    app = start_appliance(forward_config([NOWHERE]))
    sink = intake._RecordSink if _spool(app).journaled else intake._Sink
    real_write = sink.write

    def disk_full(self, data, header=True):  # the File Meta fits, the data set does not
        if header:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, data, header)

    monkeypatch.setattr(sink, "write", disk_full)
    ae = AE(ae_title=MODALITY)
    ds = make_ct()
    ae.add_requested_context(ds.SOPClassUID, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", app.dicom_port, ae_title="APPLIANCE")
    rsp = assoc.send_c_store(ds)
    assert rsp.Status == status.OUT_OF_RESOURCES
    assert rsp.ErrorComment == "out of resources: spool write failed"
    monkeypatch.setattr(sink, "write", real_write)  # space freed: the retry works
    assert assoc.send_c_store(ds).Status == status.SUCCESS
    assoc.release()
    assert len(_rows(app)) == 1 and _tmp_files(app) == []


def test_a_peer_silent_inside_a_pdu_is_dropped_after_the_network_timeout(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    raw = forward_config([NOWHERE])
    raw["dicom"] = {"network_timeout": 1}
    app = start_appliance(raw)
    assoc, sock, cx, _ = _half_sent(app)
    sock.sendall(struct.pack(">BBI", 0x04, 0, 1000) + b"\0" * 10)  # 990 bytes never come
    wait_for(lambda: assoc.is_aborted, timeout=5)
    wait_for(lambda: not _tmp_files(app), timeout=5)
    assert _rows(app) == []
    _still_serves(app, tmp_path)


def test_without_the_intake_pynetdicom_stores_the_same_way(
    start_appliance: Callable[..., Appliance], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pynetdicom whose DUL lacks what the intake uses: C-STORE still spools and queues,
    through pynetdicom's own path, with the same statuses."""
    monkeypatch.setattr(compat, "DUL_INTERNALS", (*compat.DUL_INTERNALS, "_not_in_pynetdicom"))
    app = start_appliance(forward_config([NOWHERE]))
    paths = write_series(tmp_path / "in", 2)
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 2
    assert send_files(app.dicom_port, paths[:1]) == [status.SUCCESS]  # a repeat: kept once
    assert _streamed(app) == 0  # none came through the intake
    rows = _rows(app)
    assert len(rows) == 2 and {r["calling_ae"] for r in rows} == {MODALITY}
    for path in paths:
        sent = dcmread(path)
        [row] = [r for r in rows if r["sop_instance_uid"] == sent.SOPInstanceUID]
        assert _dataset_bytes(_spooled(app, row)) == encoded(sent)
    stranger = send_files(app.dicom_port, paths[:1], calling="STRANGER")
    assert stranger == [status.NOT_AUTHORIZED]
