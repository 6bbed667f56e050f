"""The running appliance: C-ECHO over a real association, /healthz, access policy."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from appliance import statuskey
from appliance.server import Appliance
from tests.webclient import https_context


def echo(port: int, calling: str = "TESTSCU", called: str = "APPLIANCE") -> tuple[bool, int | None]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return False, None
    status = assoc.send_c_echo()
    assoc.release()
    return True, int(status.Status) if status else None


def get_json(port: int, path: str, token: str = "") -> tuple[int, dict]:
    req = urllib.request.Request(f"https://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5, context=https_context()) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_c_echo_from_pynetdicom(appliance: Appliance) -> None:
    assert appliance.dicom_port and appliance.dicom_port > 0
    assert echo(appliance.dicom_port) == (True, 0x0000)


def test_healthz_reports_each_service(appliance: Appliance) -> None:
    key = statuskey.read(appliance.config.data_dir)
    assert key
    code, report = get_json(appliance.web_port, "/healthz", token=key)
    assert code == 200
    assert report["status"] == "ok"
    services = report["services"]
    assert services["dicom"]["state"] == "running"
    assert services["dicom"]["port"] == appliance.dicom_port
    assert services["web"]["state"] == "running"
    assert services["database"]["state"] == "running"


def test_reject_policy_refuses_unknown_ae_titles(start_appliance: Callable[..., Appliance]) -> None:
    app = start_appliance({"dicom": {"unknown_ae": "reject"}, "devices": [{"ae_title": "CT1"}]})
    assert echo(app.dicom_port, calling="CT1") == (True, 0)
    assert echo(app.dicom_port, calling="STRANGER") == (False, None)


def test_stop_closes_listeners_and_restart_reuses_data(
    start_appliance: Callable[..., Appliance], tmp_path
) -> None:
    app = start_appliance(data_dir=tmp_path / "d")
    port = app.dicom_port
    app.stop()
    assert echo(port) == (False, None)
    again = start_appliance(data_dir=tmp_path / "d")
    assert echo(again.dicom_port) == (True, 0)
