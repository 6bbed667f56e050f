"""The journal's segments and records: framing, torn writes, recycled segments, the reader."""

from __future__ import annotations

import fcntl
import os
import struct
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.forward import journal
from appliance.forward.journal import BLOCK, Journal, parse_ref, scan
from appliance.forward.spool import Spool
from tests.helpers import wait_for

SEG = 1 << 20


def _append(j: Journal, key: str, payload: bytes, pieces: int = 3) -> journal.Location:
    a = j.begin(key)
    step = max(1, len(payload) // pieces)
    for i in range(0, len(payload), step):
        a.write(payload[i : i + step])
    loc = a.commit()
    a.close()
    return loc


FS_IOC_FIEMAP = 0xC020660B
FIEMAP_EXTENT_UNWRITTEN = 0x800
_FIEMAP = struct.Struct("=QQIIII")
_EXTENT = struct.Struct("=QQQ16xI12x")


def _unwritten_bytes(path: Path) -> int | None:
    """Bytes of ``path`` in unwritten (allocated, never written) extents, from FIEMAP;
    None where the file system does not say (tmpfs)."""
    count = 512
    req = bytearray(_FIEMAP.pack(0, 2**64 - 1, 0, 0, count, 0) + bytes(_EXTENT.size * count))
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, FS_IOC_FIEMAP, req)
        finally:
            os.close(fd)
    except OSError:
        return None
    mapped = _FIEMAP.unpack_from(req)[3]
    total = 0
    for i in range(mapped):
        _logical, _physical, length, flags = _EXTENT.unpack_from(
            req, _FIEMAP.size + i * _EXTENT.size
        )
        if flags & FIEMAP_EXTENT_UNWRITTEN:
            total += length
    return total


def _reports_unwritten(tmp: Path) -> bool:
    """Whether this file system shows a fallocated file's extents as unwritten (ext4,
    xfs do; the control that lets the FIEMAP assertions below fail)."""
    probe = tmp / "probe"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, 16 * BLOCK)
    finally:
        os.close(fd)
    got = _unwritten_bytes(probe)
    probe.unlink()
    return bool(got)


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    s = Spool(tmp_path / "spool", "journal", SEG)
    s.prepare()
    yield s
    s.journal.close()


def test_records_scan_back_with_their_keys_and_read_byte_for_byte(spool: Spool) -> None:
    payloads = [os.urandom(n) for n in (1, 5000, 70_000)]
    locs = [_append(spool.journal, f"1.2.{n}", p) for n, p in enumerate(payloads)]
    assert len({loc.seq for loc in locs}) == 1  # one writer at a time: one segment
    found = list(scan(spool.journal.path(locs[0].seq)))
    assert [r.location for r in found] == locs
    assert [r.key for r in found] == ["1.2.0", "1.2.1", "1.2.2"]
    assert all(r.location.offset % 8 == 0 and (r.end % BLOCK) == 0 for r in found)
    for loc, payload in zip(locs, payloads, strict=True):
        assert parse_ref(loc.ref) == loc
        with spool.open(loc.ref) as f:
            assert f.read() == payload
            f.seek(2)
            assert f.read(3) == payload[2:5]
        assert spool.size(loc.ref) == len(payload)


def test_segment_file_is_preallocated_to_its_size(spool: Spool) -> None:
    loc = _append(spool.journal, "1.2.3", b"x" * 10)
    path = spool.journal.path(loc.seq)
    st_ = path.stat()
    assert st_.st_size == SEG
    assert st_.st_blocks * 512 >= SEG  # the blocks are reserved, not a sparse file


def test_a_record_cut_short_ends_the_segment(spool: Spool) -> None:
    """A power cut in the middle of a record's write: everything before it survives."""
    a = _append(spool.journal, "1.1", os.urandom(9000))
    b = _append(spool.journal, "1.2", os.urandom(9000))
    path = spool.journal.path(a.seq)
    spool.journal.close()
    os.truncate(path, b.offset + 4000)  # truncated mid-record
    assert [r.location for r in scan(path)] == [a]


@pytest.mark.parametrize("where", ["payload", "header", "key"])
def test_a_flipped_byte_ends_the_segment_at_that_record(spool: Spool, where: str) -> None:
    locs = [_append(spool.journal, f"1.{n}", os.urandom(6000)) for n in range(3)]
    path = spool.journal.path(locs[0].seq)
    target = locs[1]
    at = {
        "payload": target.offset + 1234,
        "header": target.offset - 8 - 16,  # inside the payload length field
        "key": target.offset - 8,
    }[where]
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x40]))
    assert [r.location for r in scan(path)] == [locs[0]]


def test_an_uncommitted_record_is_not_found_and_is_written_over(spool: Spool) -> None:
    a = spool.journal.begin("1.9")
    a.write(b"partial data set")
    a.abort()  # refused: no header was written, nothing synced
    assert list(scan(spool.journal.path(a.segment.seq))) == []
    loc = _append(spool.journal, "1.10", b"next")
    assert loc.offset == journal._payload_start(a.offset, len("1.10"))  # in its place
    assert [r.key for r in scan(spool.journal.path(loc.seq))] == ["1.10"]


