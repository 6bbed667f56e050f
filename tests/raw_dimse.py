"""Hostile-peer helpers: DIMSE data sets sent as hand-made bytes, and a log trap.

pynetdicom's SCU encodes the data set it is given; ``sending_raw`` makes it send chosen
bytes instead (in the calling thread only: the appliance runs in the same process and its
own SCU encodes normally). ``el``, ``sq`` and ``item`` write elements by hand (PS3.5 7.1,
7.5), so a test can send what no encoder would: truncations, unknown VRs, deep nesting.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom import association

LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
UNDEFINED = 0xFFFFFFFF


@contextlib.contextmanager
def sending_raw(data: bytes) -> Iterator[None]:
    """While open, the next data sets this thread's associations send are ``data``."""
    real = association.encode
    me = threading.get_ident()

    def encode(ds: Dataset, *args: bool) -> bytes | None:
        return data if threading.get_ident() == me else real(ds, *args)

    with mock.patch.object(association, "encode", encode):
        yield


def encode(ds: Dataset, implicit: bool = False) -> bytes:
    """A data set encoded by pydicom, little endian."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    write_dataset(fp, ds)
    return fp.getvalue()


def deflate(data: bytes) -> bytes:
    """Deflated Explicit VR Little Endian (PS3.5 A.5): raw deflate, no zlib header."""
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return z.compress(data) + z.flush()


def el(tag: int, vr: str, value: bytes, length: int | None = None, implicit: bool = False) -> bytes:
    """One element, explicit VR little endian unless ``implicit``; ``length`` may lie."""
    n = len(value) if length is None else length
    group, element = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack("<HHL", group, element, n) + value
    if vr in LONG_VRS:
        return struct.pack("<HH2sHL", group, element, vr.encode(), 0, n) + value
    return struct.pack("<HH2sH", group, element, vr.encode(), n) + value


def item(content: bytes, undefined: bool = True) -> bytes:
    """A sequence item (PS3.5 7.5.2), of undefined length with its delimiter by default."""
    if undefined:
        return (
            struct.pack("<HHL", 0xFFFE, 0xE000, UNDEFINED)
            + content
            + struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
        )
    return struct.pack("<HHL", 0xFFFE, 0xE000, len(content)) + content


def sq(tag: int, items: bytes, undefined: bool = True, implicit: bool = False) -> bytes:
    """A sequence element holding ``items`` (already encoded)."""
    if not undefined:
        return el(tag, "SQ", items, implicit=implicit)
    end = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    return el(tag, "SQ", b"", length=UNDEFINED, implicit=implicit) + items + end


def nested(tag: int, depth: int, leaf: bytes = b"", implicit: bool = False) -> bytes:
    """``depth`` sequences each inside the single item of the one before, built iteratively."""
    data = leaf
    for _ in range(depth):
        data = sq(tag, item(data), implicit=implicit)
    return data


def steady(assoc: Any) -> Any:
    """The association with its send_*() methods made safe from pynetdicom 3.0.4's race
    (pydicom/pynetdicom#875): send_*() pauses the requestor's reactor by waiting for a flag
    that the reactor sets just before it waits, so a reactor past its wait but not yet at its
    queue read takes the response ("Received unexpected C-ECHO service message") and the
    call times out. Here the reactor is held before each call, and given a moment to reach
    its wait, so no response is taken from the caller."""
    for name in (
        "send_c_echo", "send_c_find", "send_c_store", "send_n_create", "send_n_set",
        "send_c_move", "send_c_get",
    ):  # fmt: skip
        setattr(assoc, name, _held(assoc, getattr(assoc, name)))
    return assoc


def _held(assoc: Any, method: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        assoc._reactor_checkpoint.clear()
        deadline = time.monotonic() + 1.0
        while not assoc._is_paused and time.monotonic() < deadline:
            time.sleep(0.0001)
        time.sleep(0.002)  # the flag may be stale: let the reactor get to its wait
        return method(*args, **kwargs)

    return call


class LogTrap(logging.Handler):
    """Every log record of the process, from every logger, while installed on the root."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def clear(self) -> None:
        self.records = []

    def lines(self, level: int = logging.WARNING) -> list[str]:
        """The formatted records at ``level`` or above, with any traceback they carry."""
        return [self.format(r) for r in list(self.records) if r.levelno >= level]

    @property
    def text(self) -> str:
        return "\n".join(self.lines(logging.DEBUG))


@contextlib.contextmanager
def trapped_log() -> Iterator[LogTrap]:
    """A LogTrap on the root logger (INFO and above) for the duration."""
    trap = LogTrap()
    root = logging.getLogger()
    old = root.level
    root.addHandler(trap)
    if old > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield trap
    finally:
        root.removeHandler(trap)
        root.setLevel(old)


def start_service_box(tmp: Any) -> Any:
    """An appliance for the identifier tests: CT1 may query, send MPPS and print (to a
    folder printer); one step scheduled. The caller stops it."""
    from appliance.server import Appliance
    from appliance.worklist.repo import WorklistRepo
    from tests.factories import make_step_request
    from tests.helpers import make_config

    raw = {
        "devices": [{"ae_title": "CT1"}],
        "printers": [{"name": "out", "uri": f"folder:{tmp / 'out'}"}],
        "print_profiles": [{"dpi": 40}],
    }
    app = Appliance(make_config(tmp / "data", raw)).start()
    WorklistRepo(app.runtime.store).schedule(make_step_request())
    return app
