"""A peer's data set (C-FIND identifier, N-CREATE / N-SET attribute list) checked before use.

pydicom reads what it is given as well as it can: a sequence nested 1,000 deep ends in a
RecursionError, a truncated element or an unknown VR in a traceback, an over-long name or
an unknown character set in a value taken as valid. Here the encoded bytes are walked first,
without recursion (PS3.5 7.1 data elements, 7.5 nesting of data sets, Table 6.2-1 VRs and
value lengths, 6.1 character sets), and only a data set that passes is handed to pydicom and
fully converted. Anything else raises ``Malformed`` whose ``reason`` (at most 64 characters,
no element value, so no patient data) becomes the ErrorComment. Pure: no I/O.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom.charset import (
    CODES_TO_ENCODINGS,
    ESC,
    STAND_ALONE_ENCODINGS,
    default_encoding,
    handled_encodings,
    python_encoding,
)
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.valuerep import TEXT_VR_DELIMS

from appliance import status

# The kinds of fault, which each DICOM edge maps to its own status.
ENCODING = "encoding"  # the bytes are not a valid encoding (PS3.5 7): cannot be read
STRUCTURE = "structure"  # readable, but nested deeper than the service allows
VALUE = "value"  # a value that its VR does not allow (length, characters)
CHARSET = "charset"  # a Specific Character Set the appliance cannot decode

KNOWN_VRS = frozenset(
    "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL "
    "UN UR US UT UV".split()
)
LONG_LENGTH_VRS = frozenset("OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())  # PS3.5 7.1.2
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
# Binary VRs whose value length is a multiple of the value size (PS3.5 Table 6.2-1).
VALUE_SIZE = {
    "AT": 4, "FD": 8, "FL": 4, "OD": 8, "OF": 4, "OL": 4, "OV": 8, "OW": 2, "SL": 4, "SS": 2,
    "SV": 8, "UL": 4, "US": 2, "UV": 8,
}  # fmt: skip
# Maximum length of one value in characters (PS3.5 Table 6.2-1); PN per component group.
MAX_CHARS = {
    "AE": 16, "AS": 4, "CS": 16, "DA": 8, "DS": 16, "DT": 26, "IS": 12, "LO": 64,
    "LT": 10240, "PN": 64, "SH": 16, "ST": 1024, "TM": 16, "UI": 64,
}  # fmt: skip
# In a query with range matching (PS3.5 Table 6.2-1, PS3.4 C.2.2.2.5).
MAX_CHARS_RANGE = {"DA": 18, "DT": 54, "TM": 28}
# Decoded in the data set's character set (PS3.5 6.1.2.3); multi-valued split on "\".
CHARSET_VRS = frozenset(("LO", "LT", "PN", "SH", "ST", "UC", "UT"))
SINGLE_VALUED_TEXT = frozenset(("LT", "ST", "UT", "UR"))
VALUE_VRS = frozenset(MAX_CHARS) | CHARSET_VRS
_DS = re.compile(r"^ *[+\-]?(\d+|\d+\.\d*|\.\d+)([eE][+\-]?\d+)? *$")
_IS = re.compile(r"^ *[+\-]?\d+ *$")
# Errors pydicom may raise while converting a value that passed the checks above.
CONVERSION_ERRORS = (
    ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, LookupError,
    NotImplementedError, struct.error, UnicodeError, RecursionError,
)  # fmt: skip


class Malformed(ValueError):
    """A data set that cannot be served; ``reason`` names the fault in at most 64 characters."""

    def __init__(self, kind: str, reason: str, tag: int | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason[:64]
        self.tag = tag


@dataclass(frozen=True)
class Limits:
    """What one service accepts: nesting depth, inflated size, query range lengths."""

    max_depth: int = 8  # sequences inside sequences; the top level's sequences are depth 1
    max_inflated: int = 1 << 20  # bytes a deflated data set may inflate to
    query: bool = False  # DA / TM / DT values may be ranges (C-FIND)


def _name(tag: int) -> str:
    keyword = keyword_for_tag(tag)
    return keyword or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _vr_text(raw: bytes) -> str:
    text = raw.decode("latin-1")
    return f'"{text}"' if text.isalnum() and text.isascii() else "0x" + raw.hex().upper()


def _private(tag: int) -> bool:
    return (tag >> 16) % 2 == 1


def _implicit_vr(tag: int) -> str:
    """The VR an Implicit VR element is read with: the dictionary's, else UN (PS3.5 6.2.2)."""
    if tag & 0xFFFF == 0:
        return "UL"  # group length (PS3.5 7.2)
    if _private(tag):
        return "LO" if 0x10 <= tag & 0xFFFF <= 0xFF else "UN"  # private creator (PS3.5 7.8.1)
    try:
        return str(dictionary_VR(tag)).split(" or ")[0]
    except KeyError:
        return "UN"


