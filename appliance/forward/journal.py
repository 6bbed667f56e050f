"""The journal spool: received instances appended to preallocated segment files.

A segment (``spool/journal/NNNNNNNN.seg``, ``forward.journal_segment_mb`` long, reserved
with fallocate when it is made) starts with a header block naming its sequence number;
records follow, each starting on a 4 KiB boundary::

    magic "DAJR" | segment seq u32 | serial u64 | payload length u64 | key length u16
    | flags u16 | checksum u32 | key (the SOP Instance UID) | padding to 8
    | payload (a PS3.10 file)

The serial grows with every record of the spool (across segments and restarts: it
starts from the clock), so of two records of one instance the later one is known. The
checksum is zlib's CRC-32 (no C CRC32C is in the standard library; zlib's runs in C)
of the payload, continued over the header bytes before it and the key. A record is
written in place (payload as it arrives, header last: ``Append.seal``, which also starts
its writeback) and made durable by one ``fdatasync`` (``Append.sync``) before the
C-STORE gets Success; the receiver writes the record's rows in between.

That sync carries no metadata when the segment's blocks were *written* beforehand, not
only allocated: on ext4 ``posix_fallocate`` makes unwritten extents, and the first write
into each of their blocks needs an extent conversion, a metadata journal commit, in the
``fdatasync`` that follows (measured 2026-12-04, 300 records of 513 KiB on this machine's
ext4: 0.32-0.48 s into fallocated space, 0.19-0.25 s into space written beforehand, and
0.31-0.34 s with ``O_DIRECT | O_DSYNC`` into written space, so buffered ``pwrite`` and
``fdatasync`` it is). So new records go into *spare* segments (``spare-NNNNNNNN.seg``)
whose every block was written before: a background thread (``start``) zero-fills a new
file ahead of need, while no record is being written, or gives a segment retention freed
(``freed-NNNNNNNN.seg``, its blocks written once already) the zeros of its unwritten tail.
Only when no spare is ready is a segment fallocated on the C-STORE path, as a fallback
(correct, slower). Zero-filling writes a segment's blocks twice in its first generation;
recycled segments are written once.

A record whose magic, sequence number or checksum is wrong ends its segment: a write torn
by a power cut, zeros of a prepared segment, or an older generation's bytes in a recycled
one.

Queue rows point at a record by a reference ``journal/NNNNNNNN.seg@OFFSET+LENGTH``
(payload offset and length), which :func:`parse_ref` reads; the spool's one reader
(``Spool.open``) opens it as a bounded file.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

log = logging.getLogger(__name__)

CHECKSUM = "crc32 (zlib)"
BLOCK = 4096
SEGMENT_MAGIC = b"DAJSEG01"
RECORD_MAGIC = b"DAJR"
_SEG_HEAD = struct.Struct("<8sQI")  # magic, seq, crc32 of the first 16 bytes
_REC_HEAD = struct.Struct("<4sIQQHHI")  # magic, seq, serial, length, key len, flags, crc
REC_FIXED = _REC_HEAD.size - 4  # the header bytes the checksum covers
SPARES = 2  # freed segments kept (blocks written) for reuse instead of deleted
ZERO_CHUNK = 1 << 20  # the preparer writes zeros this much at a time
ZERO_SYNC = 8 << 20  # and syncs them this often, so its writeback never queues much
QUIET = 1.0  # seconds without a record written before the preparer goes on
URGENT = 4  # prepare even while records are written once open room < 1/URGENT segment
_REF = re.compile(r"journal/([0-9]{8})\.seg@([0-9]+)\+([0-9]+)")


class JournalError(Exception):
    """A journal record could not be written or found."""


@dataclass(frozen=True)
class Location:
    """Where a record's payload lies: segment sequence, payload offset, length."""

    seq: int
    offset: int
    length: int

    @property
    def ref(self) -> str:
        return f"journal/{self.seq:08d}.seg@{self.offset}+{self.length}"


@dataclass(frozen=True)
class Record:
    """A complete record found by a scan."""

    location: Location
    key: str
    serial: int
    end: int  # where the next record may start


def parse_ref(ref: str) -> Location | None:
    """The location a queue row's ``file`` names, or None when it names a file."""
    m = _REF.fullmatch(ref)
    return Location(int(m[1]), int(m[2]), int(m[3])) if m else None


