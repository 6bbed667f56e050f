"""Numbered schema migrations, applied at start.

Each component keeps its own numbered set (``core`` here, then one per service, listed in
``appliance.app.MIGRATIONS``) so services grow their tables independently; sqlite-utils records what was applied in
``_sqlite_migrations``. Never edit an applied migration: add the next number.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import sqlite_utils
from sqlite_utils.migrations import Migrations

from appliance import backup
from appliance.db import DB_FILENAME, Store

log = logging.getLogger(__name__)

core = Migrations("core")


@core(name="0001_settings_audit")
def _core_0001(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            actor TEXT NOT NULL,
            source TEXT NOT NULL DEFAULT '',
            action TEXT NOT NULL,
            object TEXT NOT NULL DEFAULT '',
            detail TEXT NOT NULL DEFAULT ''
        )"""
    )
    db.execute("CREATE INDEX audit_at ON audit(at)")


@core(name="0002_audit_action_index")
def _core_0002(db: sqlite_utils.Database) -> None:
    # The audit log page of one action, newest first, a page at a time (and its count),
    # and the list of actions the log holds.
    db.execute("CREATE INDEX audit_action_at ON audit(action, at)")


def pending(db: sqlite_utils.Database, sets: Sequence[Migrations]) -> list[str]:
    """The names of the migrations not yet applied, in order."""
    return [f"{mset.name}:{m.name}" for mset in sets for m in mset.pending(db)]


def migrate(db: sqlite_utils.Database, sets: Sequence[Migrations]) -> list[str]:
    """Apply every pending migration of ``sets`` (``core`` first); returns the names applied."""
    applied: list[str] = []
    for mset in sets:
        names = [f"{mset.name}:{m.name}" for m in mset.pending(db)]
        mset.apply(db)
        applied.extend(names)
    return applied


def open_store(data_dir: Path, sets: Sequence[Migrations]) -> Store:
    """Create the data directory if needed, open the database and apply ``sets`` (the
    composition root's list, ``appliance.app.MIGRATIONS``); an existing database is first
    copied to ``DATA_DIR/backups`` when a migration is pending."""
    data_dir.mkdir(parents=True, exist_ok=True)
    existed = (data_dir / DB_FILENAME).exists()
    store = Store(data_dir / DB_FILENAME)
    todo = pending(store.db, sets) if existed else []
    if todo:
        copy = backup.before_migration(store.db.conn, data_dir)
        log.info("copied the database to %s before %d migrations", copy, len(todo))
    migrate(store.db, sets)
    return store