def inflate(data: bytes, limit: int) -> bytes:
    """Deflated Explicit VR Little Endian (PS3.5 A.5): inflated, at most ``limit`` bytes."""
    z = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = z.decompress(data, limit + 1)
    except zlib.error as exc:
        raise Malformed(ENCODING, "deflated data set does not inflate") from exc
    if len(out) > limit:
        raise Malformed(ENCODING, f"deflated data set inflates beyond {limit} bytes")
    return out


@dataclass
class _Frame:
    kind: str  # "dataset" (the top level or an item) or "sequence"
    end: int | None  # None: undefined length, ended by a delimitation item
    depth: int
    implicit: bool
    little: bool
    encodings: list[str]  # the character set of its text values (PS3.5 6.1.2.5, items inherit)


class _Walk:
    """An iterative walk over the elements of an encoded data set (PS3.5 7.1, 7.5)."""

    def __init__(self, data: bytes, limits: Limits) -> None:
        self.buf = data
        self.limits = limits
        self.stack: list[_Frame] = []

    def run(self, implicit: bool, little: bool, encodings: list[str]) -> None:
        size = len(self.buf)
        self.stack = [_Frame("dataset", size, 0, implicit, little, encodings)]
        pos = 0
        while self.stack:
            f = self.stack[-1]
            limit = size if f.end is None else f.end
            if f.end is not None and pos == f.end:
                self.stack.pop()
                continue
            if pos > limit:  # what it holds (of undefined length) ran past its own end
                raise Malformed(ENCODING, "an item or a sequence is shorter than its contents")
            if pos == size and f.end is None:
                raise Malformed(ENCODING, "truncated: a sequence or an item has no end")
            if pos + 8 > limit:
                raise Malformed(ENCODING, "truncated: the data ends inside an element header")
            group, elem = struct.unpack_from("<HH" if f.little else ">HH", self.buf, pos)
            tag = group << 16 | elem
            if f.kind == "sequence":
                pos = self._sequence_entry(pos, tag, f)
            elif tag == ITEM_END and f.end is None and len(self.stack) > 1:
                pos += 8
                self.stack.pop()
            elif group == 0xFFFE:
                raise Malformed(ENCODING, f"unexpected {_name(tag)} inside a data set", tag)
            else:
                pos = self._element(pos, tag, f, limit)

    def _sequence_entry(self, pos: int, tag: int, f: _Frame) -> int:
        """An item or the sequence delimiter inside a sequence (PS3.5 7.5.1)."""
        (length,) = struct.unpack_from("<L" if f.little else ">L", self.buf, pos + 4)
        if tag == SEQUENCE_END and f.end is None:
            self.stack.pop()
            return pos + 8
        if tag != ITEM:
            raise Malformed(ENCODING, f"{_name(tag)} where a sequence item was expected", tag)
        pos += 8
        if length == UNDEFINED:
            end = None
        elif pos + length > (len(self.buf) if f.end is None else f.end):
            raise Malformed(ENCODING, "truncated: a sequence item is longer than its sequence")
        else:
            end = pos + length
        self.stack.append(_Frame("dataset", end, f.depth, f.implicit, f.little, f.encodings))
        return pos

    def _element(self, pos: int, tag: int, f: _Frame, limit: int) -> int:
        """One data element (PS3.5 7.1.1-7.1.3); returns the position after its header or value."""
        e = "<" if f.little else ">"
        if f.implicit:
            vr = _implicit_vr(tag)
            (length,) = struct.unpack_from(e + "L", self.buf, pos + 4)
            pos += 8
        else:
            raw_vr = self.buf[pos + 4 : pos + 6]
            vr = raw_vr.decode("latin-1")
            if vr not in KNOWN_VRS:
                raise Malformed(ENCODING, f"unknown VR {_vr_text(raw_vr)} in {_name(tag)}", tag)
            if vr in LONG_LENGTH_VRS:
                if pos + 12 > limit:
                    raise Malformed(ENCODING, "truncated: the data ends inside an element header")
                (length,) = struct.unpack_from(e + "L", self.buf, pos + 8)
                pos += 12
            else:
                (length,) = struct.unpack_from(e + "H", self.buf, pos + 6)
                pos += 8
        if length == UNDEFINED:
            # Implicit VR: an element of unknown VR and undefined length is a sequence (PS3.5
            # 6.2.2, as pydicom reads it); an explicit UN is refused, pydicom misreads it.
            if vr != "SQ" and not (f.implicit and vr == "UN"):
                raise Malformed(ENCODING, f"undefined length on {vr} element {_name(tag)}", tag)
            self._open_sequence(tag, None, f)
            return pos
        if pos + length > limit:
            raise Malformed(ENCODING, f"truncated: {_name(tag)} runs past the end", tag)
        if vr == "UN" and not (f.implicit and _implicit_vr(tag) == "UN") and not _private(tag):
            vr = _implicit_vr(tag)  # pydicom replaces UN by the dictionary's VR
        if vr == "SQ" or (vr == "UN" and self.buf[pos : pos + 4] == b"\xfe\xff\x00\xe0"):
            # pydicom reads a UN value that starts with an item as a sequence, so do we.
            self._open_sequence(tag, pos + length, f, un=vr == "UN")
            return pos
        unit = VALUE_SIZE.get(vr)
        if unit and length % unit:
            raise Malformed(ENCODING, f"{_name(tag)}: {length} bytes is not a whole {vr}", tag)
        if tag == 0x00080005:
            terms = self.buf[pos : pos + length].decode("latin-1").split("\\")
            f.encodings = encodings_for(terms)
        elif vr in VALUE_VRS:
            check_value(self.buf[pos : pos + length], vr, tag, f.encodings, self.limits)
        return pos + length

    def _open_sequence(self, tag: int, end: int | None, f: _Frame, un: bool = False) -> None:
        depth = f.depth + 1
        if depth > self.limits.max_depth:
            raise Malformed(STRUCTURE, f"sequences nested deeper than {self.limits.max_depth}", tag)
        implicit, little = (True, True) if un else (f.implicit, f.little)
        self.stack.append(_Frame("sequence", end, depth, implicit, little, f.encodings))


