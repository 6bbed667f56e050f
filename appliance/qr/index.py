"""The index of held instances: patient, study, series and image attributes of every
spooled instance (PS3.4 C.6.1.1, C.6.2.1), written in the transaction that queues it.

One row per instance (``qr_instances.instance_id`` is ``forward_instances.id``); the
study, series and patient levels are grouped from it. A row goes when retention marks
its instance removed (a trigger on ``forward_instances.removed_at``), and comes back
when the same instance is received again. Names are stored decoded (Unicode) with the
data set's Specific Character Set, every component group kept.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Mapping
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

import sqlite_utils
from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID
from sqlite_utils.migrations import Migrations

from appliance.db import Store
from appliance.worklist import matching

migrations = Migrations("qr")

# Keyword -> column, by level (PS3.4 C.6.1.1.2-C.6.1.1.5, C.6.2.1).
PATIENT = {
    "PatientName": "patient_name",
    "PatientID": "patient_id",
    "PatientBirthDate": "patient_birth_date",
    "PatientSex": "patient_sex",
}
STUDY = {
    "StudyInstanceUID": "study_uid",
    "StudyDate": "study_date",
    "StudyTime": "study_time",
    "AccessionNumber": "accession_number",
    "StudyID": "study_id",
    "StudyDescription": "study_description",
    "ReferringPhysicianName": "referring_physician",
}
SERIES = {
    "SeriesInstanceUID": "series_uid",
    "Modality": "modality",
    "SeriesNumber": "series_number",
    "SeriesDescription": "series_description",
}
IMAGE = {
    "SOPInstanceUID": "sop_instance_uid",
    "SOPClassUID": "sop_class_uid",
    "InstanceNumber": "instance_number",
}
COLUMNS: dict[str, str] = {**PATIENT, **STUDY, **SERIES, **IMAGE}
HEADER_TAGS = ["SpecificCharacterSet", *COLUMNS]
LAST_TAG = 0x00200013  # InstanceNumber: the highest tag of the index
_WANTED = frozenset(int(tag_for_keyword(k) or 0) for k in HEADER_TAGS)
NAME_KEY = "patient_name_key"  # matching.pn_search_key(patient_name), not returned
_COLUMN_TAGS = [(Tag(tag_for_keyword(k) or 0), c) for k, c in COLUMNS.items()]
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ UC UN UR UT SV UV".split())  # PS3.5 7.1.2


@migrations(name="0001_instances")
def _m0001(db: sqlite_utils.Database) -> None:
    cols = ",\n".join(f"{c} TEXT NOT NULL DEFAULT ''" for c in COLUMNS.values())
    db.execute(
        f"""CREATE TABLE qr_instances (
            instance_id INTEGER PRIMARY KEY REFERENCES forward_instances(id),
            {cols}
        )"""
    )
    for col in ("patient_id", "study_uid", "series_uid", "study_date", "accession_number"):
        db.execute(f"CREATE INDEX qr_instances_{col} ON qr_instances({col})")
    db.execute("CREATE INDEX qr_instances_sop ON qr_instances(sop_instance_uid)")
    # Retention marks an instance removed when it deletes the file: its row goes with it.
    db.execute(
        "CREATE TRIGGER qr_instances_removed AFTER UPDATE OF removed_at ON forward_instances "
        "WHEN new.removed_at IS NOT NULL "
        "BEGIN DELETE FROM qr_instances WHERE instance_id = new.id; END"
    )


@migrations(name="0002_patient_name_key")
def _m0002(db: sqlite_utils.Database) -> None:
    """The folded patient name that a name query's literal prefix narrows in SQL."""
    db.execute(f"ALTER TABLE qr_instances ADD COLUMN {NAME_KEY} TEXT NOT NULL DEFAULT ''")
    rows = db.execute("SELECT instance_id, patient_name FROM qr_instances").fetchall()
    db.conn.executemany(
        f"UPDATE qr_instances SET {NAME_KEY} = ? WHERE instance_id = ?",
        [(matching.pn_search_key(name), iid) for iid, name in rows],
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(_text(v) for v in value)
    return str(value).strip("\0 ")


def attributes(ds: Dataset) -> dict[str, str]:
    """The index columns of one data set, its texts decoded with its character set."""
    out: dict[str, str] = {}
    for keyword, column in COLUMNS.items():
        try:
            out[column] = _text(ds.get(keyword))
        except (ValueError, TypeError, LookupError):  # a value pydicom cannot convert
            out[column] = ""
    return out


def read_attributes(path: Path | BinaryIO | io.RawIOBase) -> dict[str, str] | None:
    """The index columns read from a spooled file (a path, or one opened by
    ``Spool.open``; up to the pixel data), or None."""
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS)
    except (InvalidDicomError, ValueError, EOFError, OSError, KeyError, TypeError):
        return None
    return attributes(ds)


def _read_held(
    open_of: Callable[[str], io.RawIOBase | BinaryIO], ref: str
) -> dict[str, str] | None:
    """``read_attributes`` of a held instance opened by the spool's reader."""
    try:
        with open_of(ref) as f:
            return read_attributes(f)
    except OSError:
        return None


