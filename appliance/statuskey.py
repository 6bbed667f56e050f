"""The box's own status key: lets ``appliance status`` on the box read the full /healthz.

The web part writes a fresh random key to ``DATA_DIR/status.key`` (mode 0600) at every
start; /healthz shows each part's state to a caller that sends it as a Bearer token.
Whoever can read the data directory can read the whole database anyway, so the key gives
nothing more than that; anonymous callers get only up or down.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

FILE_NAME = "status.key"


def write(data_dir: Path) -> str:
    """A new key, written (replacing any older one) readable only by this user."""
    key = secrets.token_urlsafe(32)
    path = Path(data_dir) / FILE_NAME
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.replace(tmp, path)
    return key


def read(data_dir: Path) -> str | None:
    """The running box's key, or None when it is missing or not readable by this user."""
    try:
        return (Path(data_dir) / FILE_NAME).read_text().strip() or None
    except OSError:
        return None


PORTS_FILE = "ports.json"


def write_ports(data_dir: Path, ports: dict[str, int | None]) -> None:
    """The ports the running box listens on (``appliance status`` finds a box started
    with other ports than its configuration's there)."""
    path = Path(data_dir) / PORTS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**ports, "pid": os.getpid()}))
    os.replace(tmp, path)


def read_ports(data_dir: Path) -> dict[str, int]:
    """The running box's ports, or {} when no box wrote them or that box is gone."""
    try:
        ports = json.loads((Path(data_dir) / PORTS_FILE).read_text())
        pid = int(ports.get("pid", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return {}
    if pid <= 0:
        return {}
    try:
        os.kill(pid, 0)  # still running?
    except PermissionError:
        pass  # running, as another user (the service's)
    except (OSError, ValueError):
        return {}
    return {k: int(v) for k, v in ports.items() if isinstance(v, int)}
