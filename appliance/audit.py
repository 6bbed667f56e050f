"""The audit log: who did what, when, from where (web and DICOM)."""

from __future__ import annotations

import sqlite_utils

from appliance.db import Store


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
