"""Client-certificate pinning per device (issue 13): ``tls_fingerprint = "sha256:..."``
on a [[devices]] entry lets that AE title in on the TLS port only with that one
certificate. Judged by DCMTK echoscu +tls with two certificates of the same CA: the pinned
one is served, the other is refused (A-ASSOCIATE-RJ) with one log and one audit line,
and the listener keeps serving."""

from __future__ import annotations

import hashlib
import logging
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance import devices
from appliance.config import DeviceSettings
from appliance.errors import ValidationError
from appliance.server import Appliance
from tests.helpers import peer_env, require_peer
from tests.tlscerts import issue, make_ca

pytestmark = pytest.mark.interop


def _echo(app: Appliance, pair: object, calling: str) -> subprocess.CompletedProcess[str]:
    server_cert = str(Path(app.config.data_dir) / "tls" / "appliance.crt")
    return subprocess.run(
        [require_peer("echoscu"), "-v", "+tls", str(pair.key), str(pair.cert),  # type: ignore[attr-defined]
         "+cf", server_cert, "-aet", calling, "-aec", "APPLIANCE",
         "127.0.0.1", str(app.dicom_tls_port)],
        capture_output=True, text=True, timeout=30, env=peer_env(),
    )  # fmt: skip


def _sha256(cert: Path, colons: bool = False) -> str:
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()
    if colons:
        return ":".join(digest[i : i + 2] for i in range(0, 64, 2)).upper()
    return f"sha256:{digest}"


def test_a_pinned_device_is_served_only_with_its_certificate(
    start_appliance: Callable[..., Appliance], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca, ca_key, ca_cert = make_ca(tmp_path / "ca")
    mine = issue(tmp_path / "ca", "ct-room-1", ca_key, ca_cert)
    other = issue(tmp_path / "ca", "ct-room-2", ca_key, ca_cert)
    app = start_appliance(
        {
            "dicom": {"tls_ca": str(ca.cert)},
            "devices": [
                # the colon form, as a certificate viewer shows it, is taken as well
                {"ae_title": "PINNEDCT", "tls_fingerprint": _sha256(mine.cert, colons=True)},
            ],
        }
    )
    assert app.runtime.access.device("PINNEDCT").tls_fingerprint == _sha256(mine.cert)
    ok = _echo(app, mine, "PINNEDCT")
    assert ok.returncode == 0, ok.stdout + ok.stderr

    caplog.set_level(logging.WARNING, logger="appliance.dicom.edge")
    refused = _echo(app, other, "PINNEDCT")
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
    lines = [r for r in caplog.records if "PINNEDCT" in r.getMessage()]
    assert len(lines) == 1 and "rejected" in lines[0].getMessage()
    [row] = app.runtime.store.query(
        "SELECT detail FROM audit WHERE action = 'dicom-association-rejected'"
    )
    assert _sha256(other.cert) in row["detail"] and "not the one pinned" in row["detail"]

    # The other certificate is fine for an AE title without a pin; the pinned one again.
    assert _echo(app, other, "OTHERCT").returncode == 0
    assert _echo(app, mine, "PINNEDCT").returncode == 0


def test_a_pinned_device_is_refused_on_the_plain_port(
    start_appliance: Callable[..., Appliance],
) -> None:
    app = start_appliance(
        {"devices": [{"ae_title": "PINNEDCT", "tls_fingerprint": "sha256:" + "ab" * 32}]}
    )
    plain = subprocess.run(
        [require_peer("echoscu"), "-aet", "PINNEDCT", "-aec", "APPLIANCE", "127.0.0.1",
         str(app.dicom_port)],
        capture_output=True, text=True, timeout=30, env=peer_env(),
    )  # fmt: skip
    assert plain.returncode != 0


def test_a_malformed_fingerprint_names_the_field(start_appliance: Callable[..., Appliance]) -> None:
    app = start_appliance()
    with pytest.raises(ValidationError) as err:
        devices.validate(DeviceSettings(ae_title="CT9", tls_fingerprint="md5:1234"))
    assert err.value.field == "tls_fingerprint"
    assert app.runtime is not None
