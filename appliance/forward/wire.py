"""The DIMSE wire codec the intake (receive) and the sender (send) share, no I/O.

Command sets are implicit VR little endian group 0000 elements (PS3.7 E.1); P-DATA-TF
PDUs carry presentation data values whose message control header says command or data
set and last fragment or not (PS3.8 9.3.5, E.2); a PS3.10 file's data set starts after
its File Meta group (PS3.10 7.1).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pynetdicom.dsutils import split_dataset

Bytes = bytes | bytearray | memoryview

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
# PS3.7 E.1: any Command Data Set Type but 0x0101 means a data set follows; pynetdicom
# and DCMTK send 0x0001.
DATASET_PRESENT = 0x0001
NO_DATASET = 0x0101

# Command set elements (group 0000).
AFFECTED_SOP_CLASS = 0x0002
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
RESPONDED_TO = 0x0120
PRIORITY = 0x0700
DATASET_TYPE = 0x0800
STATUS = 0x0900
ERROR_COMMENT = 0x0902
AFFECTED_SOP_INSTANCE = 0x1000

# PDU types (PS3.8 9.3.1) and PDV message control header bits (PS3.8 E.2).
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_ABORT = 0x07
COMMAND = 0x01
LAST = 0x02
PDV_OVERHEAD = 6  # item length (4), context ID (1), message control header (1)


class WireError(Exception):
    """What came or went on the wire breaks PS3.7/PS3.8; the association cannot be trusted.

    ``broken``: a PDU may have gone out in part, so not even an A-ABORT can follow.
    """

    def __init__(self, message: str, broken: bool = False) -> None:
        super().__init__(message)
        self.broken = broken


def element(elem: int, value: bytes) -> bytes:
    """One group 0000 element, implicit VR little endian (PS3.5 7.1.3)."""
    return struct.pack("<HHI", 0x0000, elem, len(value)) + value


def uid_bytes(uid: str) -> bytes:
    """A UID value padded to even length with a NUL (PS3.5 9.1)."""
    raw = uid.rstrip("\0 ").encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def us(value: int) -> bytes:
    return struct.pack("<H", value)


def command(elements: list[tuple[int, bytes]]) -> bytes:
    """A command set: its group length, then the elements (in ascending order)."""
    body = b"".join(element(elem, value) for elem, value in elements)
    return element(0x0000, struct.pack("<I", len(body))) + body


def parse_command(data: Bytes) -> dict[int, bytes]:
    """The elements of a command set (implicit VR little endian, group 0000) by number."""
    out: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 8:
            raise WireError("a truncated command set")
        group, elem, length = struct.unpack_from("<HHI", data, pos)
        pos += 8
        if group != 0x0000 or length > end - pos:
            raise WireError(f"a malformed command set element ({group:04X},{elem:04X})")
        out[elem] = bytes(data[pos : pos + length])
        pos += length
    return out


def us_of(fields: dict[int, bytes], elem: int, default: int | None = None) -> int:
    """An unsigned short element of a parsed command set."""
    value = fields.get(elem)
    if value is None or len(value) != 2:
        if default is not None:
            return default
        raise WireError(f"the command set lacks a valid (0000,{elem:04X})")
    return int(struct.unpack("<H", value)[0])


def ui_of(fields: dict[int, bytes], elem: int) -> str:
    """A UID element of a parsed command set, without its padding."""
    return fields.get(elem, b"").decode("ascii", "replace").rstrip("\0 ")


def pdv_items(body: Bytes) -> Iterator[tuple[int, int, memoryview]]:
    """(context ID, message control header, fragment) of each PDV in a P-DATA-TF (PS3.8 9.3.5)."""
    view = memoryview(body)
    pos, end = 0, len(body)
    while pos < end:
        if end - pos < PDV_OVERHEAD:
            raise WireError("a truncated presentation data value")
        length, context_id, header = struct.unpack_from(">IBB", body, pos)
        if length < 2 or length + 4 > end - pos:
            raise WireError("a presentation data value of a wrong length")
        yield context_id, header, view[pos + PDV_OVERHEAD : pos + 4 + length]
        pos += 4 + length


def pdv_header(context_id: int, fragment_length: int, control: int) -> bytes:
    """The headers of a P-DATA-TF PDU holding one PDV of ``fragment_length`` bytes."""
    pdv = fragment_length + 2
    return struct.pack(">BBIIBB", P_DATA_TF, 0, pdv + 4, pdv, context_id, control)


def fragments(data: bytes, context_id: int, max_data: int, control: int) -> bytes:
    """``data`` as P-DATA-TF PDUs of at most ``max_data`` bytes a PDV, the last one marked."""
    out = []
    for start in range(0, max(len(data), 1), max_data):
        piece = data[start : start + max_data]
        last = LAST if start + max_data >= len(data) else 0
        out.append(pdv_header(context_id, len(piece), control | last) + piece)
    return b"".join(out)


def max_fragment(peer_max_pdu: int, unlimited: int) -> int:
    """The data bytes a PDV may carry toward a peer whose maximum PDU length is given
    (PS3.8 D.1: the length of a P-DATA-TF's variable field; 0 = no limit)."""
    return peer_max_pdu - PDV_OVERHEAD if peer_max_pdu else unlimited


def dataset_offset(f: BinaryIO | io.RawIOBase, path: Path | None = None) -> int:
    """Where the data set starts in a PS3.10 file: after the preamble, "DICM" and the File
    Meta group, whose length (0002,0000) says where it ends (PS3.10 7.1). Without that
    group length pydicom parses the group (``path`` given), else 0."""
    f.seek(0)
    head = f.read(144)
    if (
        len(head) == 144
        and head[128:132] == b"DICM"
        and head[132:140] == b"\x02\x00\x00\x00UL\x04\x00"
    ):
        return 144 + int(struct.unpack_from("<I", head, 140)[0])
    return int(split_dataset(path)[1]) if path is not None else 0
