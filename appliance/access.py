"""Who may use which DICOM service: known devices, and the policy for unknown AE titles.

Known devices live in the database (``appliance.devices``): the configuration's
``[[devices]]`` are synced into it at start, the web UI edits the rest. An unknown calling AE title is, by ``dicom.unknown_ae``:
``verify-only`` (C-ECHO answered, every other request refused), ``reject`` (association
rejected) or ``accept`` (served as a device with default policy).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from appliance import devices
from appliance.config import Config, DeviceSettings
from appliance.db import Store

VERIFY = "verify"
# How often a process looks for device changes made by another process (seconds).
REFRESH_S = 2.0


class Access:
    """Answers "may this calling AE title use this service?" and holds device policies."""

    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self._lock = threading.Lock()
        # The file's [[devices]] are written over the database's, then all are loaded.
        known = devices.sync_from_config(store, config.devices)
        self._devices: dict[str, DeviceSettings] = {d.ae_title: d for d in known}
        self._version = devices.version(store)
        self._checked = time.monotonic()
        self._ae: Any = None

    def bind(self, ae: Any) -> None:
        """Apply the reject policy to a pynetdicom AE (its calling AE title allow-list)."""
        self._ae = ae
        self._apply()

    def set_devices(self, devices: list[DeviceSettings]) -> None:
        """Replace the known devices (the web UI calls this after an edit)."""
        with self._lock:
            self._devices = {d.ae_title: d for d in devices}
        self._apply()

    def _apply(self) -> None:
        if self._ae is None:
            return
        if self.config.dicom.unknown_ae == "reject":
            # pynetdicom rejects (permanent, calling AE title not recognised) others.
            self._ae.require_calling_aet = sorted(self._devices) or [" "]
        else:
            self._ae.require_calling_aet = []

    def _refresh(self) -> None:
        """Reload when another process (``serve --only web``) changed the device list."""
        now = time.monotonic()
        if now - self._checked < REFRESH_S:
            return
        self._checked = now
        current = devices.version(self.store)
        if current != self._version:
            self._version = current
            self.set_devices(devices.load(self.store))

    def device(self, calling_ae: str) -> DeviceSettings | None:
        """The known device with this calling AE title, or None."""
        self._refresh()
        with self._lock:
            return self._devices.get(calling_ae.strip())

    def policy(self, calling_ae: str) -> DeviceSettings:
        """The device's settings, or defaults for an unknown AE served under ``accept``."""
        dev = self.device(calling_ae)
        return dev if dev is not None else DeviceSettings(ae_title=calling_ae.strip() or "?")

    def allowed(self, calling_ae: str, service: str) -> bool:
        """True when this calling AE title may use the service."""
        if self.device(calling_ae) is not None:
            return True
        policy = self.config.dicom.unknown_ae
        return policy == "accept" or service == VERIFY