def test_concurrent_writers_get_segments_of_their_own(spool: Spool) -> None:
    a = spool.journal.begin("1.1")
    b = spool.journal.begin("1.2")
    assert a.segment.seq != b.segment.seq
    a.write(b"a" * 100)
    b.write(b"b" * 100)
    la, lb = a.commit(), b.commit()
    a.close()
    b.close()
    assert spool.open(la.ref).read() == b"a" * 100
    assert spool.open(lb.ref).read() == b"b" * 100


def test_a_full_segment_is_sealed_and_a_record_larger_than_one_still_fits(spool: Spool) -> None:
    big = os.urandom(SEG + 5000)  # longer than a segment: that segment grows for it
    loc = _append(spool.journal, "1.1", big, pieces=7)
    assert spool.open(loc.ref).read() == big
    assert loc.seq not in spool.journal.active()  # sealed once full
    nxt = _append(spool.journal, "1.2", b"small")
    assert nxt.seq > loc.seq
    assert [r.location for r in scan(spool.journal.path(loc.seq))] == [loc]


def test_a_freed_segment_is_recycled_and_its_old_records_are_never_read(spool: Spool) -> None:
    j = spool.journal
    old = [_append(j, f"1.{n}", os.urandom(20_000)) for n in range(5)]
    first = old[0].seq
    big = _append(j, "1.99", os.urandom(SEG))  # fills and seals the first segment
    assert big.seq == first and first not in j.active()
    with pytest.raises(journal.JournalError):
        j.free(_append(j, "1.100", b"x").seq)  # open for appends: never freed
    assert j.free(first) == 0  # kept as a spare: its blocks stay written
    assert not j.path(first).exists()
    j.close()  # the open segment is sealed: the next record needs a new segment
    fresh = _append(j, "2.0", b"new generation")
    reused = j.path(fresh.seq)
    assert fresh.seq > first and reused.stat().st_size > SEG  # the spare, renamed
    assert [r.key for r in scan(reused)] == ["2.0"]  # the old generation is not read
    found = [r.key for seq in j.sequences() for r in scan(j.path(seq))]
    assert "1.0" not in found and sorted(found) == ["1.100", "2.0"]


def test_free_space_counts_the_unwritten_part_of_open_segments(spool: Spool) -> None:
    """The reservation of an open segment is not "used" for the A700 reserve check."""
    loc = _append(spool.journal, "1.1", b"x" * 100)
    assert loc.seq in spool.journal.active()
    assert spool.journal.unused_bytes() == SEG - 2 * BLOCK  # the header block, one record
    spool.journal.close()
    assert spool.journal.unused_bytes() == 0
    assert spool.journal.free(loc.seq) == 0  # kept as a spare: counted as free
    assert spool.journal.unused_bytes() == SEG
    assert spool.journal.make_spare()  # freed -> spare: still free, no more
    assert spool.journal.unused_bytes() == SEG
    assert spool.journal.make_spare() is False
    _append(spool.journal, "1.2", b"y" * 100)  # the spare becomes the open segment
    assert spool.journal.unused_bytes() == SEG - 2 * BLOCK
    assert spool.journal.make_spare()  # a new spare, zero-filled: free space too
    assert spool.journal.unused_bytes() == 2 * SEG - 2 * BLOCK


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=3000), min_size=1, max_size=6), st.data())
def test_any_cut_keeps_exactly_the_records_before_it(
    tmp_path_factory: pytest.TempPathFactory, payloads: list[bytes], data: st.DataObject
) -> None:
    root = tmp_path_factory.mktemp("j")
    j = Journal(root, 64 * BLOCK)
    j.prepare()
    locs = [_append(j, f"1.{n}", p) for n, p in enumerate(payloads)]
    j.close()
    path = j.path(locs[0].seq)
    cut = data.draw(st.integers(min_value=BLOCK, max_value=locs[-1].offset + len(payloads[-1])))
    os.truncate(path, cut)
    kept = [loc for loc in locs if loc.offset + loc.length <= cut]
    assert [r.location for r in scan(path)] == kept


def test_the_preparer_makes_a_spare_whose_blocks_are_all_written_and_records_go_there(
    tmp_path: Path,
) -> None:
    j = Journal(tmp_path / "j", SEG)
    j.prepare()
    j.start()
    try:
        [spare] = wait_for(lambda: j.spares())
        assert spare.stat().st_size == SEG and spare.read_bytes() == bytes(SEG)
        if _reports_unwritten(tmp_path):
            assert _unwritten_bytes(spare) == 0  # written, not only allocated
        loc = _append(j, "1.1", os.urandom(70_000))
        assert not spare.exists() and j.unprepared == 0
        with j._lock:
            [seg] = j._idle
        assert seg.seq == loc.seq and seg.prepared
        if _reports_unwritten(tmp_path):
            assert _unwritten_bytes(j.path(loc.seq)) == 0
        assert [r.location for r in scan(j.path(loc.seq))] == [loc]
        wait_for(lambda: j.spares())  # the next one, made once the writer is quiet
    finally:
        j.close()


