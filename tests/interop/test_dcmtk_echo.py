"""DCMTK echoscu, an independent peer, verifies the appliance's listener."""

from __future__ import annotations

import subprocess

from appliance.server import Appliance
from tests.helpers import peer_env, require_peer


def test_echoscu(appliance: Appliance) -> None:
    echoscu = require_peer("echoscu")
    out = subprocess.run(
        [
            echoscu,
            "-v",
            "-aet",
            "ECHOSCU",
            "-aec",
            "APPLIANCE",
            "127.0.0.1",
            str(appliance.dicom_port),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=peer_env(),
    )
    assert out.returncode == 0, out.stderr
    assert "Received Echo Response (Success)" in out.stdout + out.stderr


def test_echoscu_wrong_called_ae_is_rejected(appliance: Appliance) -> None:
    echoscu = require_peer("echoscu")
    out = subprocess.run(
        [echoscu, "-aec", "SOMEONEELSE", "127.0.0.1", str(appliance.dicom_port)],
        capture_output=True,
        text=True,
        timeout=30,
        env=peer_env(),
    )
    assert out.returncode != 0
    assert "Called AE Title Not Recognized" in out.stdout + out.stderr
