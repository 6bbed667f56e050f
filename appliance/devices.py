"""The device list in the database: what the web UI edits and the DICOM side obeys.

Devices declared in the configuration file (``[[devices]]``) are *managed by the file*:
at every start they are written over the database rows with the same AE title, rows
the file no longer declares are removed, and the web UI shows them read-only. Devices
added in the web UI are *managed by the web* and kept across restarts. After any
change the live list (``Access.devices``, an ``appliance.live.LiveList``) is published so
associations see it at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlite_utils
from sqlite_utils.migrations import Migrations

from appliance import audit
from appliance.config import DeviceSettings, validate_device
from appliance.db import Store
from appliance.errors import NotFound
from appliance.managed import NOW, ManagedTable

FIELDS = tuple(f.name for f in dataclasses.fields(DeviceSettings))
VERSION_KEY = "devices_version"

migrations = Migrations("devices")


@migrations(name="0001_devices")
def _m0001(db: sqlite_utils.Database) -> None:
    db.execute(
        f"""CREATE TABLE devices (
            ae_title TEXT PRIMARY KEY,
            host TEXT NOT NULL DEFAULT '',
            port INTEGER NOT NULL DEFAULT 0,
            role TEXT NOT NULL DEFAULT 'modality',
            description TEXT NOT NULL DEFAULT '',
            modality TEXT NOT NULL DEFAULT '',
            station_filter TEXT NOT NULL DEFAULT 'none',
            hide_completed INTEGER NOT NULL DEFAULT 1,
            character_set TEXT NOT NULL DEFAULT '',
            max_results INTEGER NOT NULL DEFAULT 0,
            managed_by TEXT NOT NULL DEFAULT 'web',
            updated_at TEXT NOT NULL DEFAULT {NOW}
        )"""
    )


@migrations(name="0002_tls")
def _m0002(db: sqlite_utils.Database) -> None:
    db.execute("ALTER TABLE devices ADD COLUMN tls TEXT NOT NULL DEFAULT 'optional'")


@migrations(name="0003_tls_fingerprint")
def _m0003(db: sqlite_utils.Database) -> None:
    db.execute("ALTER TABLE devices ADD COLUMN tls_fingerprint TEXT NOT NULL DEFAULT ''")


def version(store: Store) -> int:
    """The change counter of the device list."""
    return TABLE.version(store)


def validate(device: DeviceSettings) -> DeviceSettings:
    """The same rules as ``[[devices]]`` in the file; ValidationError names the field."""
    validated: DeviceSettings = TABLE.validate(device)
    return validated


def _settings(row: dict[str, Any]) -> DeviceSettings:
    values = {name: row[name] for name in FIELDS}
    values["hide_completed"] = bool(values["hide_completed"])
    return DeviceSettings(**values)


def _values(device: DeviceSettings) -> list[Any]:
    return [
        int(v) if isinstance(v, bool) else v for v in (getattr(device, name) for name in FIELDS)
    ]


TABLE = ManagedTable(
    table="devices",
    key="ae_title",
    noun="device",
    fields=FIELDS,
    encode=_values,
    decode=_settings,
    order="ae_title",
    version_key=VERSION_KEY,
    check=validate_device,
)


def sync_from_config(store: Store, configured: tuple[DeviceSettings, ...]) -> list[DeviceSettings]:
    """Write the file's devices over the database's; returns the resulting live list."""
    return TABLE.sync_from_config(store, configured)


def load(store: Store) -> list[DeviceSettings]:
    """Every device, as the DICOM side sees it."""
    return TABLE.load(store)


def rows(store: Store, role: str | None = None) -> list[dict[str, Any]]:
    """Every device row (with ``managed_by``), optionally of one role."""
    if role:
        return store.query("SELECT * FROM devices WHERE role = ? ORDER BY ae_title", (role,))
    return TABLE.rows(store)


def get(store: Store, ae_title: str) -> dict[str, Any]:
    found = store.query("SELECT * FROM devices WHERE ae_title = ?", (ae_title.strip(),))
    if not found:
        raise NotFound(f"no device {ae_title!r}")
    return found[0]


def save(
    store: Store,
    device: DeviceSettings,
    original_ae: str | None = None,
    actor: str = "system",
    source: str = "",
) -> DeviceSettings:
    """Add a device (original_ae None) or change one; file-managed devices are read-only."""
    device = validate(device)
    with store.write() as db:
        TABLE.put(db, device, original_ae)
        action = "device-add" if original_ae is None else "device-change"
        audit.record(db, actor, action, f"device {device.ae_title}", f"role {device.role}", source)
    return device


def delete(store: Store, ae_title: str, actor: str = "system", source: str = "") -> None:
    with store.write() as db:
        TABLE.remove(db, ae_title)
        audit.record(db, actor, "device-delete", f"device {ae_title}", "", source)