def test_with_no_spare_ready_a_record_goes_into_an_allocated_segment(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j", SEG)
    j.prepare()  # no preparer running
    loc = _append(j, "1.1", b"x" * 5000)
    assert j.unprepared == 1
    if _reports_unwritten(tmp_path):
        assert (_unwritten_bytes(j.path(loc.seq)) or 0) > SEG // 2  # the slow path
    assert [r.location for r in scan(j.path(loc.seq))] == [loc]
    j.close()


def test_a_freed_segment_gets_zeros_over_its_unwritten_tail_only(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j", SEG)
    j.prepare()
    old = [_append(j, f"1.{n}", os.urandom(30_000)) for n in range(3)]
    j.close()  # sealed with most of its room unused
    path = j.path(old[0].seq)
    before = path.read_bytes()
    end = old[-1].offset + old[-1].length
    assert j.free(old[0].seq) == 0
    [freed] = j.freed()
    fd = os.open(freed, os.O_RDONLY)
    try:
        assert journal.written_end(fd) == journal._align(end, BLOCK)  # header wiped
    finally:
        os.close(fd)
    assert j.make_spare() and j.freed() == []
    [spare] = j.spares()
    after = spare.read_bytes()
    assert after[: journal._SEG_HEAD.size] == bytes(journal._SEG_HEAD.size)
    assert after[BLOCK:end] == before[BLOCK:end]  # the records' blocks not written again
    assert after[journal._align(end, BLOCK) :] == bytes(SEG - journal._align(end, BLOCK))
    if _reports_unwritten(tmp_path):
        assert _unwritten_bytes(spare) == 0
    assert not j.make_spare()  # a spare is ready: nothing to do
    new = _append(j, "2.0", b"next generation")
    assert new.seq > old[0].seq and [r.key for r in scan(j.path(new.seq))] == ["2.0"]
    j.close()


def test_the_preparer_waits_while_a_record_is_written(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j", SEG)
    j.prepare()
    a = j.begin("1.1")  # an allocated segment, room left: not urgent
    a.write(b"y" * 1000)
    j.start()
    try:
        time.sleep(0.4)
        assert j.zeroed_bytes == 0 and j.spares() == []
        a.commit()
        a.close()
        wait_for(lambda: j.spares(), timeout=10)
        assert j.zeroed_bytes == SEG
    finally:
        j.close()


def test_a_stop_removes_a_spare_cut_short_and_a_restart_removes_a_left_one(
    tmp_path: Path,
) -> None:
    j = Journal(tmp_path / "j", SEG)
    j.prepare()
    a = j.begin("1.1")
    j.start()
    wait_for(lambda: list(j.root.glob("prep-*.tmp")))  # started, waiting for quiet
    j.close()
    a.close()
    assert list(j.root.glob("prep-*.tmp")) == [] and j.spares() == []
    (j.root / "prep-00000000000000000001.tmp").write_bytes(b"\0" * 100)  # a crash's
    j.prepare()
    assert list(j.root.glob("prep-*.tmp")) == []


def test_a_stop_while_a_freed_segment_is_recycled_keeps_it_freed(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j", SEG)
    j.prepare()
    old = _append(j, "1.1", os.urandom(5000))
    j.close()  # sealed
    a = j.begin("1.2")  # a writer busy in a new segment, with room: not urgent
    assert j.free(old.seq) == 0
    [freed] = j.freed()
    j.start()
    wait_for(lambda: list(j.root.glob("prep-*.tmp")))  # claimed, waiting for quiet
    assert j.freed() == []
    j.close()
    a.close()
    assert j.freed() == [freed] and list(j.root.glob("prep-*.tmp")) == []
    zeroed = j.zeroed_bytes
    assert j.make_spare() and len(j.spares()) == 1 and j.freed() == []
    assert 0 < j.zeroed_bytes - zeroed < SEG  # its tail only: the freed one, recycled


def test_torn_records_in_a_prepared_segment_end_it_at_the_last_whole_one(
    tmp_path: Path,
) -> None:
    """In a zero-filled segment a power cut leaves zeros, not a short file: a record whose
    header never reached the disk, or whose payload did only in part, ends the scan."""
    j = Journal(tmp_path / "j", SEG)
    j.prepare()
    assert j.make_spare()
    a = _append(j, "1.1", os.urandom(9000))
    b = _append(j, "1.2", os.urandom(9000))
    c = _append(j, "1.3", os.urandom(9000))
    path = j.path(a.seq)
    j.close()
    assert [r.location for r in scan(path)] == [a, b, c]
    with open(path, "r+b") as f:  # c's payload block 2 never written: still zeros
        f.seek(journal._align(c.offset, BLOCK) + BLOCK)
        f.write(bytes(BLOCK))
    assert [r.location for r in scan(path)] == [a, b]
    with open(path, "r+b") as f:  # b's header never written
        f.seek(b.offset - journal._align(journal._REC_HEAD.size + 3, 8))
        f.write(bytes(journal._REC_HEAD.size))
    assert [r.location for r in scan(path)] == [a]
