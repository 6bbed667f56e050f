"""A busy box holds more than 1023 file descriptors: it must still serve DICOM and the
web page (select() cannot take a descriptor above 1023: the edge, the intake and the
web server use poll()). The box runs in its own process holding 1,100 descriptors; the
test talks to it from this one."""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from appliance import status
from tests.forward_factories import write_series
from tests.forward_helpers import send_files
from tests.helpers import wait_for
from tests.rawpeer import echo_seconds
from tests.webclient import https_context

BOX = """
import os, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
from appliance.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_dicom_and_web_with_descriptors_above_1023(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the hard limit of open files is {hard}")
    config = tmp_path / "box.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[dicom]\nhost = "127.0.0.1"\nport = 0\n'
        'tls_port = 0\n[web]\nhost = "127.0.0.1"\nport = 0\nhttp_port = 0\n[forward]\nreserve_mb = 0\n'
        '[[devices]]\nae_title = "MODALITY"\n'
    )
    log = tmp_path / "box.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", BOX, "serve", "--config", str(config)], stderr=out
        )
    try:
        found = wait_for(
            lambda: re.search(
                r"DICOM \S+ on port (\d+), web on https://[^:]+:(\d+)/", log.read_text()
            ),
            timeout=30,
        )
        dicom, web = int(found.group(1)), int(found.group(2))
        for _ in range(3):
            assert echo_seconds(dicom) < 1.0
        assert send_files(dicom, write_series(tmp_path / "in", 3)) == [status.SUCCESS] * 3
        with urllib.request.urlopen(
            f"https://127.0.0.1:{web}/healthz", timeout=5, context=https_context()
        ) as resp:
            assert json.loads(resp.read()) == {"status": "ok"}
    finally:
        proc.terminate()
        proc.wait(10)
    assert "Traceback" not in log.read_text()
