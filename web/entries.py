"""Devices and destinations read from a form or a JSON body (the admin pages and the API
share these): a settings entry validated with the file's rules, or the errors by field."""

from __future__ import annotations

import re
from typing import Any

from appliance import destinations, devices
from appliance.config import DestinationSettings, DeviceSettings
from appliance.errors import ValidationError

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
