"""The systemd notify protocol (sd_notify(3)), by hand: READY, WATCHDOG, STOPPING, STATUS.

systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace) to a
``Type=notify`` service; each notification is one datagram of ``KEY=value`` lines.
With ``WatchdogSec=`` it also passes ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``): the
service must send ``WATCHDOG=1`` more often than that or be restarted. The pings come
from a thread that first asks the appliance for its health, so a hung box stops pinging.
Without ``NOTIFY_SOCKET`` (started by hand, in tests) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

log = logging.getLogger(__name__)

ENV_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"


class HasHealth(Protocol):
    """What the watchdog asks: ``Appliance.health()``."""

    def health(self) -> dict[str, Any]:
        """Each part's state."""


def socket_address(value: str) -> str | None:
    """The AF_UNIX address named by NOTIFY_SOCKET: ``@name`` is abstract (leading NUL)."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock and other families are not used on a Debian box


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between pings (half of WATCHDOG_USEC, as sd_watchdog_enabled advises), or
    None when no watchdog is asked of this process."""
    try:
        usec = int(env.get(ENV_WATCHDOG_USEC, ""))
    except ValueError:
        return None
    owner = env.get(ENV_WATCHDOG_PID)
    if usec <= 0 or (owner and owner != str(pid)):
        return None
    return usec / 2_000_000


class Notifier:
    """Sends notifications to the service manager; does nothing outside systemd."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = socket_address(env.get(ENV_SOCKET, ""))
        self.interval = watchdog_interval(env, os.getpid()) if self.address else None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """True when a service manager listens."""
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """One datagram of ``KEY=value`` lines, e.g. ``send(READY="1", STATUS="...")``."""
        if self.address is None:
            return False
        text = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            with self._lock, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(text.encode("utf-8"), self.address)
        except OSError as exc:
            log.warning("cannot notify the service manager at %s: %s", self.address, exc)
            return False
        return True


def is_healthy(app: HasHealth) -> bool:
    """True while the health report answers and the DICOM listener (if in this process)
    and the web server run; a failing database or worker does not stop the pings."""
    services = app.health().get("services", {})
    dicom = services.get("dicom", {}).get("state")
    web = services.get("web", {}).get("state")
    return dicom in ("running", "not in this process") and web == "running"


class Watchdog:
    """A thread that sends ``WATCHDOG=1`` every ``interval`` seconds while ``check()``
    says healthy; a check that hangs or fails sends nothing, and systemd restarts us."""

    def __init__(self, notifier: Notifier, interval: float, check: Callable[[], bool]) -> None:
        self.notifier = notifier
        self.interval = interval
        self.check = check
        self._stop = threading.Event()
        self._healthy = True
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 1)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                healthy = self.check()
            except Exception as exc:  # an unhealthy box: logged, not pinged
                log.warning("watchdog: health check failed: %s", type(exc).__name__)
                healthy = False
            if healthy and self._healthy:
                self.notifier.send(WATCHDOG="1")
            elif healthy:
                log.info("watchdog: the appliance is healthy again")
                self.notifier.send(WATCHDOG="1", STATUS="ready (healthy again)")
            elif self._healthy:
                log.warning("watchdog: the appliance is not healthy; no more watchdog pings")
                self.notifier.send(STATUS="unhealthy: the DICOM listener is down")
            self._healthy = healthy


class Supervision:
    """What ``appliance serve`` tells systemd: READY at start, pings, STOPPING at the end."""

    def __init__(self, notifier: Notifier, watchdog: Watchdog | None) -> None:
        self.notifier = notifier
        self.watchdog = watchdog

    def stopping(self) -> None:
        """Say STOPPING=1 and stop the pings (call before stopping the listeners)."""
        if self.watchdog is not None:
            self.watchdog.stop()
        self.notifier.send(STOPPING="1", STATUS="stopping")


def supervise(app: Any, env: Mapping[str, str] | None = None) -> Supervision:
    """Call once every listener is bound: sends READY=1 and starts the watchdog thread."""
    notifier = Notifier(env)
    watchdog = None
    if notifier.enabled:
        tls = getattr(app, "dicom_tls_port", None)
        status = f"ready: DICOM port {app.dicom_port}{f', DICOM TLS port {tls}' if tls else ''}"
        status += f", web port {app.web_port}"
        notifier.send(READY="1", STATUS=status)
        if notifier.interval is not None:
            watchdog = Watchdog(notifier, notifier.interval, lambda: is_healthy(app)).start()
    return Supervision(notifier, watchdog)
