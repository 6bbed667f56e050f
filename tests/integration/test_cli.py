"""The command line, run as a real process: help, config check, serve and SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.helpers import wait_for
from tests.orthanc import free_port
from tests.webclient import https_context

PY = sys.executable


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("env", {k: v for k, v in os.environ.items() if k != "APPLIANCE_TOKEN"})
    return subprocess.run(
        [PY, "-m", "appliance", *args], capture_output=True, text=True, timeout=60, **kw
    )


def test_help_lists_the_commands() -> None:
    out = run("--help")
    assert out.returncode == 0
    for command in ("serve", "status", "config"):
        assert command in out.stdout


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("appliance")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "serve" in out.stdout


def test_config_check_accepts_good_and_names_bad_setting(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[dicom]\nae_title = "BOX"\n[[devices]]\nae_title = "CT1"\n')
    out = run("config", "check", str(good))
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout and "1 devices" in out.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text('[dicom]\nae_title = "THIS_TITLE_IS_TOO_LONG"\n')
    out = run("config", "check", str(bad))
    assert out.returncode == 2
    assert "dicom.ae_title" in out.stderr and "longer than 16" in out.stderr


def test_serve_with_bad_config_stops_at_once(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[dicom]\nport = 123456\n")
    t0 = time.monotonic()
    out = run("serve", "--config", str(bad), "--data-dir", str(tmp_path / "d"))
    assert out.returncode == 2
    assert "dicom.port" in out.stderr
    assert time.monotonic() - t0 < 10


def test_serve_answers_then_sigterm_stops_within_5s(tmp_path: Path) -> None:
    dport, wport, hport = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "appliance",
            "serve",
            "--data-dir",
            str(tmp_path / "d"),
            "--host",
            "127.0.0.1",
            "--dicom-port",
            str(dport),
            "--web-port",
            str(wport),
            "--dicom-tls-port",
            "0",
            "--http-port",
            str(hport),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def healthy(headers: dict[str, str] | None = None) -> dict | None:
            url = f"https://127.0.0.1:{wport}/healthz"
            try:
                req = urllib.request.Request(url, headers=headers or {})
                with urllib.request.urlopen(req, timeout=1, context=https_context()) as r:
                    return json.loads(r.read())
            except OSError:
                return None

        assert wait_for(healthy, timeout=20) == {"status": "ok"}  # anonymous: up or down only
        key = (tmp_path / "d" / "status.key").read_text().strip()
        report = healthy({"Authorization": f"Bearer {key}"})
        assert report is not None and report["services"]["dicom"]["port"] == dport
        ports = ("--web-port", str(wport), "--dicom-port", str(dport))
        status = run("status", "--data-dir", str(tmp_path / "d"), *ports)
        assert status.returncode == 0, status.stdout + status.stderr
        assert re.search(rf"dicom +running +.*ae_title=APPLIANCE, .*port={dport}\b", status.stdout)
        assert f"C-ECHO APPLIANCE@{dport}: success" in status.stdout
        # Started on other ports than its configuration's: status finds them by itself.
        status = run("status", "--data-dir", str(tmp_path / "d"))
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"C-ECHO APPLIANCE@{dport}: success" in status.stdout
        assert "{" not in status.stdout  # health in words, not Python dicts
        # Without the box's key (another data directory, no token): up or down only.
        status = run("status", "--data-dir", str(tmp_path / "elsewhere"), *ports)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "appliance: ok (details need --token" in status.stdout
        assert "ae_title" not in status.stdout
        assert f"C-ECHO APPLIANCE@{dport}: success" in status.stdout
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)
        assert time.monotonic() - t0 < 5
        assert proc.returncode == 0
        err = proc.stderr.read()
        assert "stopped" in err
        assert f"https://127.0.0.1:{wport}/" in err and "0.0.0.0" not in err
        assert f"plain HTTP on port {hport} redirects there" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    db = tmp_path / "d" / "appliance.db"
    check = subprocess.run(
        [
            PY,
            "-c",
            f"import sqlite3; print(sqlite3.connect({str(db)!r}).execute('PRAGMA integrity_check').fetchone()[0])",
        ],
        capture_output=True,
        text=True,
    )
    assert check.stdout.strip() == "ok"


def test_status_when_nothing_runs() -> None:
    out = run("status", "--web-port", str(free_port()))
    assert out.returncode == 1
    assert "not running" in out.stdout


def test_log_file_rotates_at_max_mb(tmp_path: Path) -> None:
    """[logging] file: the log also goes to a file under data_dir, rotated by size."""
    import logging

    from appliance import cli, config

    cfg = config.with_overrides(
        config.from_mapping({"logging": {"file": "log/box.log", "max_mb": 1, "backups": 2}}),
        data_dir=str(tmp_path),
    )
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    cli._setup_logging(cfg)
    added = [h for h in root.handlers if h not in before]
    try:
        assert [type(h).__name__ for h in added if h.__class__.__module__ != "logging"] == [
            "RotatingFileHandler"
        ]
        for i in range(3000):  # some 1.5 MB
            logging.getLogger("appliance.test").info("line %05d %s", i, "x" * 480)
    finally:
        for handler in added:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
    logs = sorted(p.name for p in (tmp_path / "log").iterdir())
    assert logs == ["box.log", "box.log.1"]
    assert (tmp_path / "log" / "box.log.1").stat().st_size <= 1024 * 1024
    assert "line 02999" in (tmp_path / "log" / "box.log").read_text()


def test_the_start_message_names_addresses_a_person_can_open() -> None:
    from appliance import cli

    everywhere = cli._addresses("0.0.0.0")
    assert everywhere[-1] == "127.0.0.1" and "0.0.0.0" not in everywhere
    assert cli._addresses("192.0.2.7") == ["192.0.2.7"]
