"""Devices, destinations and printers as the web edits them, for the admin pages and the
API alike:
read from a form or a JSON body (validated with the file's rules, errors by field), and
``Managed``, the one way to save or remove an entry of such a list and publish it."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance import destinations, devices, printers
from appliance.config import DestinationSettings, DeviceSettings, PrinterSettings
from appliance.db import Store
from appliance.errors import ValidationError
from appliance.live import LiveList
from web import request_store, runtime, security

_SEPARATORS = re.compile(r"[,\n]")  # AE titles may hold spaces; lists are comma-separated


def device_from(data: Any) -> tuple[DeviceSettings | None, dict[str, str]]:
    """A DeviceSettings from form or JSON data; errors name the field."""
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name in (
        "ae_title",
        "host",
        "role",
        "description",
        "modality",
        "station_filter",
        "character_set",
        "tls",
        "tls_fingerprint",
    ):
        values[name] = str(data.get(name, "") or "").strip()
    values["tls"] = values["tls"] or "optional"
    values["modality"] = values["modality"].upper()
    values["role"] = values["role"] or "modality"
    values["station_filter"] = values["station_filter"] or "none"
    for name in ("port", "max_results"):
        raw = data.get(name, 0)
        raw = 0 if raw in ("", None) else raw
        try:
            if isinstance(raw, bool):
                raise ValueError
            values[name] = int(raw)
        except (TypeError, ValueError):
            errors[name] = "is not a whole number"
            values[name] = 0
    hide = data.get("hide_completed", False)
    values["hide_completed"] = hide in (True, "1", "on", "true", "yes")
    if len(values["description"]) > 64:
        errors["description"] = "is longer than 64 characters"
    if errors:
        return None, errors
    try:
        return devices.validate(DeviceSettings(**values)), {}
    except ValidationError as exc:
        return None, {exc.field: exc.reason}


def _list(raw: Any) -> tuple[str, ...]:
    """A list field from a form (comma- or line-separated text) or JSON (a list)."""
    parts = raw if isinstance(raw, list | tuple) else _SEPARATORS.split(str(raw or ""))
    return tuple(s for s in (str(p).strip() for p in parts) if s)


def destination_from(data: Any) -> tuple[DestinationSettings | None, dict[str, str]]:
    """A DestinationSettings from form data; errors name the field."""
    values: dict[str, Any] = {
        name: str(data.get(name, "") or "").strip() for name in ("name", "ae_title", "host")
    }
    values["commitment"] = str(data.get("commitment", "") or "").strip() or "pacs"
    values["transfer_syntax"] = str(data.get("transfer_syntax", "") or "").strip()
    values["tls"] = data.get("tls") in (True, "1", "on", "true")
    values["tls_ca"] = str(data.get("tls_ca", "") or "").strip()
    for name in destinations.LISTS:
        values[name] = _list(data.get(name, ""))
    raw = data.get("port", "")
    try:
        if isinstance(raw, bool) or raw in ("", None):
            raise ValueError
        values["port"] = int(raw)
    except (TypeError, ValueError):
        return None, {"port": "is not a whole number"}
    try:
        return destinations.validate(DestinationSettings(**values)), {}
    except ValidationError as exc:
        return None, {exc.field: exc.reason}


def printer_from(data: Any) -> tuple[PrinterSettings | None, dict[str, str]]:
    """A PrinterSettings from form or JSON data; errors name the field. A folder printer
    added on the web keeps its films inside the data folder: a web admin must not make
    the box write files elsewhere (the configuration file may name any folder)."""
    values = {name: str(data.get(name, "") or "").strip() for name in ("name", "uri")}
    try:
        printer = printers.validate(PrinterSettings(**values))
    except ValidationError as exc:
        return None, {exc.field: exc.reason}
    if not printers.inside_data_folder(printer, runtime().config.data_dir):
        return None, {"uri": "must be a folder inside the data folder (folder:NAME)"}
    return printer, {}


@dataclass(frozen=True)
class Managed:
    """A list the file and the web both edit (``appliance.managed``): read, save and
    remove an entry as the signed-in user, each change published to the live list."""

    noun: str  # "device": endpoint names (device_get) and the 404 wording
    plural: str  # "devices": the API's URL and the list's key
    rows: Callable[[Store], list[dict[str, Any]]]
    get: Callable[[Store, str], dict[str, Any]]  # NotFound when there is none
    parse: Callable[[Any], tuple[Any, dict[str, str]]]  # data -> (entry or None, errors)
    save: Callable[..., Any]  # (store, entry, original, actor, source)
    delete: Callable[..., None]  # (store, key, actor, source)
    live: Callable[[], LiveList[Any]]
    key_of: Callable[[Any], str]

    def write(self, data: Any, original: str | None) -> tuple[Any, dict[str, str]]:
        """Add (``original`` None) or change an entry from form or JSON data: (the entry,
        {}) or (None, errors by field). NotFound when ``original`` is not there."""
        entry, errors = self.parse(data)
        if entry is None:
            return None, errors
        try:
            self.save(request_store(), entry, original, security.actor(), security.source())
        except ValidationError as exc:
            return None, {exc.field: exc.reason}
        self.live().publish()
        return entry, {}

    def remove(self, key: str) -> None:
        """Remove an entry; NotFound, or ValidationError for one the file manages."""
        self.delete(request_store(), key, security.actor(), security.source())
        self.live().publish()


DEVICES = Managed(
    noun="device", plural="devices", rows=devices.rows, get=devices.get, parse=device_from,
    save=devices.save, delete=devices.delete, live=lambda: runtime().access.devices,
    key_of=lambda d: d.ae_title,
)  # fmt: skip
DESTINATIONS = Managed(
    noun="destination", plural="destinations", rows=destinations.rows,
    get=destinations.get, parse=destination_from, save=destinations.save,
    delete=destinations.delete, live=lambda: runtime().destinations, key_of=lambda d: d.name,
)  # fmt: skip
PRINTERS = Managed(
    noun="printer", plural="printers", rows=printers.rows, get=printers.get,
    parse=printer_from,
    # A printer a print profile of the file names keeps its name and cannot be removed.
    save=lambda store, entry, original, actor, source: printers.save(
        store, entry, original, printers.in_use(runtime().config), actor, source),
    delete=lambda store, key, actor, source: printers.delete(
        store, key, printers.in_use(runtime().config), actor, source),
    live=lambda: runtime().printers, key_of=lambda p: p.name,
)  # fmt: skip
