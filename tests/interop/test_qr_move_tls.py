"""C-MOVE to a device with ``tls = "required"`` (issue 13): the sub-association goes over
DICOM TLS, judged by DCMTK storescp +tls (BCP 195, --require-peer-cert); a destination
whose certificate has expired gets nothing and the C-MOVE fails saying so."""

from __future__ import annotations

import hashlib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from appliance.dicom import tls
from appliance.server import Appliance
from tests import tlscerts
from tests.helpers import make_config, peer_env, require_peer, wait_for
from tests.orthanc import free_port
from tests.qr_helpers import QR_SCU, qr_config, store_studies

pytestmark = pytest.mark.interop


class TlsDest:
    def __init__(self, out: Path, pair: tlscerts.Pair, trusted: Path) -> None:
        self.out, self.port = out, free_port()
        out.mkdir(parents=True)
        self.proc = subprocess.Popen(
            [require_peer("storescp"), "-aet", "DEST", "+tls", str(pair.key), str(pair.cert),
             "+cf", str(trusted), "-od", str(out), str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=peer_env(),
        )  # fmt: skip
        wait_for(self._listening, timeout=10)

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError("storescp exited")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def received(self) -> set[str]:
        return {str(pydicom.dcmread(p).SOPInstanceUID) for p in self.out.iterdir()}

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[dict]:
    ca, ca_key, ca_cert = tlscerts.make_ca(tmp_path / "pki", "Clinic CA")
    pki = tmp_path / "pki"
    pairs = {
        "dest": tlscerts.issue(pki, "dest", ca_key, ca_cert),
        "expired": tlscerts.issue(pki, "old-dest", ca_key, ca_cert, expired=True),
        "box": tlscerts.issue(pki, "box", ca_key, ca_cert),
    }
    started: list[TlsDest] = []
    yield {"ca": ca, "pairs": pairs, "tmp": tmp_path, "started": started}
    for dest in started:
        dest.stop()


def _box_moving_to(setup: dict, pair: tlscerts.Pair, **device: str) -> tuple[Appliance, TlsDest]:
    """A box holding nothing yet whose device DEST (``device`` its TLS settings) is a
    storescp +tls presenting ``pair`` and trusting the CA of the box's certificate."""
    n = len(setup["started"])
    dest = TlsDest(setup["tmp"] / f"dest-{n}", pair, setup["ca"].cert)
    setup["started"].append(dest)
    raw = qr_config(dest.port)
    for entry in raw["devices"]:
        if entry["ae_title"] == "DEST":
            entry.update(device)
    box = setup["pairs"]["box"]
    raw["dicom"] = {
        "tls_cert": str(box.cert),
        "tls_key": str(box.key),
        "tls_ca": str(setup["ca"].cert),
    }
    app = Appliance(make_config(setup["tmp"] / f"data-{n}", raw)).start()
    return app, dest


def _move_a_study(app: Appliance, setup: dict) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """Store two studies, movescu the first to DEST: its instances and movescu's result."""
    held = store_studies(app.dicom_port, setup["tmp"] / "images")
    study = list(held.studies)[0]
    return set(held.instances(study)), _movescu(app, study)


def _movescu(app: Appliance, study: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_peer("movescu"), "-S", "-d", "-aet", QR_SCU, "-aec", "APPLIANCE", "-aem", "DEST",
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
         "127.0.0.1", str(app.dicom_port)],
        capture_output=True, text=True, timeout=60, env=peer_env(),
    )  # fmt: skip


def test_move_to_a_tls_device_goes_over_tls(setup: dict) -> None:
    app, dest = _box_moving_to(setup, setup["pairs"]["dest"], tls="required")
    try:
        instances, proc = _move_a_study(app, setup)
        assert proc.returncode == 0, proc.stderr
        assert instances <= dest.received()
    finally:
        app.stop()


def test_move_to_a_device_with_an_expired_certificate_fails_saying_so(setup: dict) -> None:
    app, dest = _box_moving_to(setup, setup["pairs"]["expired"], tls="required")
    try:
        _, proc = _move_a_study(app, setup)
        assert "certificate has expired" in proc.stdout + proc.stderr
        assert dest.received() == set()
    finally:
        app.stop()


def _box_moving_to_a_workstation(setup: dict, pin: str) -> tuple[Appliance, TlsDest]:
    """A 3D workstation with its own self-signed certificate (no CA the box knows), its
    fingerprint pinned on the device (``pin``, or the right one when empty)."""
    ws_cert, ws_key = tls.self_signed(setup["tmp"] / "ws-pki")
    right = hashlib.sha256(ssl.PEM_cert_to_DER_cert(ws_cert.read_text())).hexdigest()
    pair = tlscerts.Pair(cert=ws_cert, key=ws_key)
    return _box_moving_to(setup, pair, tls_fingerprint=pin or f"sha256:{right}")


def test_move_to_a_pinned_self_signed_workstation_goes_over_tls(setup: dict) -> None:
    """The pin is the check toward a device that pins its certificate: a self-signed
    one (which dicom.tls_ca does not sign) is accepted when it is exactly the pinned one."""
    app, dest = _box_moving_to_a_workstation(setup, pin="")
    try:
        instances, proc = _move_a_study(app, setup)
        assert proc.returncode == 0, proc.stderr
        assert instances <= dest.received()
    finally:
        app.stop()


def test_move_to_a_workstation_with_another_certificate_than_pinned_gets_nothing(
    setup: dict, caplog: pytest.LogCaptureFixture
) -> None:
    app, dest = _box_moving_to_a_workstation(setup, pin="sha256:" + "ab" * 32)
    try:
        _, proc = _move_a_study(app, setup)
        text = proc.stdout + proc.stderr
        assert "0xa702" in text and "TLS: certificate refused: not the pinned one" in text
        assert dest.received() == set()
        logged = " ".join(r.getMessage() for r in caplog.records)
        assert f"(pinned: sha256:{'ab' * 32})" in logged
    finally:
        app.stop()
