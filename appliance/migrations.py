"""Numbered schema migrations, applied at start.

Each component keeps its own numbered set (``core``, then one per service) so services
grow their tables independently; sqlite-utils records what was applied in
``_sqlite_migrations``. Never edit an applied migration: add the next number.
"""

from __future__ import annotations

import sqlite_utils
from sqlite_utils.migrations import Migrations

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


def all_sets() -> list[Migrations]:
    """Every component's migration set, in the order they are applied."""
    sets = [core]
    # Services register their sets here as they grow tables.
    from appliance import schema_sets

    sets.extend(schema_sets.SETS)
    return sets


def pending(db: sqlite_utils.Database) -> list[str]:
    """The names of the migrations not yet applied, in order."""
    return [f"{mset.name}:{m.name}" for mset in all_sets() for m in mset.pending(db)]


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply every pending migration; returns the names applied."""
    applied: list[str] = []
    for mset in all_sets():
        pending = [f"{mset.name}:{m.name}" for m in mset.pending(db)]
        mset.apply(db)
        applied.extend(pending)
    return applied
