"""The PACS destinations in the database: what the web UI edits and the forwarder obeys.

As with devices (``appliance/devices.py``), destinations declared in the configuration
file (``[[destinations]]``) are *managed by the file*: at every start they are written
over the database rows with the same name, rows the file no longer declares are
removed, and the web UI shows them read-only. Destinations added in the web UI are
*managed by the web* and kept across restarts. Every change bumps a counter in
``settings`` (``VERSION_KEY``); ``Live`` holds the current list of a process, reloads it
when another process (``serve --only web``) changed it, and tells its listeners.

Queue rows are keyed by destination name and are never touched here: the rows of a
removed destination stay waiting (not sent), and adding the name again resumes them.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import sqlite_utils
from sqlite_utils.migrations import Migrations

from appliance import audit
from appliance.config import DestinationSettings, _validate_destination
from appliance.db import Store
from appliance.errors import ConfigError, NotFound, ValidationError
from appliance.managed import NOW, ManagedTable

FIELDS = tuple(f.name for f in dataclasses.fields(DestinationSettings))
LISTS = ("from_ae", "modalities", "sop_classes")  # kept as JSON arrays
VERSION_KEY = "destinations_version"
# How often a process looks for destination changes made by another process (seconds).
REFRESH_S = 2.0

migrations = Migrations("destinations")


@migrations(name="0001_destinations")
def _m0001(db: sqlite_utils.Database) -> None:
    db.execute(
        f"""CREATE TABLE destinations (
            name TEXT PRIMARY KEY,
            ae_title TEXT NOT NULL,
            host TEXT NOT NULL,
            port INTEGER NOT NULL,
            from_ae TEXT NOT NULL DEFAULT '[]',
            modalities TEXT NOT NULL DEFAULT '[]',
            sop_classes TEXT NOT NULL DEFAULT '[]',
            commitment TEXT NOT NULL DEFAULT 'pacs',
            position INTEGER NOT NULL DEFAULT 0,
            managed_by TEXT NOT NULL DEFAULT 'web',
            updated_at TEXT NOT NULL DEFAULT {NOW}
        )"""
    )


@migrations(name="0002_transfer_syntax")
def _m0002(db: sqlite_utils.Database) -> None:
    db.execute("ALTER TABLE destinations ADD COLUMN transfer_syntax TEXT NOT NULL DEFAULT ''")


@migrations(name="0003_tls")
def _m0003(db: sqlite_utils.Database) -> None:
    db.execute("ALTER TABLE destinations ADD COLUMN tls INTEGER NOT NULL DEFAULT 0")
    for column in ("tls_ca", "tls_cert", "tls_key"):
        db.execute(f"ALTER TABLE destinations ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")


def version(store: Store) -> int:
    """The change counter of the destination list."""
    return TABLE.version(store)


def validate(dest: DestinationSettings) -> DestinationSettings:
    """The same rules as ``[[destinations]]`` in the file; ValidationError names the field."""
    try:
        return _validate_destination(dest, "destination")
    except ConfigError as exc:
        raise ValidationError(exc.setting.removeprefix("destination."), exc.reason) from exc


def _settings(row: dict[str, Any]) -> DestinationSettings:
    values = {name: row[name] for name in FIELDS}
    for name in LISTS:
        values[name] = tuple(json.loads(values[name]))
    values["tls"] = bool(values["tls"])
    return DestinationSettings(**values)


def _values(dest: DestinationSettings) -> list[Any]:
    return [
        json.dumps(list(v)) if name in LISTS else v
        for name, v in ((name, getattr(dest, name)) for name in FIELDS)
    ]


TABLE = ManagedTable(
    table="destinations",
    key="name",
    noun="destination",
    fields=FIELDS,
    encode=_values,
    decode=_settings,
    order="managed_by = 'web', position, name",  # the file's order, then the web's
    version_key=VERSION_KEY,
    positioned=True,
)


def sync_from_config(
    store: Store, configured: tuple[DestinationSettings, ...]
) -> list[DestinationSettings]:
    """Write the file's destinations over the database's; returns the resulting list."""
    return TABLE.sync_from_config(store, configured)


def load(store: Store) -> list[DestinationSettings]:
    """Every destination, as the forwarder sees it: the file's in its order, then the web's."""
    return TABLE.load(store)


def rows(store: Store) -> list[dict[str, Any]]:
    """Every destination row (with ``managed_by``), lists decoded."""
    out = TABLE.rows(store)
    for row in out:
        for name in LISTS:
            row[name] = json.loads(row[name])
    return out


def get(store: Store, name: str) -> dict[str, Any]:
    found = [r for r in rows(store) if r["name"] == name]
    if not found:
        raise NotFound(f"no destination {name!r}")
    return found[0]


def save(
    store: Store,
    dest: DestinationSettings,
    original: str | None = None,
    actor: str = "system",
    source: str = "",
) -> DestinationSettings:
    """Add a destination (original None) or change one; file-managed ones are read-only."""
    dest = validate(dest)
    with store.write() as db:
        TABLE.put(db, dest, original)
        action = "destination-add" if original is None else "destination-change"
        detail = f"{dest.ae_title}@{dest.host}:{dest.port}"
        if original is not None and original != dest.name:
            detail += f", was {original}"
        audit.record(db, actor, action, f"destination {dest.name}", detail, source)
    return dest


def delete(store: Store, name: str, actor: str = "system", source: str = "") -> None:
    """Remove a web-managed destination; its queue rows stay (shown as removed)."""
    with store.write() as db:
        TABLE.remove(db, name)
        audit.record(db, actor, "destination-delete", f"destination {name}", "", source)


class Live:
    """The destination list one process works with, reloaded when the database changed.

    Built at start from the file (``sync_from_config``); ``publish`` pushes an edit made
    in this process; ``current()`` also notices, at most every ``REFRESH_S`` seconds, an
    edit made by another process. Listeners are called (with no arguments) after every
    change; they must return quickly (the forwarder's only wakes its watcher thread).
    """

    def __init__(self, store: Store, configured: tuple[DestinationSettings, ...]) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._list = tuple(sync_from_config(store, configured))
        self._version = version(store)
        self._checked = time.monotonic()
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def set(self, dests: Iterable[DestinationSettings], seen_version: int | None = None) -> None:
        """Replace the list (and remember the version it reflects), then tell the listeners."""
        with self._lock:
            self._list = tuple(dests)
            if seen_version is not None:
                self._version = seen_version
        for listener in list(self._listeners):
            listener()

    def refresh(self, force: bool = False) -> None:
        """Reload when the change counter moved (checked at most every REFRESH_S)."""
        now = time.monotonic()
        if not force and now - self._checked < REFRESH_S:
            return
        self._checked = now
        current = version(self.store)
        if current != self._version:
            self.set(load(self.store), current)

    def current(self) -> tuple[DestinationSettings, ...]:
        """The destinations now, in routing order."""
        self.refresh()
        return self._list

    def get(self, name: str) -> DestinationSettings | None:
        return next((d for d in self.current() if d.name == name), None)


def publish(store: Store, live: Live) -> None:
    """Push the database's destination list to this process's live list."""
    with store.read():
        seen, dests = version(store), load(store)
    live.set(dests, seen)
