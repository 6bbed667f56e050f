"""The list of one managed table as one process works with it (devices, destinations).

``sync(configured)`` writes the file's entries over the table at start; ``publish()``
pushes an edit made in this process; ``current()`` also notices, at most every
``REFRESH_S`` seconds, an edit made by another process (``serve --only web`` beside
``--only dicom``) through the table's change counter. Listeners are called with no
arguments after every change; they must return quickly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from appliance.db import Store
from appliance.managed import ManagedTable

# How often a process looks for a change made by another process (seconds).
REFRESH_S = 2.0

T = TypeVar("T")


class LiveList(Generic[T]):
    """The entries of ``table`` in its order, reloaded when the database changed."""

    def __init__(self, store: Store, table: ManagedTable) -> None:
        self.store = store
        self.table = table
        self._lock = threading.Lock()
        self._list: tuple[T, ...] = ()
        self._version: int | None = None  # None: never loaded; the first look loads
        self._checked = 0.0
        self._listeners: list[Callable[[], None]] = []

    def sync(self, configured: Sequence[T]) -> tuple[T, ...]:
        """Write the file's entries over the table's, then hold the resulting list."""
        with self.store.write():
            entries = self.table.sync_from_config(self.store, configured)
            seen = self.table.version(self.store)
        self.set(entries, seen)
        return self._list

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def set(self, entries: Iterable[T], seen_version: int | None = None) -> None:
        """Replace the list (and remember the version it reflects), then tell the listeners."""
        with self._lock:
            self._list = tuple(entries)
            if seen_version is not None:
                self._version = seen_version
            self._checked = time.monotonic()
        for listener in list(self._listeners):
            listener()

    def publish(self) -> None:
        """Load the database's list now (after an edit in this process)."""
        with self.store.read():
            seen, entries = self.table.version(self.store), self.table.load(self.store)
        self.set(entries, seen)

    def refresh(self, force: bool = False) -> None:
        """Reload when the change counter moved (looked at most every ``REFRESH_S``)."""
        now = time.monotonic()
        if not force and self._version is not None and now - self._checked < REFRESH_S:
            return
        self._checked = now
        if self.table.version(self.store) != self._version:
            self.publish()

    def current(self) -> tuple[T, ...]:
        """The entries now, in the table's order."""
        self.refresh()
        return self._list

    def find(self, key: Any) -> T | None:
        """The entry whose key field is ``key``, or None."""
        return next((e for e in self.current() if getattr(e, self.table.key) == key), None)