def head_attributes(head: bytes, transfer_syntax: str) -> dict[str, str] | None:
    """The index columns from the start of a data set as received (the intake keeps it),
    or None when that start does not reach past the last indexed tag or is not plain
    little endian: the caller then reads the file."""
    little, implicit = _syntax(transfer_syntax)
    if not little:
        return None
    walked = _walk(head, implicit)
    if walked is not None:
        return _plain(walked) or attributes(Dataset(_elements(walked, implicit)))
    # An undefined length on the way (a sequence): pydicom walks into it.
    reached = []

    def past(tag: Any, vr: Any, length: Any) -> bool:
        if tag > LAST_TAG:
            reached.append(tag)
            return True
        return False

    try:
        ds = read_dataset(BytesIO(head), implicit, True, stop_when=past)
        if not reached:
            return None
        return attributes(ds)
    except (EOFError, ValueError, OSError, KeyError, TypeError, LookupError, NotImplementedError):
        return None


_SYNTAXES: dict[str, tuple[bool, bool]] = {}  # transfer syntax -> (plain little endian, implicit)


def _syntax(transfer_syntax: str) -> tuple[bool, bool]:
    """(little endian and not deflated, implicit VR) of a transfer syntax, looked up once
    per syntax (pydicom's UID checks its value on every construction)."""
    known = _SYNTAXES.get(transfer_syntax)
    if known is None:
        ts = UID(transfer_syntax)
        known = (bool(ts.is_little_endian and not ts.is_deflated), bool(ts.is_implicit_VR))
        if len(_SYNTAXES) < 64:  # the syntaxes negotiated: a few
            _SYNTAXES[transfer_syntax] = known
    return known


_IMPLICIT_HEAD = struct.Struct("<HHI")  # group, element, 32-bit length
_EXPLICIT_HEAD = struct.Struct("<HH2sH")  # group, element, VR, 16-bit length
_LONG_LENGTH = struct.Struct("<I")

Walked = dict[int, tuple[bytes, bytes, int]]  # tag -> (VR or b"", value, value offset)


def _walk(head: bytes, implicit: bool) -> Walked | None:
    """The indexed elements of a little endian data set's start, found by skipping the
    others by their lengths (no value is decoded); None at an undefined length or when
    the start ends before the last indexed tag."""
    found: Walked = {}
    pos, end = 0, len(head)
    while pos + 8 <= end:
        if implicit:
            group, elem, length = _IMPLICIT_HEAD.unpack_from(head, pos)
            raw_vr = b""
        else:
            group, elem, raw_vr, length = _EXPLICIT_HEAD.unpack_from(head, pos)
        tag = (group << 16) | elem
        if tag > LAST_TAG:
            return found
        start = pos + 8
        if raw_vr in _LONG_VRS:
            if pos + 12 > end:
                return None
            length = _LONG_LENGTH.unpack_from(head, pos + 8)[0]
            start = pos + 12
        if length == 0xFFFFFFFF or start + length > end:
            return None
        if tag in _WANTED:
            found[tag] = (raw_vr, head[start : start + length], start)
        pos = start + length
    return None


def _elements(walked: Walked, implicit: bool) -> dict[BaseTag, DataElement | RawDataElement]:
    """The walked elements as pydicom's raw elements (for values it must decode)."""
    return {
        Tag(tag): RawDataElement(
            Tag(tag),
            raw_vr.decode("ascii", "replace") if raw_vr else None,
            len(value),
            value,
            start,
            implicit,
            True,
            True,
            False,
        )
        for tag, (raw_vr, value, start) in walked.items()
    }


_COLUMN_TAG_INTS = [(int(tag), column) for tag, column in _COLUMN_TAGS]


def _plain(walked: Walked) -> dict[str, str] | None:
    """The columns when every value is plain ASCII (no byte above 0x7F, no ISO 2022
    escape), so no character set applies; None otherwise (pydicom decodes them)."""
    out: dict[str, str] = {}
    for tag, column in _COLUMN_TAG_INTS:
        found = walked.get(tag)
        value = b"" if found is None else found[1]
        if not value.isascii() or b"\x1b" in value:
            return None
        out[column] = value.decode("ascii").strip("\0 ")
    return out


def record(db: sqlite_utils.Database, instance_id: int, attrs: Mapping[str, str]) -> None:
    """Write (or replace) the index row of an instance, inside the caller's transaction."""
    values = [attrs.get(c, "") for c in _COLUMN_NAMES]
    values.append(matching.pn_search_key(attrs.get("patient_name", "")))
    db.conn.execute(_RECORD, (instance_id, *values))


_COLUMN_NAMES = list(COLUMNS.values())
_RECORD = (
    f"INSERT OR REPLACE INTO qr_instances (instance_id, {', '.join([*_COLUMN_NAMES, NAME_KEY])}) "
    f"VALUES (?, {', '.join('?' * (len(_COLUMN_NAMES) + 1))})"
)


def backfill(
    store: Store, open_of: Callable[[str], io.RawIOBase | BinaryIO], batch: int = 200
) -> int:
    """Index the held instances that have no index row (received before the index
    existed, or whose file the header read could not parse then); returns how many."""
    done, last = 0, 0
    while True:
        rows = store.query(
            "SELECT f.id, f.file FROM forward_instances f LEFT JOIN qr_instances q "
            "ON q.instance_id = f.id WHERE f.removed_at IS NULL AND q.instance_id IS NULL "
            "AND f.id > ? ORDER BY f.id LIMIT ?",
            (last, batch),
        )
        if not rows:
            return done
        last = rows[-1]["id"]
        read = [(r["id"], _read_held(open_of, r["file"])) for r in rows]
        with store.write(durable=False) as db:
            for instance_id, attrs in read:
                kept = db.execute(
                    "SELECT 1 FROM forward_instances WHERE id = ? AND removed_at IS NULL",
                    (instance_id,),
                ).fetchone()
                if attrs is not None and kept:
                    record(db, instance_id, attrs)
                    done += 1
