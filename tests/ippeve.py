"""CUPS's ippeveprinter on loopback as the network printer, with its private D-Bus.

ippeveprinter stops with "Unable to initialize DNS-SD" without a D-Bus; a private
dbus-daemon satisfies it and ``-r off`` keeps it from registering with Avahi.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.printing import ipp
from tests.helpers import require_peer

GET_JOBS = 0x000A


@dataclass
class TestPrinter:
    uri: str
    spool: Path

    def jobs(self) -> list[dict[str, Any]]:
        """Completed jobs with their attributes (Get-Jobs, which-jobs=completed)."""
        req = ipp.encode_request(
            GET_JOBS,
            self.uri,
            [
                (ipp.NAME, "requesting-user-name", "test"),
                (ipp.KEYWORD, "which-jobs", "completed"),
                (
                    ipp.KEYWORD,
                    "requested-attributes",
                    [
                        "job-id",
                        "job-name",
                        "job-state",
                        "media",
                        "copies",
                        "print-color-mode",
                        "document-format",
                        "job-impressions-completed",
                    ],
                ),
            ],
        )
        resp = ipp.send(self.uri, req)
        return [
            {k: (v[0] if len(v) == 1 else v) for k, v in attrs.items()}
            for tag, attrs in resp.groups
            if tag == ipp.JOB_GROUP
        ]

    def files(self) -> list[Path]:
        """Documents kept in the spool directory (-k); .prn is the print command's output."""
        return sorted(
            p for p in self.spool.rglob("*") if p.is_file() and p.suffix not in (".ipp", ".prn")
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(printer: subprocess.Popen, uri: str, log_path: Path) -> bool:
    """True once the printer answers Get-Printer-Attributes; False if it exited first."""

    def ready() -> bool | None:
        if printer.poll() is not None:
            return None
        try:
            ipp.get_printer_attributes(uri, timeout=2)
            return True
        except ipp.IppError:
            return False

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        state = ready()
        if state is None:
            return False
        if state:
            return True
        time.sleep(0.05)
    raise AssertionError(f"ippeveprinter did not answer in 15 s:\n{log_path.read_text()}")


@contextmanager
def run_ippeveprinter(tmp_path: Path, formats: str, color: bool = True) -> Iterator[TestPrinter]:
    """Start dbus-daemon and ippeveprinter; stop both (by their process ids) afterwards."""
    ippeve = require_peer("ippeveprinter")
    dbus = require_peer("dbus-daemon")
    tmp_path.mkdir(parents=True, exist_ok=True)
    bus = f"unix:path={tmp_path / 'bus'}"
    daemon = subprocess.Popen(
        [dbus, "--session", f"--address={bus}", "--nofork", "--print-address"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    printer = None
    try:
        assert daemon.stdout is not None and daemon.stdout.readline().startswith("unix:")
        spool = tmp_path / "spool"
        spool.mkdir()
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus, "DBUS_SESSION_BUS_ADDRESS": bus}
        log_path = tmp_path / "ippeveprinter.log"
        for _attempt in range(3):
            # The port was free a moment ago; another test's process may take it first
            # (ippeveprinter then exits: "Address already in use"): take another one.
            port = _free_port()
            cmd = [ippeve, "-k", "-r", "off", "-d", str(spool), "-p", str(port), "-f", formats]
            if color:
                cmd += ["-s", "10,10"]  # a colour printer (pages per minute, colour after comma)
            # Without a print command ippeveprinter "prints" by sleeping 5-15 s; `true` is instant.
            cmd += ["-c", require_peer("true")]
            log = open(log_path, "w")  # noqa: SIM115 - closed below
            printer = subprocess.Popen([*cmd, "AppliancePrinter"], stdout=log, stderr=log, env=env)
            uri = f"ipp://127.0.0.1:{port}/ipp/print"
            if _wait_ready(printer, uri, log_path):
                break
            log.close()
            if "already in use" not in log_path.read_text():
                raise AssertionError(log_path.read_text())
        else:
            raise AssertionError("ippeveprinter found no free port:\n" + log_path.read_text())
        yield TestPrinter(uri, spool)
    finally:
        for proc in (printer, daemon):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if printer is not None:
            log.close()
