"""What the services and the web app share while the box runs: the typed ``Runtime``.

A leaf of the core: it imports only core modules (config, db, access, destinations, printers),
so services, the server and the web app can all name the type. Building a ``Runtime``
touches no table; ``sync()`` (called once by ``server.Appliance.start``) writes the
file's ``[[devices]]``, ``[[destinations]]`` and ``[[printers]]`` over the database's and
loads the lists.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from appliance import access, destinations, printers
from appliance.config import Config
from appliance.db import Store


@dataclass
class Runtime:
    """Configuration, database, live device list (``access``), live destination and
    printer lists."""

    config: Config
    store: Store
    access: access.Access
    destinations: destinations.Live
    printers: printers.Live
    started_at: float = field(default_factory=time.time)

    @classmethod
    def create(cls, config: Config, store: Store) -> Runtime:
        """A runtime over an open store; nothing is written until ``sync()``."""
        return cls(
            config, store, access.Access(config, store), destinations.Live(store),
            printers.Live(store),
        )  # fmt: skip

    def sync(self) -> Runtime:
        """Write the file's devices, destinations and printers into the database; load them."""
        self.access.sync()
        self.destinations.sync(self.config.destinations)
        self.printers.sync(self.config.printers)
        return self


def started(config: Config, store: Store) -> Runtime:
    """``Runtime.create`` then ``sync()``: the runtime a process works with."""
    return Runtime.create(config, store).sync()