def is_ref(ref: str) -> bool:
    return ref.startswith("journal/")


def segment_name(seq: int) -> str:
    return f"{seq:08d}.seg"


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _payload_start(offset: int, key_len: int) -> int:
    return offset + _align(_REC_HEAD.size + key_len, 8)


class Segment:
    """One segment file open for appends by one writer at a time."""

    def __init__(
        self, path: Path, seq: int, fd: int, capacity: int, end: int, prepared: bool = False
    ) -> None:
        self.path, self.seq, self.fd, self.capacity, self.end = path, seq, fd, capacity, end
        self.prepared = prepared  # made from a spare: its blocks were written before

    @property
    def room(self) -> int:
        return self.capacity - self.end


def _write_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def write_segment_header(fd: int, seq: int) -> None:
    head = SEGMENT_MAGIC + struct.pack("<Q", seq)
    _write_all(fd, _SEG_HEAD.pack(SEGMENT_MAGIC, seq, zlib.crc32(head)), 0)


def read_segment_seq(fd: int) -> int | None:
    raw = os.pread(fd, _SEG_HEAD.size, 0)
    if len(raw) < _SEG_HEAD.size:
        return None
    magic, seq, crc = _SEG_HEAD.unpack(raw)
    if magic != SEGMENT_MAGIC or zlib.crc32(raw[:16]) != crc:
        return None
    return int(seq)


def scan(path: Path, start: int = BLOCK) -> Iterator[Record]:
    """Every complete record of a segment from ``start`` (a record boundary, the segment's
    checkpoint); the first torn or foreign record ends it (PS3.10 payloads not parsed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        seq = read_segment_seq(fd)
        if seq is None:
            return
        size = os.fstat(fd).st_size
        pos = max(start, BLOCK)
        while pos + _REC_HEAD.size <= size:
            found = _read_record(fd, seq, pos, size)
            if found is None:
                return
            yield found
            pos = found.end
    finally:
        os.close(fd)


def _read_record(fd: int, seq: int, pos: int, size: int) -> Record | None:
    head = os.pread(fd, _REC_HEAD.size, pos)
    magic, rseq, serial, length, key_len, _flags, crc = _REC_HEAD.unpack(head)
    if magic != RECORD_MAGIC or rseq != seq or key_len > 256:
        return None
    key = os.pread(fd, key_len, pos + _REC_HEAD.size)
    start = _payload_start(pos, key_len)
    if start + length > size or len(key) != key_len:
        return None
    got, at, left = 0, start, length
    while left:
        chunk = os.pread(fd, min(left, 1 << 20), at)
        if not chunk:
            return None
        got = zlib.crc32(chunk, got)
        at, left = at + len(chunk), left - len(chunk)
    if zlib.crc32(head[:REC_FIXED] + key, got) != crc:
        return None
    key_text = key.decode("ascii", "replace")
    return Record(Location(seq, start, length), key_text, serial, _align(at, BLOCK))


def written_end(fd: int) -> int:
    """Where the records of a segment end, walking their headers only (no checksums):
    the part after it may never have been written. A torn last record can make this too
    far: its unwritten blocks are then converted by the next generation's sync (slower,
    never wrong)."""
    seq = read_segment_seq(fd)
    size = os.fstat(fd).st_size
    if seq is None:  # a freed segment: its header was wiped, read the first record's
        raw = os.pread(fd, _REC_HEAD.size, BLOCK)
        if len(raw) < _REC_HEAD.size or raw[:4] != RECORD_MAGIC:
            return BLOCK
        seq = _REC_HEAD.unpack(raw)[1]
    pos = BLOCK
    while pos + _REC_HEAD.size <= size:
        magic, rseq, _serial, length, key_len, _f, _c = _REC_HEAD.unpack(
            os.pread(fd, _REC_HEAD.size, pos)
        )
        if magic != RECORD_MAGIC or rseq != seq or key_len > 256:
            break
        end = _align(_payload_start(pos, key_len) + length, BLOCK)
        if end > _align(size, BLOCK):
            break
        pos = end
    return min(pos, size)


def _libc_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's sync_file_range(2) from the C library, or None where there is none."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], fn)


_SYNC_FILE_RANGE = _libc_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2  # start writing the range's dirty pages, do not wait


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a range's dirty pages to the device without waiting (a hint: only
    a sync makes them durable; a failure is left to that sync). One call per record:
    per PDU it cost more CPU than the sync saved."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _zero_fill(fd: int, start: int, end: int, pace: Callable[[], bool]) -> int:
    """Write zeros over [start, end) (``pace`` waits for a quiet moment and is False to
    stop); returns the bytes written, ``end - start`` when done."""
    zeros = bytes(ZERO_CHUNK)
    pos, unsynced = start, 0
    while pos < end:
        if not pace():
            return pos - start
        n = min(ZERO_CHUNK, end - pos)
        _write_all(fd, memoryview(zeros)[:n], pos)
        pos, unsynced = pos + n, unsynced + n
        if unsynced >= ZERO_SYNC:
            os.fdatasync(fd)
            unsynced = 0
    os.fsync(fd)
    return end - start


class Append:
    """One record being written: payload as it arrives, then ``commit`` (header, sync)."""

    def __init__(self, journal: Journal, segment: Segment, key: str, serial: int) -> None:
        self.journal = journal
        self.serial = serial
        self.segment = segment
        self.key = key.encode("ascii", "replace")[:256]
        self.offset = segment.end
        self.start = _payload_start(self.offset, len(self.key))
        self.size = 0
        self.crc = 0
        self.committed = False
        self.done = False

    @property
    def location(self) -> Location:
        return Location(self.segment.seq, self.start, self.size)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append payload bytes (past the preallocated end the file simply grows)."""
        _write_all(self.segment.fd, data, self.start + self.size)
        self.size += len(data)
        self.crc = zlib.crc32(data, self.crc)

    def commit(self) -> Location:
        """Write the header and make the record durable (one fdatasync)."""
        location = self.seal()
        self.sync()
        return location

    def seal(self) -> Location:
        """Write the header (the payload is complete) and start the record's writeback,
        so that the device writes it while the caller works on; ``sync`` makes it durable
        (and waits for less)."""
        seg = self.segment
        fixed = _REC_HEAD.pack(RECORD_MAGIC, seg.seq, self.serial, self.size, len(self.key), 0, 0)
        fixed = fixed[:REC_FIXED]
        crc = zlib.crc32(fixed + self.key, self.crc)
        _write_all(seg.fd, fixed + struct.pack("<I", crc) + self.key, self.offset)
        start_writeback(seg.fd, self.offset, self.start + self.size - self.offset)
        return self.location

    def sync(self) -> None:
        """Make the sealed record durable (one fdatasync); the next record goes after it."""
        os.fdatasync(self.segment.fd)
        self.segment.end = _align(self.start + self.size, BLOCK)
        self.committed = True
        self.journal.last_write = time.monotonic()

    def close(self) -> None:
        """Give the segment back to the journal, once the record's rows are committed
        (a segment in use is never freed); an uncommitted record is dropped: the next
        one is written over it."""
        if not self.done:
            self.done = True
            self.journal.release(self.segment)

    abort = close


