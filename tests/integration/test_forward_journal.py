"""The journal spool end to end: C-STORE into segments, recovery, retention, compaction."""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread

from appliance import status
from appliance.app import open_store
from appliance.forward import journal, queue
from appliance.forward.receiver import Receiver, refusal_for
from appliance.forward.retention import sweep, sweep_segments
from appliance.forward.spool import Spool
from appliance.server import Appliance
from tests.forward_factories import encoded, make_ct, write_series
from tests.forward_helpers import FakePacs, forward_config, pacs_destination, send_files
from tests.helpers import make_config, wait_for

NOWHERE = pacs_destination("pacs", "PACS", 9)  # nothing listens: rows stay waiting
SEG_MB = 1


def _journal(**kw: object) -> dict[str, object]:
    return {"spool": "journal", "journal_segment_mb": SEG_MB, **kw}


def _instances(app: Appliance) -> list[dict]:
    return app.runtime.store.query("SELECT * FROM forward_instances ORDER BY id")


def test_c_store_goes_into_a_segment_byte_for_byte_and_no_file_is_made(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    app = start_appliance(
        forward_config([NOWHERE], retry_initial=30.0, retry_max=60.0, **_journal())
    )
    paths = write_series(tmp_path / "in", 3)
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 3
    rows = _instances(app)
    spool = Spool(app.config.data_dir / "spool")
    for row, path in zip(rows, paths, strict=True):
        loc = journal.parse_ref(row["file"])
        assert loc is not None and row["size"] == loc.length
        sent = dcmread(path)
        with spool.open(row["file"]) as f:
            raw = f.read()
        assert raw[128:132] == b"DICM" and raw.endswith(encoded(sent))
        with spool.open(row["file"]) as f:
            got = dcmread(f)
        assert got.SOPInstanceUID == sent.SOPInstanceUID
        assert got.file_meta.SourceApplicationEntityTitle == "MODALITY"
    assert list((app.config.data_dir / "spool" / "objects").glob("*/*.dcm")) == []
    assert list((app.config.data_dir / "spool" / "tmp").iterdir()) == []
    q = app.runtime.store.query("SELECT COUNT(*) AS n FROM qr_instances")[0]["n"]
    assert q == 3  # indexed for Query/Retrieve from the intake's head, as with files


def test_repeated_identical_instance_is_not_stored_twice(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    app = start_appliance(
        forward_config([NOWHERE], retry_initial=30.0, retry_max=60.0, **_journal())
    )
    path = write_series(tmp_path / "in", 1)[0]
    assert send_files(app.dicom_port, [path]) == [status.SUCCESS]
    [first] = _instances(app)
    assert send_files(app.dicom_port, [path]) == [status.SUCCESS]
    [again] = _instances(app)
    assert again["file"] == first["file"] and again["digest"] == first["digest"]
    seg = journal.parse_ref(first["file"])
    assert seg is not None
    records = list(journal.scan(app.config.data_dir / "spool" / "journal" / f"{seg.seq:08d}.seg"))
    assert len(records) == 1  # the repeat was written over, never committed


def test_sender_streams_records_from_the_segment_to_the_pacs(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    pacs = fake_pacs()
    dest = pacs_destination("pacs", pacs.ae_title, pacs.port)
    app = start_appliance(forward_config([dest], **_journal()))
    paths = write_series(tmp_path / "in", 4)
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 4
    wait_for(lambda: len(pacs.stored_uids()) == 4, timeout=20)
    assert sorted(pacs.stored_uids()) == sorted(dcmread(p).SOPInstanceUID for p in paths)
    [forward] = [s for s in app.services if hasattr(s, "senders")]
    sender = forward.senders["pacs"][0]
    wait_for(lambda: sender.wire_stores == 4, timeout=10)  # on the socket, from the segment


def test_files_spooled_before_the_switch_are_still_sent(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    # Short retries: the rows keep failing toward port 9, and once the PACS is there
    # they are due again within a second (not 30 s later, as with long retries).
    raw = forward_config([NOWHERE], retry_initial=0.2, retry_max=1.0, spool="files")
    first = start_appliance(raw, data_dir=data)
    old = write_series(tmp_path / "old", 2)
    assert send_files(first.dicom_port, old) == [status.SUCCESS] * 2
    first.stop()
    pacs = fake_pacs()
    dest = pacs_destination("pacs", pacs.ae_title, pacs.port)
    app = start_appliance(forward_config([dest], **_journal()), data_dir=data)
    new = write_series(tmp_path / "new", 2)
    assert send_files(app.dicom_port, new) == [status.SUCCESS] * 2
    # The old rows still name files and the new ones journal records; all four go.
    files = sorted(r["file"].split("/")[0] for r in _instances(app))
    assert files == ["journal", "journal", "objects", "objects"]
    wait_for(lambda: len(set(pacs.stored_uids())) == 4, timeout=30)


@pytest.fixture
def rig(tmp_path: Path):
    cfg = make_config(tmp_path / "data", forward_config([NOWHERE], **_journal()))
    store = open_store(cfg.data_dir)
    spool = Spool(cfg.data_dir / "spool", "journal", SEG_MB << 20)
    spool.prepare()
    yield cfg, store, spool, Receiver(cfg, store, spool)
    spool.journal.close()
    store.close()


def _orphan(spool: Spool, path: Path) -> journal.Location:
    """A record committed (acknowledged) whose rows a power cut took back."""
    a = spool.journal.begin(dcmread(path).SOPInstanceUID)
    a.write(path.read_bytes())
    loc = a.commit()
    a.close()
    return loc


def test_recovery_queues_complete_records_without_rows(rig, tmp_path: Path) -> None:
    cfg, store, spool, receiver = rig
    paths = write_series(tmp_path / "in", 3)
    locs = [_orphan(spool, p) for p in paths]
    spool.journal.close()
    # A torn record behind them: its header written, its payload cut by the power cut.
    torn = _orphan(spool, write_series(tmp_path / "torn", 1)[0])
    spool.journal.close()
    os.truncate(spool.journal.path(torn.seq), torn.offset + 100)
    assert receiver.recover() == 3
    rows = store.query("SELECT i.file, q.state FROM forward_instances i JOIN forward_queue q "
                       "ON q.instance_id = i.id ORDER BY i.id")  # fmt: skip
    assert [r["file"] for r in rows] == [loc.ref for loc in locs]
    assert {r["state"] for r in rows} == {queue.WAITING}
    # The checkpoint moved past them: a second start scans nothing again.
    marks = queue.checkpoints(store)
    assert marks[locs[0].seq] > locs[-1].offset
    assert receiver.recover() == 0


def test_recovery_does_not_bring_back_an_older_version(rig, tmp_path: Path) -> None:
    cfg, store, spool, receiver = rig
    ds = make_ct()
    v1, v2 = tmp_path / "v1.dcm", tmp_path / "v2.dcm"
    ds.save_as(v1, enforce_file_format=True)
    ds.PatientID = "CHANGED"
    ds.save_as(v2, enforce_file_format=True)
    receiver.ingest(v1, ds.SOPClassUID, ds.SOPInstanceUID, str(ds.file_meta.TransferSyntaxUID), "M")
    receiver.ingest(v2, ds.SOPClassUID, ds.SOPInstanceUID, str(ds.file_meta.TransferSyntaxUID), "M")
    [row] = store.query("SELECT file FROM forward_instances")
    spool.journal.close()
    with store.write() as db:  # a scan from each segment's start
        db.execute("DELETE FROM forward_journal_segments")
    assert receiver.recover() == 0
    [after] = store.query("SELECT file FROM forward_instances")
    assert after["file"] == row["file"]
    with spool.open(after["file"]) as f:
        assert dcmread(f).PatientID == "CHANGED"


def _received(receiver: Receiver, store, paths: list[Path]) -> list[str]:
    for p in paths:
        ds = dcmread(p)
        receiver.ingest(p, ds.SOPClassUID, ds.SOPInstanceUID,
                        str(ds.file_meta.TransferSyntaxUID), "MODALITY")  # fmt: skip
    return [r["file"] for r in store.query("SELECT file FROM forward_instances ORDER BY id")]


def _deliver_all(store, now: float) -> None:
    items = queue.claim(store, "pacs", 1000, now=now)
    queue.mark_delivered(store, [(i, 0) for i in items], now=now)


def test_retention_frees_a_segment_once_every_record_is_delivered_and_expired(
    rig, tmp_path: Path
) -> None:
    cfg, store, spool, receiver = rig
    refs = _received(receiver, store, write_series(tmp_path / "in", 3))
    seq = journal.parse_ref(refs[0]).seq
    spool.journal.close()  # sealed: no longer open for appends
    memory: dict[int, float] = {}
    t0 = time.time() + 1
    assert sweep_segments(store, spool, memory, now=t0 + 1e6) == (0, 0, 0)  # not delivered
    _deliver_all(store, now=t0)
    assert sweep(store, spool, retention_s=3600, now=t0 + 3599) == (0, 0)
    assert sweep_segments(store, spool, memory, now=t0 + 1e6)[0] == 0  # within retention
    n, _ = sweep(store, spool, retention_s=3600, now=t0 + 3600)
    assert n == 3
    assert sweep_segments(store, spool, memory, now=2e10, grace=60) == (0, 0, 0)  # first seen
    freed, _, moved = sweep_segments(store, spool, memory, now=2e10 + 60, grace=60)
    assert (freed, moved) == (1, 0)
    assert not spool.journal.path(seq).exists()
    assert seq not in queue.checkpoints(store)


def test_a_segment_held_back_by_a_few_records_is_compacted(rig, tmp_path: Path) -> None:
    cfg, store, spool, receiver = rig
    refs = _received(receiver, store, write_series(tmp_path / "in", 5))
    before = {}
    for ref in refs:
        with spool.open(ref) as f:
            before[ref] = f.read()
    seq = journal.parse_ref(refs[0]).seq
    spool.journal.close()
    _deliver_all(store, now=time.time() + 1)
    # One of them is resent (waiting again): it alone holds the segment back.
    held = store.query("SELECT id FROM forward_instances ORDER BY id")[0]["id"]
    with store.write() as db:
        db.execute("UPDATE forward_queue SET state = 'waiting' WHERE instance_id = ?", (held,))
    assert sweep(store, spool, retention_s=0, now=time.time() + 2)[0] == 4
    memory: dict[int, float] = {}
    freed, _, moved = sweep_segments(store, spool, memory, grace=0)
    assert (freed, moved) == (1, 1)
    [row] = store.query("SELECT file, removed_at FROM forward_instances WHERE id = ?", (held,))
    new = journal.parse_ref(row["file"])
    assert row["removed_at"] is None and new is not None and new.seq != seq
    with spool.open(row["file"]) as f:
        assert f.read() == before[refs[0]]  # the same bytes
    assert not spool.journal.path(seq).exists()
    # The copy keeps its version: a recovery scan does not take it for a new one.
    spool.journal.close()
    with store.write() as db:
        db.execute("DELETE FROM forward_journal_segments")
    assert receiver.recover() == 0


def test_a_restart_appends_after_the_last_complete_record(rig, tmp_path: Path) -> None:
    """Recovery reopens the newest segment where its scan stopped: a torn record there
    is written over and the segment's tail is not left unused."""
    cfg, store, spool, receiver = rig
    [first] = _received(receiver, store, write_series(tmp_path / "a", 1))
    torn = _orphan(spool, write_series(tmp_path / "torn", 1)[0])
    spool.journal.close()  # the process ends
    seg = spool.journal.path(torn.seq)
    with open(seg, "r+b") as f:  # the torn record's payload never reached the disk whole
        f.seek(torn.offset + 10)
        f.write(b"\xff" * 64)
    assert receiver.recover() == 0
    refs = _received(receiver, store, write_series(tmp_path / "b", 1))
    new = journal.parse_ref(refs[-1])
    assert new is not None and new.seq == torn.seq  # the same segment, not a new one
    assert new.offset < torn.offset + torn.length  # over the torn record
    assert [r.location.ref for r in journal.scan(seg)] == [first, refs[-1]]


def _committed_instances(store) -> int:
    """Instance rows another connection sees: committed ones only (WAL)."""
    conn = sqlite3.connect(str(store.path))
    try:
        return int(conn.execute("SELECT COUNT(*) FROM forward_instances").fetchone()[0])
    finally:
        conn.close()


def test_rows_are_written_during_the_records_sync_and_committed_after_it(
    rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, store, spool, receiver = rig
    paths = write_series(tmp_path / "in", 2)
    real = os.fdatasync
    seen: list[tuple[int, bool]] = []

    def fdatasync(fd: int) -> None:
        # The rows are written already (this thread's transaction is open) but nobody
        # else sees them until the record is durable.
        seen.append((_committed_instances(store), store.db.conn.in_transaction))
        real(fd)

    monkeypatch.setattr(journal.os, "fdatasync", fdatasync)
    files = _received(receiver, store, paths)
    assert seen == [(0, True), (1, True)]
    assert _committed_instances(store) == 2
    assert [journal.parse_ref(f) is not None for f in files] == [True, True]


def test_a_failed_record_sync_commits_no_rows(
    rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, store, spool, receiver = rig
    path = write_series(tmp_path / "in", 1)[0]
    ds = dcmread(path)

    def fdatasync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(journal.os, "fdatasync", fdatasync)
    with pytest.raises(OSError) as failed:
        receiver.ingest(path, ds.SOPClassUID, ds.SOPInstanceUID,
                        str(ds.file_meta.TransferSyntaxUID), "MODALITY")  # fmt: skip
    assert refusal_for(failed.value, "MODALITY") == (
        status.OUT_OF_RESOURCES, "out of resources: spool write failed",
    )  # fmt: skip
    assert store.query("SELECT COUNT(*) AS n FROM forward_instances") == [{"n": 0}]
    assert store.query("SELECT COUNT(*) AS n FROM qr_instances") == [{"n": 0}]


def test_while_another_writer_holds_the_database_the_record_is_synced_first(
    rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer never waits for another's disk: with a write transaction of the process
    running, the record's sync comes before its own transaction begins."""
    cfg, store, spool, receiver = rig
    paths = write_series(tmp_path / "in", 1)
    real = os.fdatasync
    synced, holding = threading.Event(), threading.Event()
    outcome: list[bool] = []

    def fdatasync(fd: int) -> None:
        synced.set()
        real(fd)

    def other_writer() -> None:
        with store.write(durable=False):
            holding.set()
            outcome.append(synced.wait(5))  # released once the record was synced

    monkeypatch.setattr(journal.os, "fdatasync", fdatasync)
    thread = threading.Thread(target=other_writer)
    thread.start()
    assert holding.wait(5)
    files = _received(receiver, store, paths)
    thread.join(10)
    assert outcome == [True]
    assert len(files) == 1 and _committed_instances(store) == 1
