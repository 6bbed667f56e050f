"""The systemd notify protocol against a real AF_UNIX datagram socket: READY once the
listeners answer, WATCHDOG while healthy (and not while hung), STOPPING on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appliance import notify
from appliance.server import Appliance
from tests.webclient import https_context


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound SOCK_DGRAM socket playing systemd, in a short temporary directory (an
    AF_UNIX path is limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="sd", dir="/tmp") as tmp:
        path = str(Path(tmp) / "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        yield sock, path
        sock.close()


def receive(sock: socket.socket, until: Callable[[dict[str, str]], bool], timeout: float) -> list:
    """Datagrams as dicts of their KEY=value lines, up to the first that ``until`` accepts."""
    messages: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no awaited notification within {timeout} s: {messages}")
        sock.settimeout(left)
        data = sock.recv(4096).decode("utf-8")
        message = dict(line.split("=", 1) for line in data.splitlines())
        messages.append(message)
        if until(message):
            return messages


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_says_ready_after_the_ports_answer_pings_and_says_stopping(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    dport, wport = free_port(), free_port()
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "300000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--host", "127.0.0.1",
         "--data-dir", str(tmp_path / "d"), "--dicom-port", str(dport), "--web-port", str(wport), "--dicom-tls-port", "0", "--http-port", "0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        before = receive(sock, lambda m: "READY" in m, timeout=30)
        # At READY both listeners answer at once: no polling.
        socket.create_connection(("127.0.0.1", dport), timeout=2).close()
        with urllib.request.urlopen(
            f"https://127.0.0.1:{wport}/healthz", timeout=5, context=https_context()
        ) as resp:
            assert resp.status == 200
        assert before[-1]["READY"] == "1"
        assert f"DICOM port {dport}" in before[-1]["STATUS"]
        assert all("WATCHDOG" not in m for m in before)

        t0 = time.monotonic()
        pings = receive(sock, lambda m: m.get("WATCHDOG") == "1", timeout=5)
        for _ in range(3):
            pings += receive(sock, lambda m: m.get("WATCHDOG") == "1", timeout=2)
        # Every WATCHDOG_USEC / 2 = 0.15 s: four pings take about 0.6 s, well under 5.
        assert sum(m.get("WATCHDOG") == "1" for m in pings) >= 4
        assert time.monotonic() - t0 < 5

        proc.send_signal(signal.SIGTERM)
        receive(sock, lambda m: m.get("STOPPING") == "1", timeout=10)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def test_abstract_socket_name_is_reached() -> None:
    name = f"appliance-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        notifier = notify.Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.send(STATUS="hello", READY="1")
        assert sock.recv(4096) == b"STATUS=hello\nREADY=1"


def test_without_notify_socket_nothing_is_sent_and_serve_needs_nothing() -> None:
    notifier = notify.Notifier({})
    assert not notifier.enabled
    assert notifier.send(READY="1") is False
    assert notify.Notifier({"NOTIFY_SOCKET": "vsock:2:1"}).enabled is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(env: dict, expected: float | None) -> None:
    assert notify.watchdog_interval(env, os.getpid()) == expected


def test_watchdog_stops_pinging_while_the_check_hangs_or_fails(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    healthy = threading.Event()
    healthy.set()
    hung = threading.Event()
    mode = {"fail": False}

    def check() -> bool:
        if mode["fail"]:
            raise RuntimeError("database gone")
        if not healthy.is_set():
            hung.set()
        return healthy.wait()  # blocks while "hung"

    watchdog = notify.Watchdog(notify.Notifier({"NOTIFY_SOCKET": path}), 0.05, check).start()
    try:
        receive(sock, lambda m: m.get("WATCHDOG") == "1", timeout=5)
        healthy.clear()  # the next check hangs
        assert hung.wait(5)  # the thread is stuck in check(); earlier pings are sent
        drain(sock)
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(4096)
        mode["fail"] = True
        healthy.set()  # the hung check returns: one more ping, then failures
        messages = receive(sock, lambda m: "unhealthy" in m.get("STATUS", ""), timeout=5)
        assert messages[-1] == {"STATUS": "unhealthy: the DICOM listener is down"}
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(4096)
        mode["fail"] = False
        back = receive(sock, lambda m: m.get("WATCHDOG") == "1", timeout=5)
        assert back[-1]["STATUS"] == "ready (healthy again)"
    finally:
        healthy.set()
        watchdog.stop()


def drain(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        while True:
            sock.recv(4096)
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)


def test_is_healthy_follows_the_dicom_listener(start_appliance: Callable[..., Appliance]) -> None:
    app = start_appliance()
    assert notify.is_healthy(app)
    app.stop()
    assert app.health()["services"]["dicom"]["state"] == "stopped"
    assert not notify.is_healthy(app)


def test_supervise_outside_systemd_sends_nothing_and_stops_cleanly(
    start_appliance: Callable[..., Appliance],
) -> None:
    supervision = notify.supervise(start_appliance(), env={})
    assert supervision.watchdog is None
    supervision.stopping()


def test_supervise_sends_ready_with_the_ports(
    start_appliance: Callable[..., Appliance], notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    app = start_appliance()
    supervision = notify.supervise(app, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
    try:
        ready = receive(sock, lambda m: "READY" in m, timeout=5)[-1]
        assert ready == {
            "READY": "1",
            "STATUS": f"ready: DICOM port {app.dicom_port}, DICOM TLS port {app.dicom_tls_port}, "
            f"web port {app.web_port}",
        }
        receive(sock, lambda m: m.get("WATCHDOG") == "1", timeout=5)
    finally:
        supervision.stopping()
    assert receive(sock, lambda m: "STOPPING" in m, timeout=5)[-1] == {
        "STOPPING": "1",
        "STATUS": "stopping",
    }
