"""DICOM TLS (PS3.15 Annex B) on dicom.tls_port, judged by DCMTK's echoscu and storescu
with +tls: the self-signed certificate, client certificates against dicom.tls_ca, and
peers that do not speak TLS, which are refused while the listener keeps serving."""

from __future__ import annotations

import hashlib
import socket
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.server import Appliance
from tests.forward_factories import write_series
from tests.forward_helpers import MODALITY, forward_config
from tests.helpers import peer_env, require_peer, wait_for
from tests.rawpeer import associate_rq, read_pdu
from tests.tlscerts import issue, make_ca

pytestmark = pytest.mark.interop


def _echo(port: int, *tls: str, calling: str = "ECHOSCU") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_peer("echoscu"), "-v", *tls, "-aet", calling, "-aec", "APPLIANCE",
         "127.0.0.1", str(port)],
        capture_output=True, text=True, timeout=30, env=peer_env(),
    )  # fmt: skip


def _cert_file(app: Appliance) -> str:
    return str(Path(app.config.data_dir) / "tls" / "appliance.crt")


def test_echoscu_over_tls_verifies_the_self_signed_certificate(appliance: Appliance) -> None:
    port = appliance.dicom_tls_port
    assert port and port != appliance.dicom_port
    out = _echo(port, "--anonymous-tls", "+cf", _cert_file(appliance))
    assert out.returncode == 0, out.stderr
    assert "Received Echo Response (Success)" in out.stdout + out.stderr
    # The fingerprint the box reports is the certificate a peer is shown.
    der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", port)))
    shown = hashlib.sha256(der).hexdigest().upper()
    assert appliance.tls_fingerprint.replace(":", "") == shown
    health = appliance.health()["services"]["dicom_tls"]
    assert health["state"] == "running" and health["port"] == port


def test_storescu_over_tls_is_spooled(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    app = start_appliance(forward_config([]))
    paths = write_series(tmp_path / "in", 3)
    out = subprocess.run(
        [require_peer("storescu"), "--anonymous-tls", "+cf", _cert_file(app), "-aet", MODALITY,
         "-aec", "APPLIANCE", "127.0.0.1", str(app.dicom_tls_port), *map(str, paths)],
        capture_output=True, text=True, timeout=60, env=peer_env(),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = wait_for(
        lambda: len(app.runtime.store.query("SELECT id FROM forward_instances")) == 3, timeout=10
    )
    assert rows


def test_a_plain_peer_on_the_tls_port_is_refused_and_the_box_keeps_serving(
    appliance: Appliance, caplog: pytest.LogCaptureFixture
) -> None:
    out = _echo(appliance.dicom_tls_port)
    assert out.returncode != 0
    assert any("plain DICOM on the TLS port" in r.getMessage() for r in caplog.records)
    # Raw: an A-ASSOCIATE-RQ in clear gets no DICOM answer, just the end of the connection.
    with socket.create_connection(("127.0.0.1", appliance.dicom_tls_port), timeout=5) as sock:
        sock.sendall(associate_rq())
        assert read_pdu(sock, timeout=5) is None
    assert _echo(appliance.dicom_tls_port, "--anonymous-tls", "-ic").returncode == 0
    assert _echo(appliance.dicom_port).returncode == 0


def test_a_silent_peer_on_the_tls_port_does_not_hold_the_accept_loop(
    start_appliance: Callable[..., Appliance],
) -> None:
    app = start_appliance({"dicom": {"associate_timeout": 1.0}})
    silent = [socket.create_connection(("127.0.0.1", app.dicom_tls_port)) for _ in range(5)]
    try:
        out = _echo(app.dicom_tls_port, "--anonymous-tls", "-ic")  # while they wait
        assert out.returncode == 0, out.stderr
    finally:
        for sock in silent:
            sock.close()


def test_client_certificates_are_checked_against_the_configured_ca(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    ca, ca_key, ca_cert = make_ca(tmp_path / "ca")
    good = issue(tmp_path / "ca", "modality", ca_key, ca_cert)
    expired = issue(tmp_path / "ca", "old", ca_key, ca_cert, expired=True)
    _, other_key, other_cert = make_ca(tmp_path / "other", "Other CA")
    stranger = issue(tmp_path / "other", "stranger", other_key, other_cert)
    app = start_appliance({"dicom": {"tls_ca": str(ca.cert)}})
    port, server_cert = app.dicom_tls_port, _cert_file(app)
    ok = _echo(port, "+tls", str(good.key), str(good.cert), "+cf", server_cert)
    assert ok.returncode == 0, ok.stderr
    for pair in (expired, stranger):
        refused = _echo(port, "+tls", str(pair.key), str(pair.cert), "+cf", server_cert)
        assert refused.returncode != 0, f"{pair.cert.name} was accepted"
    assert _echo(port, "--anonymous-tls", "+cf", server_cert).returncode != 0  # no certificate
    assert _echo(port, "+tls", str(good.key), str(good.cert), "+cf", server_cert).returncode == 0


def test_a_device_that_requires_tls_is_refused_on_the_plain_port(
    start_appliance: Callable[..., Appliance],
) -> None:
    app = start_appliance({"devices": [{"ae_title": "SECURECT", "tls": "required"}]})
    plain = _echo(app.dicom_port, calling="SECURECT")
    assert (
        plain.returncode != 0 and "Calling AE Title Not Recognized" in plain.stdout + plain.stderr
    )
    over_tls = _echo(app.dicom_tls_port, "--anonymous-tls", "-ic", calling="SECURECT")
    assert over_tls.returncode == 0, over_tls.stderr
    [row] = app.runtime.store.query(
        "SELECT detail FROM audit WHERE action = 'dicom-association-rejected'"
    )
    assert "must use DICOM TLS" in row["detail"]
    assert _echo(app.dicom_port, calling="OTHERCT").returncode == 0  # others: plain is fine
