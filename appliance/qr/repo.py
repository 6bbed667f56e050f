"""The index read for C-FIND (entities of one level) and for C-MOVE / C-GET (files).

An entity is a dict keyword -> text, as ``worklist.matching`` matches and projects
items: the attributes of its level and of the levels above it (PS3.4 C.6.1.1, C.6.2.1),
with the counts and ModalitiesInStudy derived here. SQL narrows by the indexed unique
keys, patient ID, accession number and study date; matching does the rest.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from appliance.db import Store
from appliance.qr.index import IMAGE, NAME_KEY, PATIENT, SERIES, STUDY
from appliance.worklist import matching

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
    # Folded literal starts of a PN query's groups (matching.pn_prefixes): any of them.
    name_prefixes: list[str] = field(default_factory=list)

    def where(self) -> tuple[str, list[Any]]:
        parts: list[str] = []
        params: list[Any] = []
        if self.name_prefixes:
            parts.append(
                "(" + " OR ".join(f"instr(q.{NAME_KEY}, ?) > 0" for _ in self.name_prefixes) + ")"
            )
            params.extend("=" + p for p in self.name_prefixes)
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


class DeadlinePassed(Exception):
    """The query used more CPU time than its deadline allowed."""


class _Row(Mapping[str, Any]):
    """One result row seen as keyword -> value, for matching before a dict is built."""

    __slots__ = ("names", "row")

    def __init__(self, names: dict[str, int], row: tuple[Any, ...]) -> None:
        self.names = names
        self.row = row

    def __getitem__(self, key: str) -> Any:
        return self.row[self.names[key]]

    def get(self, key: str, default: Any = None) -> Any:
        n = self.names.get(key)
        return default if n is None else self.row[n]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


# Derived keys whose SQL is a DISTINCT aggregate (a temporary b-tree for every group, most
# of a study list's time): computed after matching, for the matching entities only,
# unless a key of the query matches on them.
LATE = frozenset(
    ("NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "ModalitiesInStudy",
     "NumberOfStudyRelatedSeries")
)  # fmt: skip
LATE_BATCH = 500  # groups a query (SQLite's bound parameters)


def _modalities(listed: str | None) -> str:
    return "\\".join(sorted(m for m in (listed or "").split(",") if m))


def _select(level: str, narrowing: Narrowing, late: frozenset[str]) -> tuple[str, list[Any]]:
    stored = keys_of(level)
    group = GROUP_BY[level]
    if group:
        cols = [f"MAX(q.{c}) AS {k}" for k, c in stored.items()]
        cols += [f"{expr} AS {k}" for k, expr in DERIVED[level].items() if k not in late]
        tail = f"GROUP BY q.{group} ORDER BY MIN(q.instance_id)"
    else:
        cols = [f"q.{c} AS {k}" for k, c in stored.items()]
        tail = "ORDER BY q.instance_id"
    where, params = narrowing.where()
    sql = (
        f"SELECT {', '.join(cols)} FROM qr_instances q JOIN forward_instances f "
        f"ON f.id = q.instance_id WHERE f.removed_at IS NULL AND {where} {tail}"
    )
    return sql, params


def _fill_late(
    db: Any, level: str, narrowing: Narrowing, late: list[str], found: list[dict[str, str]]
) -> None:
    """Add the ``late`` derived keys to the entities found, over the same instance rows."""
    group, unique = GROUP_BY[level], UNIQUE[level]
    exprs = ", ".join(f"{DERIVED[level][k]} AS {k}" for k in late)
    where, params = narrowing.where()
    for start in range(0, len(found), LATE_BATCH):
        chunk = found[start : start + LATE_BATCH]
        values = sorted({e[unique] for e in chunk})
        rows = db.execute(
            f"SELECT q.{group}, {exprs} FROM qr_instances q JOIN forward_instances f "
            f"ON f.id = q.instance_id WHERE f.removed_at IS NULL AND {where} "
            f"AND q.{group} IN ({', '.join('?' * len(values))}) GROUP BY q.{group}",
            [*params, *values],
        ).fetchall()
        by_group = {str(r[0]): r[1:] for r in rows}
        for entity in chunk:
            got = by_group.get(entity[unique], (None,) * len(late))
            for keyword, value in zip(late, got, strict=True):
                if keyword == "ModalitiesInStudy":
                    entity[keyword] = _modalities(value)
                else:
                    entity[keyword] = "" if value is None else str(value)


class _Matcher:
    """Rows of one query matched against its keys; the matching ones made entities."""

    def __init__(self, names: list[str], keys: Sequence[Any], deadline: float | None) -> None:
        self.names = names
        self.index = {name: n for n, name in enumerate(names)}
        self.modalities = self.index.get("ModalitiesInStudy")
        self.keys = list(keys)
        self.deadline = deadline
        self.seen = 0

    def entity(self, row: tuple[Any, ...]) -> dict[str, str] | None:
        """The entity of a matching row, else None; ``DeadlinePassed`` past the deadline."""
        self.seen += 1
        if self.deadline is not None and self.seen % 16 == 0:
            if time.thread_time() > self.deadline:
                raise DeadlinePassed
        m = self.modalities
        if m is not None:
            row = (*row[:m], _modalities(row[m]), *row[m + 1 :])
        if self.keys and not matching.match_keys(
            self.keys, cast(dict[str, Any], _Row(self.index, row))
        ):
            return None
        return {name: "" if v is None else str(v) for name, v in zip(self.names, row, strict=True)}


def entities(
    store: Store,
    level: str,
    narrowing: Narrowing,
    keys: Sequence[Any] = (),
    deadline: float | None = None,
    limit: int | None = None,
    returned: Collection[str] | None = None,
) -> Iterator[dict[str, str]]:
    """The entities of ``level`` among the held instances that pass ``narrowing`` and
    match ``keys`` (``worklist.matching`` rules), at most ``limit``, with the derived keys
    in ``returned`` (all when None); ``DeadlinePassed`` once the thread's CPU time passes
    ``deadline``. Rows are matched before any dict is built, and rows past the last
    match wanted are never fetched."""
    matched = {k.keyword for k in keys}
    late = frozenset(k for k in DERIVED[level] if k in LATE and k not in matched)
    wanted = [k for k in DERIVED[level] if k in late and (returned is None or k in returned)]
    sql, params = _select(level, narrowing, late)
    found: list[dict[str, str]] = []
    with store.read() as db:
        cur = db.execute(sql, params)
        matcher = _Matcher([d[0] for d in cur.description], keys, deadline)
        while limit is None or len(found) < limit:
            batch = cur.fetchmany(512)
            if not batch:
                break
            for row in batch:
                entity = matcher.entity(row)
                if entity is None:
                    continue
                found.append(entity)
                if limit is not None and len(found) >= limit:
                    break
        if wanted and found:
            _fill_late(db, level, narrowing, wanted, found)
    yield from found


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
