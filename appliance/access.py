"""Who may use which DICOM service: known devices, and the policy for unknown AE titles.

Known devices live in the database (``appliance.devices``): the configuration's
``[[devices]]`` are synced into it at start, the web UI edits the rest. An unknown calling AE title is, by ``dicom.unknown_ae``:
``verify-only`` (C-ECHO answered, every other request refused), ``reject`` (association
rejected) or ``accept`` (served as a device with default policy).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

from appliance import audit, devices
from appliance.config import Config, DeviceSettings
from appliance.db import Store
from appliance.live import LiveList

log = logging.getLogger(__name__)

VERIFY = "verify"
# A refusal is audited once per calling AE title, address and kind in this many seconds
# (a modality retrying every second must not fill the audit log).
AUDIT_EVERY_S = 60.0
# A-ASSOCIATE-RJ reasons (PS3.8 Table 9-21) by (source, reason), for the audit log.
REJECT_REASONS = {
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognized",
    (1, 7): "called AE title not recognized",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded (dicom.max_associations)",
}


class Access:
    """Answers "may this calling AE title use this service?" and holds device policies."""

    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self._lock = threading.Lock()
        self.devices: LiveList[DeviceSettings] = LiveList(store, devices.TABLE)
        self.devices.subscribe(self._index)
        self._by_title: dict[str, DeviceSettings] = {}
        self._ae: Any = None
        self._audited: dict[tuple[str, str, str], float] = {}

    def sync(self) -> None:
        """Write the file's [[devices]] over the database's, then load them all (at start)."""
        self.devices.sync(self.config.devices)

    def _index(self) -> None:
        by_title = {d.ae_title: d for d in self.devices.current()}
        with self._lock:
            self._by_title = by_title

    def bind(self, ae: Any) -> None:
        """Apply the reject policy to a pynetdicom AE (its calling AE title allow-list).

        The reject policy is applied at the listener's edge (``admits``), before
        pynetdicom: its allow-list cannot say "nobody" when there is no device yet.
        """
        self._ae = ae
        ae.require_calling_aet = []

    def device(self, calling_ae: str) -> DeviceSettings | None:
        """The known device with this calling AE title, or None."""
        self.devices.refresh()
        with self._lock:
            return self._by_title.get(calling_ae.strip())

    def policy(self, calling_ae: str) -> DeviceSettings:
        """The device's settings, or defaults for an unknown AE served under ``accept``."""
        dev = self.device(calling_ae)
        return dev if dev is not None else DeviceSettings(ae_title=calling_ae.strip() or "?")

    def allowed(self, calling_ae: str, service: str, address: str = "") -> bool:
        """True when this calling AE title may use the service; a refusal is audited
        (the first thing an admin looks for when a new modality "gets no worklist")."""
        if self.device(calling_ae) is not None:
            return True
        policy = self.config.dicom.unknown_ae
        if policy == "accept" or service == VERIFY:
            return True
        self.audit_refusal(
            "dicom-request-refused", calling_ae, address,
            f"{service}: AE title not among the devices (dicom.unknown_ae = {policy})",
        )  # fmt: skip
        return False

    def admits(
        self, calling_ae: str, called_ae: str, address: str, tls: bool = False,
        peer_cert: bytes | None = None,
    ) -> bool:  # fmt: skip
        """May this calling AE title associate at all, on this port? Under
        ``dicom.unknown_ae = reject`` only known devices may; a device with ``tls =
        "required"`` or a pinned certificate only on the TLS port, and a pinned one only
        with that certificate (``peer_cert``, DER). A refusal is audited (the edge answers
        A-ASSOCIATE-RJ rejected-permanent, service-user, calling AE title not recognized)."""
        device = self.device(calling_ae)
        pinned = device.tls_fingerprint if device is not None else ""
        if device is not None and (device.tls == "required" or pinned) and not tls:
            self.audit_refusal(
                "dicom-association-rejected", calling_ae, address,
                f"called {called_ae}: this device must use DICOM TLS (tls = required)",
            )  # fmt: skip
            return False
        if pinned:
            got = "sha256:" + hashlib.sha256(peer_cert).hexdigest() if peer_cert else ""
            if got != pinned:
                self.audit_refusal(
                    "dicom-association-rejected", calling_ae, address,
                    f"called {called_ae}: client certificate "
                    f"{got or '(none)'} is not the one pinned for this device ({pinned})",
                )  # fmt: skip
                return False
        if self.config.dicom.unknown_ae != "reject" or device is not None:
            return True
        self.audit_refusal(
            "dicom-association-rejected", calling_ae, address,
            f"called {called_ae}: calling AE title not recognized "
            "(not among the devices; dicom.unknown_ae = reject)",
        )  # fmt: skip
        return False

    def audit_refusal(self, action: str, calling_ae: str, address: str, detail: str) -> None:
        """One audit row for this refusal, unless the same was audited within a minute."""
        key = (action, calling_ae.strip(), address)
        now = time.monotonic()
        with self._lock:
            if now - self._audited.get(key, -AUDIT_EVERY_S) < AUDIT_EVERY_S:
                return
            if len(self._audited) > 4096:
                self._audited.clear()
            self._audited[key] = now
        try:
            audit.record_now(
                self.store, calling_ae.strip() or "?", action, calling_ae.strip(), detail,
                source=address, durable=False,
            )  # fmt: skip
        except Exception:  # the refusal stands; the audit row is not worth failing for
            log.warning("could not audit a refused association from %s", address or "?")


def audit_rejected(event: Any, access: Access) -> None:
    """EVT_REJECTED: the association was refused (A-ASSOCIATE-RJ); audited with why."""
    assoc = event.assoc
    rj = getattr(assoc.acceptor, "primitive", None)
    source, reason = (
        int(getattr(rj, "result_source", 0) or 0),
        int(getattr(rj, "diagnostic", 0) or 0),
    )
    why = REJECT_REASONS.get((source, reason), f"source {source}, reason {reason}")
    requestor = assoc.requestor
    access.audit_refusal(
        "dicom-association-rejected", str(requestor.ae_title or ""),
        str(requestor.address or ""),
        f"called {str(getattr(requestor.primitive, 'called_ae_title', '') or '').strip()}: {why}",
    )  # fmt: skip
