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
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from appliance.forward.wire import dataset_offset
from appliance.fsutil import fsync_path

CHUNK = 1 << 20


@dataclass(frozen=True)
class SpoolFile:
    """A file now durable in the spool: its path relative to the spool root, its version
    token (the name's random part) and size."""

    rel: str
    token: str
    size: int


class Spool:
    """The directory ``<data_dir>/spool`` with ``objects/`` and ``tmp/``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"

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
        for leftover in self.tmp.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()

    def free_bytes(self) -> int:
        """Free bytes on the spool's file system for an unprivileged writer."""
        return shutil.disk_usage(self.root).free

    def path(self, rel: str) -> Path:
        """Absolute path of a spooled file."""
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

    def same_bytes(self, rel: str, other: Path) -> bool:
        """True when the spooled file ``rel`` exists and holds exactly the data set of
        ``other`` (the File Meta groups may differ: they name who sent each copy)."""
        try:
            with open(self.root / rel, "rb") as a, open(other, "rb") as b:
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
        """Remove a spooled file; returns the bytes freed (0 when it was already gone)."""
        path = self.root / rel
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size
