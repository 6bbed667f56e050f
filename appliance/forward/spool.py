"""The spool: received instances kept as PS3.10 files, written durably, named at random.

Durability order (design.md): the received file is fsynced, renamed into the spool (on
the same file system, so the move is atomic) and the directory is fsynced; only then
does the caller commit the queue rows and answer Success. A file's name is a random
token, never a UID or an AE title; its File Meta group carries everything needed to
queue it again (``Receiver.recover``), so a file in ``objects/`` is itself the durable
record of an acknowledged instance.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.forward import journal as journal_mod
from appliance.forward.journal import Journal
from appliance.forward.wire import dataset_offset
from appliance.fsutil import fsync_path

CHUNK = 1 << 20
MODES = ("journal", "files")
DEFAULT_SEGMENT_BYTES = 256 << 20


class StoredFile(io.RawIOBase):
    """A spooled instance opened for reading: a whole file, or one journal record's
    ``length`` bytes at ``offset`` of its segment, seen as a file of its own (offset 0
    is the record's first byte). ``raw`` and ``start`` let a sender read the bytes
    straight from the segment."""

    def __init__(self, path: Path, offset: int = 0, length: int | None = None) -> None:
        super().__init__()
        self.raw = open(path, "rb", buffering=0)  # noqa: SIM115 (closed with this object)
        self.start = offset
        self.length = os.fstat(self.raw.fileno()).st_size - offset if length is None else length
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self.length - self._pos)
        if n <= 0:
            return 0
        got = os.preadv(self.raw.fileno(), [view[:n]], self.start + self._pos)
        self._pos += got
        return got

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.length}[whence]
        self._pos = max(base + pos, 0)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self.raw.close()
        super().close()


@dataclass(frozen=True)
class SpoolFile:
    """A file now durable in the spool: its path relative to the spool root, its version
    token (the name's random part) and size."""

    rel: str
    token: str
    size: int


class Spool:
    """The directory ``<data_dir>/spool`` with ``objects/`` and ``tmp/`` (the file per
    image spool) and ``journal/`` (the segments); ``mode`` says where new images go,
    both are read."""

    def __init__(
        self, root: Path, mode: str = "files", segment_bytes: int = DEFAULT_SEGMENT_BYTES
    ) -> None:
        self.root = Path(root)
        self.mode = mode
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        self.journal = Journal(self.root / "journal", segment_bytes)

    @property
    def journaled(self) -> bool:
        """True when new images are appended to the journal."""
        return self.mode == "journal"

    def open(self, ref: str) -> StoredFile:
        """The one reader of spooled instances: a queue row's ``file`` (a file's path
        relative to the spool, or a journal reference) opened as a read-only file.
        Raises FileNotFoundError when it is gone."""
        loc = journal_mod.parse_ref(ref)
        if loc is None:
            return StoredFile(self.root / ref)
        return StoredFile(self.journal.path(loc.seq), loc.offset, loc.length)

    def size(self, ref: str) -> int:
        loc = journal_mod.parse_ref(ref)
        return loc.length if loc is not None else (self.root / ref).stat().st_size

    def prepare(self) -> None:
        """Create the directories (the 256 shards of ``objects/`` too, so that no receive
        pays for a mkdir) and remove temporary files a crash left behind."""
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        made = False
        for n in range(256):
            shard = self.objects / f"{n:02x}"
            if not shard.exists():
                shard.mkdir(exist_ok=True)
                made = True
        if made:
            fsync_path(self.objects)
        self.journal.prepare()
        for leftover in self.tmp.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()

    def free_bytes(self) -> int:
        """Free bytes on the spool's file system for an unprivileged writer."""
        return shutil.disk_usage(self.root).free + self.journal.unused_bytes()

    def path(self, rel: str) -> Path:
        """Absolute path of a spooled file (file per image spool; readers use ``open``)."""
        return self.root / rel

    def new_temp(self) -> tuple[int, str]:
        """A new file in ``tmp/`` for a data set being received: (descriptor, path)."""
        return tempfile.mkstemp(dir=self.tmp, suffix=".part")

    def place(self, src: Path, synced: bool = False, size: int | None = None) -> SpoolFile:
        """Move a complete received file into the spool durably; ``src`` is consumed.
        ``synced`` when the writer fsynced it already; ``size`` when it knows it."""
        token = secrets.token_hex(16)
        rel = f"objects/{token[:2]}/{token}.dcm"
        dst = self.root / rel
        parent = dst.parent
        if not parent.exists():
            parent.mkdir(exist_ok=True)
            fsync_path(self.objects)
        size = os.stat(src).st_size if size is None else size
        try:
            if not synced:
                fsync_path(src)
            os.rename(src, dst)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            self._copy_in(src, dst)
            os.unlink(src)
        fsync_path(parent)
        return SpoolFile(rel, token, size)

    def same_bytes(self, rel: str, other: Path | str) -> bool:
        """True when the spooled ``rel`` exists and holds exactly the data set of
        ``other`` (a file, or a spool reference; the File Meta groups may differ: they
        name who sent each copy)."""
        try:
            b_file = self.open(other) if isinstance(other, str) else open(other, "rb")  # noqa: SIM115
            with self.open(rel) as a, b_file as b:
                a.seek(dataset_offset(a))
                b.seek(dataset_offset(b))
                while True:
                    x, y = a.read(CHUNK), b.read(CHUNK)
                    if x != y:
                        return False
                    if not x:
                        return True
        except OSError:
            return False

    def spooled(self) -> list[str]:
        """Every file in ``objects/``, relative to the spool root."""
        return [f"objects/{p.parent.name}/{p.name}" for p in self.objects.glob("*/*.dcm")]

    def _copy_in(self, src: Path, dst: Path) -> None:
        """Copy across file systems: temporary file in spool/tmp, fsync, rename."""
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                shutil.copyfileobj(inp, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.rename(tmp_name, dst)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise

    def delete(self, rel: str) -> int:
        """Remove a spooled file; returns the bytes freed (0 when it was already gone).
        A journal record is not removed alone: retention frees its whole segment."""
        if journal_mod.is_ref(rel):
            return 0
        path = self.root / rel
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size
