"""A settings list kept in one table, written by the configuration file and by the web.

Devices (``[[devices]]``) and forward destinations (``[[destinations]]``) work alike:
entries the file declares are *managed by the file* (written over the table at every
start, removed when the file drops them, read-only on the web); entries added on the web
are *managed by the web* and kept. Every change counts up a version in ``settings`` so
that another process (``serve --only dicom`` beside ``--only web``) notices it. What
differs (columns, how a value is stored, the audit wording) stays in each module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from appliance.db import Store
from appliance.errors import NotFound, ValidationError

CONFIG, WEB = "config", "web"
NOW = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"


@dataclass(frozen=True)
class ManagedTable:
    """One such table: ``key`` is its primary key column and the entries' key field."""

    table: str
    key: str
    noun: str  # "device": the word in NotFound and ValidationError messages
    fields: tuple[str, ...]  # the columns, in the order ``encode`` returns values
    encode: Callable[[Any], list[Any]]  # an entry -> the column values
    decode: Callable[[dict[str, Any]], Any]  # a row -> an entry
    order: str  # ORDER BY of the live list
    version_key: str
    positioned: bool = False  # the file's order kept in a ``position`` column

    def bump(self, db: sqlite_utils.Database) -> None:
        """Count a change, so another process notices it."""
        db.execute(
            """INSERT INTO settings(key, value) VALUES (?, '1')
               ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1""",
            (self.version_key,),
        )

    def version(self, store: Store) -> int:
        """The change counter of the list."""
        rows = store.query("SELECT value FROM settings WHERE key = ?", (self.version_key,))
        return int(rows[0]["value"]) if rows else 0

    def load(self, store: Store) -> list[Any]:
        """Every entry, in the live list's order."""
        return [self.decode(row) for row in self.rows(store)]

    def rows(self, store: Store) -> list[dict[str, Any]]:
        """Every row as stored (with ``managed_by``), in the live list's order."""
        return store.query(f"SELECT * FROM {self.table} ORDER BY {self.order}")

    def sync_from_config(self, store: Store, configured: Sequence[Any]) -> list[Any]:
        """Write the file's entries over the table's; returns the resulting live list."""
        columns = list(self.fields) + (["position"] if self.positioned else [])
        keys = [getattr(entry, self.key) for entry in configured]
        with store.write() as db:
            db.execute(
                f"DELETE FROM {self.table} WHERE managed_by = ? "
                f"AND {self.key} NOT IN ({','.join('?' * len(keys))})",
                (CONFIG, *keys),
            )
            for position, entry in enumerate(configured):
                extra = [position] if self.positioned else []
                db.execute(
                    f"""INSERT OR REPLACE INTO {self.table}({", ".join(columns)}, managed_by,
                        updated_at) VALUES ({", ".join("?" * len(columns))}, ?, {NOW})""",
                    (*self.encode(entry), *extra, CONFIG),
                )
            self.bump(db)
        return self.load(store)

    def _editable(self, db: sqlite_utils.Database, key: str) -> None:
        """NotFound, or ValidationError for an entry the file manages."""
        row = db.execute(
            f"SELECT managed_by FROM {self.table} WHERE {self.key} = ?", (key,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no {self.noun} {key!r}")
        if row[0] == CONFIG:
            raise ValidationError(self.key, "is managed by the configuration file")

    def put(self, db: sqlite_utils.Database, entry: Any, original: str | None) -> None:
        """Inside a write: add a web entry (original None) or replace the web entry
        ``original`` (its key may change); file-managed ones are read-only."""
        if original is not None:
            self._editable(db, original)
        key = getattr(entry, self.key)
        taken = db.execute(f"SELECT 1 FROM {self.table} WHERE {self.key} = ?", (key,))
        if taken.fetchone() is not None and key != original:
            raise ValidationError(self.key, f"is already used by another {self.noun}")
        if original is not None:
            db.execute(f"DELETE FROM {self.table} WHERE {self.key} = ?", (original,))
        db.execute(
            f"""INSERT INTO {self.table}({", ".join(self.fields)}, managed_by)
                VALUES ({", ".join("?" * len(self.fields))}, ?)""",
            (*self.encode(entry), WEB),
        )
        self.bump(db)

    def remove(self, db: sqlite_utils.Database, key: str) -> None:
        """Inside a write: delete a web entry; file-managed ones are read-only."""
        self._editable(db, key)
        db.execute(f"DELETE FROM {self.table} WHERE {self.key} = ?", (key,))
        self.bump(db)


class Live:
    """The live list of one managed table in one process, reloaded when another process
    (``serve --only web`` beside ``--only dicom``) changed it.

    Built at start from the file (``sync_from_config``); ``publish`` pushes an edit made
    in this process; ``current()`` notices, at most every ``refresh_s`` seconds, an edit
    made by another process. (``destinations.Live`` is the same with listeners.)
    """

    def __init__(
        self, table: ManagedTable, store: Store, configured: Sequence[Any], refresh_s: float = 2.0
    ) -> None:
        self.table = table
        self.store = store
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._list = tuple(table.sync_from_config(store, configured))
        self._version = table.version(store)
        self._checked = time.monotonic()

    def refresh(self, force: bool = False) -> None:
        """Reload when the change counter moved (checked at most every ``refresh_s``)."""
        now = time.monotonic()
        if not force and now - self._checked < self.refresh_s:
            return
        self._checked = now
        with self.store.read():  # the counter and the rows from one snapshot
            seen = self.table.version(self.store)
            if seen == self._version:
                return
            entries = tuple(self.table.load(self.store))
        with self._lock:
            self._list, self._version = entries, seen

    def publish(self) -> None:
        """Take an edit made in this process at once."""
        self.refresh(force=True)

    def current(self) -> tuple[Any, ...]:
        """The entries now, in the table's order."""
        self.refresh()
        return self._list
