"""The spool: received instances kept as PS3.10 files, written durably, named by hashes.

Durability order (design.md): the received file is fsynced, renamed into the spool
(on the same file system, so the move is atomic) and the directory is fsynced; only
then does the caller commit the queue rows and answer Success. A file's name is the
SHA-256 of its bytes, never a UID or an AE title, so the same instance received twice
lands on the same name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from appliance.fsutil import fsync_dir

CHUNK = 1 << 20


@dataclass(frozen=True)
class SpoolFile:
    """A file now durable in the spool: its path relative to the spool root, digest, size."""

    rel: str
    digest: str
    size: int
    existed: bool


def file_digest(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


class Spool:
    """The directory ``<data_dir>/spool`` with ``objects/`` and ``tmp/``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"

    def prepare(self) -> None:
        """Create the directories and remove temporary files a crash left behind."""
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()

    def free_bytes(self) -> int:
        """Free bytes on the spool's file system for an unprivileged writer."""
        return shutil.disk_usage(self.root).free

    def path(self, rel: str) -> Path:
        """Absolute path of a spooled file."""
        return self.root / rel

    def commit(self, src: Path) -> SpoolFile:
        """Move a complete received file into the spool durably; ``src`` is consumed."""
        digest, size = file_digest(src)
        rel = f"objects/{digest[:2]}/{digest}.dcm"
        dst = self.root / rel
        if dst.exists():
            return SpoolFile(rel, digest, size, existed=True)
        parent = dst.parent
        if not parent.exists():
            parent.mkdir(exist_ok=True)
            fsync_dir(self.objects)
        try:
            _fsync_file(src)
            os.rename(src, dst)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            self._copy_in(src, dst)
        fsync_dir(parent)
        return SpoolFile(rel, digest, size, existed=False)

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


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
