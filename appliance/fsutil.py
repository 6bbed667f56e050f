"""File-system helpers for durable writes (spool, print pixels, documents)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or creation inside ``path`` durable (POSIX: fsync the directory)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_sync_file_range() -> Callable[[int, int, int], None]:
    """Linux sync_file_range(2) with SYNC_FILE_RANGE_WRITE, or a no-op elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.sync_file_range
    except (OSError, AttributeError):
        return lambda fd, offset, length: None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int

    def start(fd: int, offset: int, length: int) -> None:
        func(fd, offset, length, 2)  # SYNC_FILE_RANGE_WRITE: queue the pages, do not wait

    return start


start_writeback = _load_sync_file_range()
start_writeback.__doc__ = """Start writing a range of a file to disk without waiting, so that a
later fsync has little left to flush (an optimisation only: durability still comes from
the fsync)."""
