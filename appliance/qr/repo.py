"""The index read for C-FIND (entities of one level) and for C-MOVE / C-GET (files).

An entity is a dict keyword -> text, as ``worklist.matching`` matches and projects
items: the attributes of its level and of the levels above it (PS3.4 C.6.1.1, C.6.2.1),
with the counts and ModalitiesInStudy derived here. SQL narrows by the indexed unique
keys, patient ID, accession number and study date; matching does the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from appliance.db import Store
from appliance.qr.index import IMAGE, PATIENT, SERIES, STUDY

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
ATTRIBUTES: dict[str, dict[str, str]] = {
    "PATIENT": PATIENT,
    "STUDY": STUDY,
    "SERIES": SERIES,
    "IMAGE": IMAGE,
}
UNIQUE = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
# Derived return keys of each level (PS3.4 C.6.1.1.2-C.6.1.1.4, C.6.2.1.2): SQL aggregates.
DERIVED: dict[str, dict[str, str]] = {
    "PATIENT": {
        "NumberOfPatientRelatedStudies": "COUNT(DISTINCT q.study_uid)",
        "NumberOfPatientRelatedSeries": "COUNT(DISTINCT q.series_uid)",
        "NumberOfPatientRelatedInstances": "COUNT(*)",
    },
    "STUDY": {
        "ModalitiesInStudy": "GROUP_CONCAT(DISTINCT q.modality)",
        "NumberOfStudyRelatedSeries": "COUNT(DISTINCT q.series_uid)",
        "NumberOfStudyRelatedInstances": "COUNT(*)",
    },
    "SERIES": {"NumberOfSeriesRelatedInstances": "COUNT(*)"},
    "IMAGE": {},
}
GROUP_BY = {"PATIENT": "patient_id", "STUDY": "study_uid", "SERIES": "series_uid", "IMAGE": ""}


def levels_upto(level: str) -> list[str]:
    """The levels from PATIENT down to ``level``."""
    return list(LEVELS[: LEVELS.index(level) + 1])


def keys_of(level: str) -> dict[str, str]:
    """keyword -> column of every stored attribute at ``level`` and above."""
    out: dict[str, str] = {}
    for lv in levels_upto(level):
        out.update(ATTRIBUTES[lv])
    return out


def level_of(keyword: str) -> str | None:
    """The level a key belongs to (stored or derived), or None for any other key."""
    for lv in LEVELS:
        if keyword in ATTRIBUTES[lv] or keyword in DERIVED[lv]:
            return lv
    return None


@dataclass
class Narrowing:
    """SQL conditions on the instance rows: column -> accepted values, and a date range."""

    equal: dict[str, list[str]] = field(default_factory=dict)
    study_date_from: str | None = None
    study_date_to: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        parts: list[str] = []
        params: list[Any] = []
        for column, values in self.equal.items():
            parts.append(f"q.{column} IN ({', '.join('?' * len(values))})")
            params.extend(values)
        if self.study_date_from:
            parts.append("q.study_date >= ?")
            params.append(self.study_date_from)
        if self.study_date_to:
            parts.append("q.study_date <> '' AND q.study_date <= ?")
            params.append(self.study_date_to)
        return (" AND ".join(parts) or "1"), params


def entities(store: Store, level: str, narrowing: Narrowing) -> Iterator[dict[str, str]]:
    """The entities of ``level`` among the held instances that pass ``narrowing``."""
    stored = keys_of(level)
    group = GROUP_BY[level]
    if group:
        cols = [f"MAX(q.{c}) AS {k}" for k, c in stored.items()]
        cols += [f"{expr} AS {k}" for k, expr in DERIVED[level].items()]
        tail = f"GROUP BY q.{group} ORDER BY MIN(q.instance_id)"
    else:
        cols = [f"q.{c} AS {k}" for k, c in stored.items()]
        tail = "ORDER BY q.instance_id"
    where, params = narrowing.where()
    sql = (
        f"SELECT {', '.join(cols)} FROM qr_instances q JOIN forward_instances f "
        f"ON f.id = q.instance_id WHERE f.removed_at IS NULL AND {where} {tail}"
    )
    with store.read() as db:
        cur = db.execute(sql, params)
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
    for row in rows:
        entity = {name: "" if v is None else str(v) for name, v in zip(names, row, strict=True)}
        if "ModalitiesInStudy" in entity:
            entity["ModalitiesInStudy"] = "\\".join(
                sorted(m for m in entity["ModalitiesInStudy"].split(",") if m)
            )
        yield entity


@dataclass(frozen=True)
class HeldFile:
    """One spooled instance to send: its file in the spool and what the C-STORE needs."""

    file: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str


def files(store: Store, unique: dict[str, list[str]]) -> list[HeldFile]:
    """The held files whose unique keys (column -> values) are among the values given."""
    where, params = Narrowing(equal=unique).where()
    rows = store.query(
        "SELECT f.file, f.sop_class_uid, f.sop_instance_uid, f.transfer_syntax "
        "FROM qr_instances q JOIN forward_instances f ON f.id = q.instance_id "
        f"WHERE f.removed_at IS NULL AND {where} ORDER BY q.study_uid, q.series_uid, "
        "CAST(q.instance_number AS INTEGER), q.instance_id",
        tuple(params),
    )
    return [
        HeldFile(r["file"], r["sop_class_uid"], r["sop_instance_uid"], r["transfer_syntax"])
        for r in rows
    ]
