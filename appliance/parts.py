"""The shapes of what the box is made of: a DICOM service on the shared listener, a
listener of its own, and ``Parts``, the lists ``appliance.app`` fills and
``server.Appliance`` starts. A leaf: it imports only core modules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from appliance.config import Config
from appliance.db import Store
from appliance.runtime import Runtime


class Service(Protocol):
    """What a DICOM service adds to the shared listener."""

    name: str

    def contexts(self) -> list[tuple[str, list[str] | None]]:
        """(abstract syntax UID, transfer syntaxes or None for the default) it serves as SCP."""

    def handlers(self) -> list[tuple[Any, ...]]:
        """pynetdicom event bindings, e.g. ``(evt.EVT_C_FIND, handle_find, [repo])``."""

    def start(self) -> None:
        """Start background workers, if any."""

    def stop(self) -> None:
        """Stop background workers, if any."""

    def health(self) -> dict[str, Any]:
        """A small JSON-able report: at least ``{"state": "running"}``."""


class Listener(Protocol):
    """A listener of its own (HL7 over MLLP): bound by ``start()``, closed by ``stop()``."""

    name: str

    def start(self) -> Any:
        """Bind and start serving; returns once ready."""

    def stop(self) -> None:
        """Close the listener and its connections within a few seconds."""

    def health(self) -> dict[str, Any]:
        """A small JSON-able report: at least ``{"state": "running"}``."""


@dataclass(frozen=True)
class OwnListener:
    """A listener started with the DICOM part when ``enabled(config)``."""

    name: str
    enabled: Callable[[Config], bool]
    make: Callable[[Runtime], Listener]


ServiceFactory = Callable[[Runtime], Service]
# (runtime, health report, status key) -> the WSGI app, its start-up writes made.
WebFactory = Callable[[Runtime, Callable[[], dict[str, Any]], str], Any]


@dataclass(frozen=True)
class Parts:
    """Everything ``server.Appliance`` opens and starts, in order."""

    open_store: Callable[[Path], Store]
    services: Sequence[ServiceFactory]
    listeners: Sequence[OwnListener]
    web_app: WebFactory
