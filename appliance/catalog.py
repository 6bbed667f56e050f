"""The procedure catalog: requested procedures the front desk picks from.

Each entry carries the Requested Procedure Code (code value, scheme, meaning), the
modality it is done on and the Scheduled Protocol Code that goes into the worklist item
(PS3.4 Table K.6-1). The admin edits it on the web page or imports it from CSV.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, replace
from typing import Any

import sqlite_utils
from sqlite_utils.migrations import Migrations

from appliance import audit
from appliance.db import Store
from appliance.errors import NotFound, ValidationError
from appliance.worklist.model import Code, validate_text

NOW = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
CSV_COLUMNS = (
    "code_value",
    "scheme",
    "meaning",
    "modality",
    "protocol_value",
    "protocol_scheme",
    "protocol_meaning",
)

migrations = Migrations("catalog")


@migrations(name="0001_catalog")
def _m0001(db: sqlite_utils.Database) -> None:
    db.execute(
        f"""CREATE TABLE catalog (
            pk INTEGER PRIMARY KEY,
            code_value TEXT NOT NULL UNIQUE,
            scheme TEXT NOT NULL,
            meaning TEXT NOT NULL,
            modality TEXT NOT NULL DEFAULT '',
            protocol_value TEXT NOT NULL DEFAULT '',
            protocol_scheme TEXT NOT NULL DEFAULT '',
            protocol_meaning TEXT NOT NULL DEFAULT '',
            updated_at TEXT NOT NULL DEFAULT {NOW}
        )"""
    )


@dataclass(frozen=True)
class Procedure:
    """One catalog entry."""

    code_value: str
    scheme: str
    meaning: str
    modality: str = ""
    protocol_value: str = ""
    protocol_scheme: str = ""
    protocol_meaning: str = ""

    @property
    def code(self) -> Code:
        return Code(self.code_value, self.scheme, self.meaning)

    @property
    def protocol(self) -> Code | None:
        if not self.protocol_value:
            return None
        return Code(self.protocol_value, self.protocol_scheme, self.protocol_meaning)


def validate(entry: Procedure) -> Procedure:
    """Code value / scheme SH (16), meaning LO (64); the protocol code is all or nothing."""
    modality = entry.modality.strip().upper()
    if modality and not (len(modality) <= 16 and modality.replace("_", "").isalnum()):
        raise ValidationError("modality", "must be a modality code such as CT, MR, US")
    out = Procedure(
        code_value=validate_text(entry.code_value, "code_value", 16, required=True),
        scheme=validate_text(entry.scheme, "scheme", 16, required=True),
        meaning=validate_text(entry.meaning, "meaning", 64, required=True),
        modality=modality,
        protocol_value=validate_text(entry.protocol_value, "protocol_value", 16),
        protocol_scheme=validate_text(entry.protocol_scheme, "protocol_scheme", 16),
        protocol_meaning=validate_text(entry.protocol_meaning, "protocol_meaning", 64),
    )
    if not out.protocol_value and not out.protocol_meaning:
        # A scheme alone (the form offers LOCAL) is no protocol code.
        return replace(out, protocol_scheme="")
    if out.protocol_value or out.protocol_scheme or out.protocol_meaning:
        for name in ("protocol_value", "protocol_scheme", "protocol_meaning"):
            if not getattr(out, name):
                raise ValidationError(name, "is required when a protocol code is given")
    return out


def _entry(row: dict[str, Any]) -> Procedure:
    return Procedure(**{name: row[name] for name in CSV_COLUMNS})


def all_rows(store: Store) -> list[dict[str, Any]]:
    return store.query("SELECT * FROM catalog ORDER BY modality, meaning")


def get(store: Store, code_value: str) -> Procedure:
    rows = store.query("SELECT * FROM catalog WHERE code_value = ?", (code_value.strip(),))
    if not rows:
        raise NotFound(f"no procedure {code_value!r} in the catalog")
    return _entry(rows[0])


def _upsert(db: sqlite_utils.Database, entry: Procedure) -> None:
    values = asdict(entry)
    db.execute(
        f"""INSERT INTO catalog({", ".join(CSV_COLUMNS)}) VALUES ({", ".join("?" * len(CSV_COLUMNS))})
            ON CONFLICT(code_value) DO UPDATE SET
            {", ".join(f"{c} = excluded.{c}" for c in CSV_COLUMNS[1:])}, updated_at = {NOW}""",
        tuple(values[c] for c in CSV_COLUMNS),
    )


def save(
    store: Store,
    entry: Procedure,
    original_code: str | None = None,
    actor: str = "system",
    source: str = "",
) -> Procedure:
    """Add an entry (original_code None) or change one."""
    entry = validate(entry)
    with store.write() as db:
        exists = db.execute(
            "SELECT 1 FROM catalog WHERE code_value = ?", (entry.code_value,)
        ).fetchone()
        if exists and entry.code_value != original_code:
            raise ValidationError("code_value", "is already in the catalog")
        if original_code is not None:
            if not db.execute(
                "SELECT 1 FROM catalog WHERE code_value = ?", (original_code,)
            ).fetchone():
                raise NotFound(f"no procedure {original_code!r} in the catalog")
            db.execute("DELETE FROM catalog WHERE code_value = ?", (original_code,))
        _upsert(db, entry)
        action = "catalog-add" if original_code is None else "catalog-change"
        audit.record(db, actor, action, f"procedure {entry.code_value}", entry.meaning, source)
    return entry


def delete(store: Store, code_value: str, actor: str = "system", source: str = "") -> None:
    with store.write() as db:
        if not db.execute("DELETE FROM catalog WHERE code_value = ?", (code_value,)).rowcount:
            raise NotFound(f"no procedure {code_value!r} in the catalog")
        audit.record(db, actor, "catalog-delete", f"procedure {code_value}", "", source)


def import_csv(store: Store, text: str, actor: str = "system", source: str = "") -> int:
    """Add or replace entries from CSV (header row of CSV_COLUMNS); all or nothing.

    A bad file raises ValidationError("file", a sentence), a bad row one that begins
    ``Line N:`` and names the column.
    """
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in CSV_COLUMNS[:3] if c not in header]
    if missing:
        raise ValidationError(
            "file",
            f"The header row must name {', '.join(CSV_COLUMNS)} (missing {', '.join(missing)}).",
        )
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown:
        raise ValidationError("file", f"The header row names an unknown column, {unknown[0]!r}.")
    entries: list[Procedure] = []
    seen: set[str] = set()
    for line, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "") for k, v in raw.items() if k is not None}
        if None in raw:
            raise ValidationError("file", f"Line {line}: more fields than the header row.")
        try:
            entry = validate(Procedure(**{c: row.get(c, "") for c in CSV_COLUMNS}))
        except ValidationError as exc:
            raise ValidationError("file", f"Line {line}: {exc.field} {exc.reason}.") from exc
        if entry.code_value in seen:
            raise ValidationError(
                "file", f"Line {line}: code_value {entry.code_value!r} appears twice."
            )
        seen.add(entry.code_value)
        entries.append(entry)
    if not entries:
        raise ValidationError("file", "The file holds no procedures.")
    with store.write() as db:
        for entry in entries:
            _upsert(db, entry)
        audit.record(db, actor, "catalog-import", "catalog", f"{len(entries)} procedures", source)
    return len(entries)


def export_csv(store: Store) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in all_rows(store):
        writer.writerow([row[c] for c in CSV_COLUMNS])
    return out.getvalue()