def check_encoding(
    data: bytes, implicit: bool, little: bool, limits: Limits, encodings: list[str]
) -> None:
    """Walk an encoded data set and check each value; raise ``Malformed`` at the first fault.

    Iterative, so no nesting can exhaust the stack; each length is checked against the bytes
    left in its item before anything is read from it.
    """
    _Walk(data, limits).run(implicit, little, encodings)


# -- values, once pydicom has read the structure -------------------------------------


def encodings_for(value: Any) -> list[str]:
    """Python encodings of a Specific Character Set (PS3.3 C.12.1.1.2); ``Malformed`` if unknown."""
    terms = [value] if isinstance(value, (str, bytes)) else list(value or [""])
    names = []
    for term in terms:
        if isinstance(term, bytes):
            term = term.decode("latin-1")
        name = term.strip()
        if name not in python_encoding:
            shown = "".join(c if c.isprintable() and c != "\\" else "?" for c in name)
            raise Malformed(CHARSET, f"Specific Character Set {shown[:30]} is not supported")
        names.append(name)
    if len(names) > 1 and any(n in STAND_ALONE_ENCODINGS for n in names):
        raise Malformed(CHARSET, "Specific Character Set: ISO_IR 192/GBK/GB18030 used with others")
    return [python_encoding[n] for n in names]


def _decode_strict(value: bytes, encodings: list[str]) -> str:
    """pydicom's decoding of a text value (charset.decode_bytes) without replacement characters."""
    if ESC not in value:
        return value.decode(encodings[0])
    parts = re.findall(b"(^[^\x1b]+|[\x1b][^\x1b]*)", value)
    out = []
    for part in parts:
        if not part.startswith(ESC):
            out.append(part.decode(encodings[0]))
            continue
        n = 4 if part.startswith((b"\x1b$(", b"\x1b$)")) else 3
        encoding = CODES_TO_ENCODINGS.get(part[:n], "")
        if encoding not in encodings and encoding != default_encoding:
            raise UnicodeError("escape sequence of a character set not declared")
        if encoding in handled_encodings:
            out.append(part.decode(encoding))
            continue
        body = part[n:]
        cut = next((i for i, ch in enumerate(body) if ch in TEXT_VR_DELIMS), len(body))
        out.append(body[:cut].decode(encoding) + body[cut:].decode(encodings[0]))
    return "".join(out)


