"""The systemd unit: the settings the box relies on, and ``systemd-analyze verify`` clean."""

from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

import pytest

from tests.helpers import require_peer

pytestmark = pytest.mark.interop

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "appliance.service"
EXEC = "/opt/appliance/venv/bin/appliance"


def unit_settings() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_runs_the_venv_as_a_notify_service_with_a_watchdog_and_a_sandbox() -> None:
    service = unit_settings()["Service"]
    assert service["Type"] == "notify"
    assert service["ExecStart"] == f"{EXEC} serve --config /etc/appliance/appliance.toml"
    assert service["WatchdogSec"] == "30"
    assert service["Restart"] == "on-failure"
    assert service["User"] == "appliance"
    assert service["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/appliance"
    for flag in ("ProtectHome", "PrivateTmp", "NoNewPrivileges"):
        assert service[flag] == "yes", flag
    assert unit_settings()["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    analyze = require_peer("systemd-analyze")
    # verify checks that ExecStart exists: point it at a stand-in, change nothing else.
    program = tmp_path / "appliance"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    unit = tmp_path / "appliance.service"
    unit.write_text(UNIT.read_text().replace(EXEC, str(program)))
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "" and out.stdout.strip() == ""


def test_systemd_analyze_verify_would_catch_a_typo(tmp_path: Path) -> None:
    analyze = require_peer("systemd-analyze")
    unit = tmp_path / "appliance.service"
    unit.write_text(
        UNIT.read_text().replace("WatchdogSec=", "WatchdogSecs=").replace(EXEC, "/bin/true")
    )
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "WatchdogSecs" in out.stderr