class Journal:
    """The segments under ``spool/journal``: writers take a segment each, so streams of
    concurrent associations never interleave; a full segment is sealed. Spare segments
    (blocks written) are made ahead of need by the preparer thread (``start``)."""

    def __init__(self, root: Path, segment_bytes: int) -> None:
        self.root = Path(root)
        self.segment_bytes = max(_align(segment_bytes, BLOCK), 4 * BLOCK)
        self._lock = threading.Lock()
        self._idle: list[Segment] = []  # open for appends, not in use
        self._busy: dict[int, Segment] = {}
        self._next = 1
        self._serial = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._preparer: threading.Thread | None = None
        self.last_write = 0.0  # monotonic time of the last record committed
        self.zeroed_bytes = 0  # zeros the preparer wrote
        self.unprepared = 0  # segments taken with no spare ready (fallocated, slower)
        self._held: int | None = None  # bytes of spare, freed and prep files (cached)
        self._held_gen = 0

    # -- segments --------------------------------------------------------------

    def prepare(self) -> None:
        """Create the folder; every segment found is sealed until recovery reopens the
        newest one (``reopen``); a spare cut short by a stop or a crash is removed."""
        self.root.mkdir(parents=True, exist_ok=True)
        for tmp in self.root.glob("prep-*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self._changed()
        seqs = self.sequences()
        self._next = max(seqs, default=0) + 1

    def reopen(self, seq: int, end: int) -> bool:
        """Append to segment ``seq`` again from ``end`` (where its scan stopped: the
        records before it all have rows), so a restart does not leave its tail unused;
        False when it has no room left or is not a segment of this journal."""
        path = self.path(seq)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        if read_segment_seq(fd) != seq or os.fstat(fd).st_size - end <= BLOCK:
            os.close(fd)
            return False
        with self._lock:
            self._idle.append(Segment(path, seq, fd, os.fstat(fd).st_size, end))
        return True

    def sequences(self) -> list[int]:
        """Sequence numbers of the segments on disk, oldest first."""
        out = []
        for p in self.root.glob("*.seg"):
            with contextlib.suppress(ValueError):
                out.append(int(p.stem))
        return sorted(out)

    def path(self, seq: int) -> Path:
        return self.root / segment_name(seq)

    def spares(self) -> list[Path]:
        """Spare segments ready for new records (every block written), oldest first."""
        return sorted(self.root.glob("spare-*.seg"))

    def freed(self) -> list[Path]:
        """Freed segments not yet made spares (their tail may be unwritten)."""
        return sorted(self.root.glob("freed-*.seg"))

    def active(self) -> set[int]:
        """Segments open for appends (never freed or compacted)."""
        with self._lock:
            return {s.seq for s in self._idle} | set(self._busy)

    def writing(self) -> int:
        """How many records are being written now."""
        with self._lock:
            return len(self._busy)

    def open_room(self) -> int:
        """Bytes left for records in the segments open for appends."""
        with self._lock:
            return sum(max(s.room, 0) for s in [*self._idle, *self._busy.values()])

    def unused_bytes(self) -> int:
        """Preallocated bytes not yet written in open segments, and the spares kept for
        reuse or being made: space the journal holds but will write new records into
        (free, for the disk reserve). Asked before every C-STORE: the spares' sizes are
        read from the folder only after the journal changed them."""
        return self.open_room() + self._held_bytes()

    def _held_bytes(self) -> int:
        with self._lock:
            if self._held is not None:
                return self._held
            gen = self._held_gen
        total = 0
        with contextlib.suppress(FileNotFoundError), os.scandir(self.root) as entries:
            for entry in entries:
                if entry.name.startswith(("spare-", "freed-", "prep-")):
                    with contextlib.suppress(FileNotFoundError):
                        total += entry.stat().st_size
        with self._lock:
            if gen == self._held_gen:
                self._held = total
        return total

    def _changed(self) -> None:
        """Spare, freed or prep files were made, renamed or removed."""
        with self._lock:
            self._forget_held()

    def _forget_held(self) -> None:  # with self._lock held
        self._held = None
        self._held_gen += 1

    def begin(self, key: str, serial: int | None = None) -> Append:
        """A new record for instance ``key`` in a segment this writer has to itself
        (``serial`` kept when compaction copies a record)."""
        with self._lock:
            while self._idle:
                seg = self._idle.pop()
                if seg.room > BLOCK:
                    break
                self._seal(seg)
            else:
                seg = self._new_segment()
            self._busy[seg.seq] = seg
            if serial is None:
                self._serial = max(self._serial + 1, time.time_ns())
                serial = self._serial
        return Append(self, seg, key, serial)

    def release(self, seg: Segment) -> None:
        with self._lock:
            self._busy.pop(seg.seq, None)
            if seg.room > BLOCK:
                self._idle.append(seg)
            else:
                self._seal(seg)
        self.last_write = time.monotonic()  # the preparer looks again within a second

    def _seal(self, seg: Segment) -> None:
        with contextlib.suppress(OSError):
            os.close(seg.fd)
        seg.fd = -1

    def _new_segment(self) -> Segment:
        """A spare (blocks written), else a freed segment (most blocks written), else,
        when the preparer is behind, a new file only allocated (its first sync per
        block converts the extent: slower)."""
        seq = self._next
        self._next += 1
        path = self.path(seq)
        spares = self.spares()
        recycled = spares or self.freed()
        if recycled:
            os.rename(recycled[0], path)
            self._forget_held()
            fd = os.open(path, os.O_RDWR)
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.segment_bytes)
            except OSError:
                os.close(fd)
                os.unlink(path)
                raise
            self.unprepared += 1
            log.info("journal: no spare segment ready, segment %d only allocated", seq)
        write_segment_header(fd, seq)
        os.fsync(fd)
        _fsync_dir(self.root)
        self._wake.set()  # the preparer makes the next spare
        capacity = max(os.fstat(fd).st_size, self.segment_bytes)
        return Segment(path, seq, fd, capacity, BLOCK, prepared=bool(spares))

    def free(self, seq: int) -> int:
        """Give a sealed segment's space back: kept for reuse (its header wiped, so no
        scan reads its old records; the preparer writes its unwritten tail) or deleted;
        returns bytes freed."""
        if seq in self.active():
            raise JournalError(f"segment {seq} is open for appends")
        path = self.path(seq)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return 0
        if len(self.spares()) + len(self.freed()) < SPARES:
            fd = os.open(path, os.O_RDWR)
            try:
                _write_all(fd, bytes(_SEG_HEAD.size), 0)
                os.fdatasync(fd)
            finally:
                os.close(fd)
            os.rename(path, self.root / f"freed-{seq:08d}.seg")
            freed = 0
        else:
            path.unlink()
            freed = size
        _fsync_dir(self.root)
        self._changed()
        self._wake.set()
        return freed

    # -- the preparer ------------------------------------------------------------

    def start(self) -> None:
        """Start the thread that keeps a spare segment ready."""
        if self._preparer is not None and self._preparer.is_alive():
            return
        self._stop.clear()
        self._wake.set()
        self._preparer = threading.Thread(
            target=self._prepare_loop, name="journal-preparer", daemon=True
        )
        self._preparer.start()

    def preparing(self) -> bool:
        """True while the preparer is writing a spare."""
        return any(self.root.glob("prep-*.tmp"))

    def _prepare_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                while not self._stop.is_set() and self.make_spare():
                    pass
            except OSError as exc:  # a full disk: the writers fall back; retried in a minute
                log.error("journal: a spare segment could not be made: %s", exc.strerror)
                self._stop.wait(60.0)

    def _quiet(self) -> bool:
        """Wait until no record is being written (for ``QUIET`` s), or the open segments
        are nearly full (then go on regardless); False once stopping."""
        while not self._stop.is_set():
            if self.open_room() < self.segment_bytes // URGENT:
                return True
            if self.writing() == 0 and time.monotonic() - self.last_write >= QUIET:
                return True
            self._stop.wait(0.05)
        return False

    def make_spare(self) -> bool:
        """One step of the preparer: a freed segment made a spare (zeros over its
        unwritten tail) or, when no spare is ready, a new file zero-filled; False when
        there is nothing to do (or stopping). The file being prepared is ``prep-*.tmp``,
        a name writers never take."""
        tmp = self.root / f"prep-{time.time_ns():020d}.tmp"
        with self._lock:  # claimed where no writer looks, so none takes it meanwhile
            freed = self.freed()
            if freed:
                os.rename(freed[0], tmp)
            elif self.spares():
                return False
            self._forget_held()
        if freed:
            fd = os.open(tmp, os.O_RDWR)
        else:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if freed:
                start, size = written_end(fd), max(os.fstat(fd).st_size, self.segment_bytes)
            else:
                os.posix_fallocate(fd, 0, self.segment_bytes)
                start, size = 0, self.segment_bytes
            self._changed()  # its size is known now
            done = _zero_fill(fd, start, size, self._quiet)
            self.zeroed_bytes += done
        except OSError:
            os.close(fd)
            tmp.unlink()
            self._changed()
            raise
        os.close(fd)
        if done < size - start:  # stopping: a freed segment stays one, a new file goes
            if freed:
                os.rename(tmp, freed[0])
            else:
                tmp.unlink()
            self._changed()
            return False
        os.rename(tmp, self.root / f"spare-{tmp.stem[5:]}.seg")
        _fsync_dir(self.root)
        self._changed()
        return True

    def close(self) -> None:
        """Stop the preparer (a spare it was making is removed) and seal every segment."""
        self._stop.set()
        self._wake.set()
        thread, self._preparer = self._preparer, None
        if thread is not None:
            thread.join(30)
        if thread is None or not thread.is_alive():
            self._stop.clear()  # a closed journal can still be written (and prepared) by hand
        with self._lock:
            for seg in [*self._idle, *self._busy.values()]:
                self._seal(seg)
            self._idle.clear()
            self._busy.clear()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
