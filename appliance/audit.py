"""The audit log: who did what, when, from where (web and DICOM)."""

from __future__ import annotations

from typing import Any

import sqlite_utils

from appliance import paging
from appliance.db import Store

_COLUMNS = "SELECT id, at, actor, source, action, object, detail FROM audit"
# Newest first by the time shown (a box without a real-time clock may have logged rows
# out of id order before its clock was set); the id breaks ties within a millisecond.
# Indexes: audit_at, and audit_action_at for one action (both hold the id, as rowid).
ORDER = paging.Order(("at", "id"), ("at", "id"), (str, int), descending=True)


def record(
    db: sqlite_utils.Database,
    actor: str,
    action: str,
    obj: str = "",
    detail: str = "",
    source: str = "",
) -> None:
    """Add one audit row inside the caller's transaction."""
    db.execute(
        "INSERT INTO audit(actor, source, action, object, detail) VALUES (?, ?, ?, ?, ?)",
        (actor, source, action, obj, detail),
    )


def record_now(
    store: Store,
    actor: str,
    action: str,
    obj: str = "",
    detail: str = "",
    source: str = "",
    durable: bool = True,
) -> None:
    """Add one audit row in its own short transaction (see ``Store.write`` for durable)."""
    with store.write(durable=durable) as db:
        record(db, actor, action, obj, detail, source)


def recent(store: Store, limit: int = 200, action: str | None = None) -> list[dict]:
    """The newest audit rows first, optionally of one action."""
    if action:
        return store.query(
            "SELECT * FROM audit WHERE action = ? ORDER BY id DESC LIMIT ?", (action, limit)
        )
    return store.query("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))


def page(store: Store, action: str | None, req: paging.PageRequest) -> paging.Page:
    """A page of the log (of one action or all), newest first, with the count of it all."""
    where, params = (["action = ?"], [action]) if action else ([], [])
    return paging.fetch(store, paging.Listing(_COLUMNS, "audit", where, params, ORDER), req)


def actions(store: Store) -> list[str]:
    """The actions the log holds, by name: one step down the action index per action
    instead of reading every row."""
    rows: list[dict[str, Any]] = store.query(
        """WITH RECURSIVE a(action) AS (
               SELECT MIN(action) FROM audit
               UNION ALL
               SELECT (SELECT MIN(action) FROM audit WHERE action > a.action) FROM a
               WHERE a.action IS NOT NULL)
           SELECT action FROM a WHERE action IS NOT NULL"""
    )
    return [r["action"] for r in rows]