def _values(raw: bytes, vr: str, encodings: list[str], tag: int) -> list[str]:
    if vr in CHARSET_VRS:
        try:
            text = _decode_strict(raw, encodings)
        except UnicodeError as exc:
            raise Malformed(VALUE, f"{_name(tag)} is not valid in its character set", tag) from exc
    else:
        text = raw.decode("latin-1")
    if vr in SINGLE_VALUED_TEXT:
        return [text.rstrip("\0 ")]
    return [v.rstrip("\0 ").lstrip(" ") for v in text.split("\\")]


def check_value(raw: bytes, vr: str, tag: int, encodings: list[str], limits: Limits) -> None:
    """One element's value against its VR: characters and length (PS3.5 Table 6.2-1)."""
    values = _values(raw, vr, encodings, tag)
    if vr in ("DS", "IS"):
        pattern = _DS if vr == "DS" else _IS
        for value in values:
            if value and not (limits.query and value == "*") and not pattern.match(value):
                raise Malformed(VALUE, f"{_name(tag)} is not a valid {vr} value", tag)
    most = MAX_CHARS_RANGE.get(vr, 0) if limits.query else 0
    most = most or MAX_CHARS.get(vr, 0)
    if not most:
        return
    for value in values:
        parts = value.split("=") if vr == "PN" else [value]
        if any(len(p) > most for p in parts):
            unit = " a group" if vr == "PN" else ""
            raise Malformed(VALUE, f"{_name(tag)} longer than {most} characters{unit} ({vr})", tag)


def _convert(ds: Dataset) -> None:
    """Convert every element now, so that no pydicom error waits in a later access."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if isinstance(raw, RawDataElement) and raw.VR is None and _implicit_vr(tag) == "UN":
            # pydicom would warn about an unknown tag each time; it stays bytes (PS3.5 6.2.2).
            ds[tag] = DataElement(tag, "UN", raw.value)
            continue
        try:
            elem = ds[tag]
        except CONVERSION_ERRORS as exc:
            raise Malformed(VALUE, f"{_name(int(tag))} cannot be read as its VR", int(tag)) from exc
        if elem.VR == "SQ":
            for item in elem.value:
                _convert(item)


def read(
    stream: BytesIO | None,
    implicit: bool,
    little: bool,
    deflated: bool,
    limits: Limits,
    charset: list[str] | None = None,
) -> Dataset:
    """The data set of a DIMSE message, checked and fully converted, or ``Malformed``.

    ``charset`` is the Specific Character Set assumed when the data set declares none
    (a device's configured set).
    """
    data = stream.getvalue() if stream is not None else b""
    if deflated:
        data = inflate(data, limits.max_inflated)
        implicit, little = False, True
    check_encoding(data, implicit, little, limits, encodings_for(charset or [""]))
    try:
        ds = read_dataset(BytesIO(data), implicit, little)
        ds.set_original_encoding(implicit, little)
        if charset and 0x00080005 not in ds:
            ds.SpecificCharacterSet = charset
        _convert(ds)
    except CONVERSION_ERRORS as exc:
        raise Malformed(ENCODING, f"data set cannot be read ({type(exc).__name__})") from exc
    return ds


def read_request(
    event: Any, attribute: str, limits: Limits, charset: list[str] | None = None
) -> Dataset:
    """A request's data set ("Identifier", "AttributeList", "ModificationList") read with
    ``read`` in the transfer syntax of its presentation context."""
    ts = event.context.transfer_syntax
    stream = getattr(event.request, attribute)
    return read(stream, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated, limits, charset)


def n_status(exc: Malformed) -> int:
    """The DIMSE-N status of a malformed attribute or modification list (PS3.7 C.4):
    0106 invalid attribute value for a value or character set its VR does not allow,
    0110 processing failure when the list cannot be decoded at all."""
    return (
        status.INVALID_ATTRIBUTE_VALUE
        if exc.kind in (VALUE, CHARSET)
        else status.PROCESSING_FAILURE
    )


def peer(event: Any) -> str:
    """The calling AE title and address of an event's association, for a log line."""
    requestor = event.assoc.requestor
    return f"{requestor.ae_title.strip()} at {requestor.address}:{requestor.port}"
