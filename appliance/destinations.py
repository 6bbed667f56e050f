"""The PACS destinations in the database: what the web UI edits and the forwarder obeys.

As with devices (``appliance/devices.py``), destinations declared in the configuration
file (``[[destinations]]``) are *managed by the file*: at every start they are written
over the database rows with the same name, rows the file no longer declares are
removed, and the web UI shows them read-only. Destinations added in the web UI are
*managed by the web* and kept across restarts. Every change bumps a counter in
``settings`` (``VERSION_KEY``); ``Live`` (an ``appliance.live.LiveList``) holds the current
list of a process, reloads it when another process (``serve --only web``) changed it, and
tells its listeners.

Queue rows are keyed by destination name and are never touched here: the rows of a
removed destination stay waiting (not sent), and adding the name again resumes them.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import sqlite_utils
from sqlite_utils.migrations import Migrations

from appliance import audit
from appliance.config import DestinationSettings, validate_destination
from appliance.db import Store
from appliance.errors import NotFound
from appliance.live import LiveList
from appliance.managed import NOW, ManagedTable

FIELDS = tuple(f.name for f in dataclasses.fields(DestinationSettings))
LISTS = ("from_ae", "modalities", "sop_classes")  # kept as JSON arrays
VERSION_KEY = "destinations_version"

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
    validated: DestinationSettings = TABLE.validate(dest)
    return validated


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
    check=validate_destination,
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


class Live(LiveList[DestinationSettings]):
    """The destination list one process works with (``appliance.live.LiveList``)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store, TABLE)

    def get(self, name: str) -> DestinationSettings | None:
        return self.find(name)


# -- a device as an ad-hoc destination ("Send to" a [[devices]] entry) -----------------
# A person may send held images to a device with host and port (a 3D workstation, a
# viewer). Its queue rows are keyed ``device:AE`` (a destination name cannot hold a
# colon), so they have the forward queue's guarantees (durable rows, retries, dead
# letters, the queue pages) and no routing rule ever sends received images there.
DEVICE_PREFIX = "device:"


def device_key(ae_title: str) -> str:
    """The queue's destination name for a device."""
    return DEVICE_PREFIX + ae_title.strip()


def device_ae(name: str) -> str | None:
    """The device AE title a queue destination name stands for, or None."""
    return name[len(DEVICE_PREFIX) :] if name.startswith(DEVICE_PREFIX) else None


def for_device(ae_title: str, host: str, port: int) -> DestinationSettings:
    """The ad-hoc destination a device's queue rows are sent with: no routing rule, and
    a Success C-STORE counts as committed (a workstation is not asked for commitment)."""
    return DestinationSettings(
        name=device_key(ae_title), ae_title=ae_title, host=host, port=port, commitment="delivery"
    )
