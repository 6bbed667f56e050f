"""scripts/install into a throw-away tree (--prefix), offline from a wheelhouse that
scripts/wheelhouse builds for this machine's architecture (PyPI is the peer)."""

from __future__ import annotations

import os
import platform
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The appliance's wheel and its dependencies' for this architecture, built once."""
    out = tmp_path_factory.mktemp("wheelhouse")
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        [str(ROOT / "scripts" / "wheelhouse"), str(out), platform.machine()],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def install(prefix: Path, wheelhouse: Path) -> subprocess.CompletedProcess:
    # No index at all: were anything missing from the wheelhouse, pip would fail.
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull}
    return subprocess.run(
        [str(ROOT / "scripts" / "install"), "--prefix", prefix.name,  # relative to cwd
         "--wheelhouse", str(wheelhouse), "--python", sys.executable],
        env=env, capture_output=True, text=True, timeout=240, cwd=prefix.parent,
    )  # fmt: skip


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_offline_into_a_prefix_then_again_keeps_the_configuration(
    tmp_path: Path, wheelhouse: Path
) -> None:
    prefix = tmp_path / "root"
    done = install(prefix, wheelhouse)
    assert done.returncode == 0, done.stderr[-3000:]

    config = prefix / "etc/appliance/appliance.toml"
    installed = tomllib.loads(config.read_text())
    assert installed["data_dir"] == "/var/lib/appliance"
    assert installed["web"] == {"port": 443, "http_port": 80}  # HTTPS on 443, 80 redirects
    assert mode(config) == 0o640
    assert mode(prefix / "var/lib/appliance") == 0o750
    unit = prefix / "etc/systemd/system/appliance.service"
    assert unit.read_text() == (ROOT / "deploy/appliance.service").read_text()
    assert mode(unit) == 0o644
    assert "systemd not used here" in done.stdout

    program = prefix / "opt/appliance/venv/bin/appliance"
    check = subprocess.run(
        [str(program), "config", "check", str(config)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stderr
    assert "ok (AE APPLIANCE" in check.stdout
    # The venv's own appliance, not this checkout's.
    where = subprocess.run(
        [str(prefix / "opt/appliance/venv/bin/python"), "-c",
         "import appliance.notify, sys; print(appliance.notify.__file__)"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )  # fmt: skip
    assert where.stdout.startswith(str(prefix / "opt/appliance/venv/")), where

    edited = config.read_text().replace('# ae_title = "APPLIANCE"', 'ae_title = "CLINIC"', 1)
    config.write_text(edited)
    again = install(prefix, wheelhouse)
    assert again.returncode == 0, again.stderr[-3000:]
    assert config.read_text() == edited
    assert "kept" in again.stdout and "ok (AE CLINIC" in again.stdout


def test_install_refuses_an_unknown_option(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(ROOT / "scripts" / "install"), "--prefx", str(tmp_path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and "usage" in done.stderr
    assert not any(tmp_path.iterdir())
