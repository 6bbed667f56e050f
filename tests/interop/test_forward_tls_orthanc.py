"""Forwarding and Storage Commitment over DICOM TLS, judged by Orthanc as a TLS PACS
(``DicomTlsEnabled``, ``DicomTlsRemoteCertificateRequired``): the box sends the images
and its N-ACTION over TLS with its client certificate; Orthanc reports back over TLS to
the box's TLS port (``UseDicomTls``); the modality hears that all were committed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from appliance import status
from appliance.server import Appliance
from tests import tlscerts
from tests.forward_factories import write_series
from tests.forward_helpers import (
    CommitmentModality,
    forward_config,
    pacs_destination,
    refs_of,
    send_files,
)
from tests.helpers import make_config, wait_for
from tests.orthanc import Orthanc

pytestmark = pytest.mark.interop


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, tlscerts.Pair]:
    ca, ca_key, ca_cert = tlscerts.make_ca(tmp_path / "pki", "Clinic CA")
    return {
        "ca": ca,
        "orthanc": tlscerts.issue(tmp_path / "pki", "orthanc", ca_key, ca_cert),
        "box": tlscerts.issue(tmp_path / "pki", "box", ca_key, ca_cert),
    }


@pytest.fixture
def tls_orthanc(tmp_path: Path, pki: dict[str, tlscerts.Pair]) -> Iterator[Orthanc]:
    pacs = Orthanc(
        tmp_path / "orthanc",
        DicomTlsEnabled=True,
        DicomTlsCertificate=str(pki["orthanc"].cert),
        DicomTlsPrivateKey=str(pki["orthanc"].key),
        DicomTlsTrustedCertificates=str(pki["ca"].cert),
        DicomTlsRemoteCertificateRequired=True,
    ).start()
    yield pacs
    pacs.kill()


def test_forward_and_commitment_over_tls_with_orthanc(
    tls_orthanc: Orthanc, pki: dict[str, tlscerts.Pair], tmp_path: Path
) -> None:
    modality = CommitmentModality()
    raw = forward_config(
        [pacs_destination("pacs", tls_orthanc.aet, tls_orthanc.dicom_port, commitment="pacs",
                          tls=True, tls_ca=str(pki["ca"].cert))],
        commitment_timeout=60.0,
    )  # fmt: skip
    raw["devices"] = [{"ae_title": "MODALITY", "host": "127.0.0.1", "port": modality.port}]
    box = pki["box"]
    raw["dicom"] = {
        "tls_cert": str(box.cert),
        "tls_key": str(box.key),
        "tls_ca": str(pki["ca"].cert),
    }
    app = Appliance(make_config(tmp_path / "data", raw)).start()
    try:
        tls_orthanc.send(
            "PUT", "/modalities/appliance",
            {"AET": "APPLIANCE", "Host": "127.0.0.1", "Port": app.dicom_tls_port, "UseDicomTls": True},
        )  # fmt: skip
        paths = write_series(tmp_path / "in", 3)
        assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 3
        wait_for(lambda: len(tls_orthanc.instance_uids()) == 3, timeout=30)
        assert set(tls_orthanc.instance_uids()) == {uid for _, uid in refs_of(paths)}
        txn = generate_uid()
        assert modality.request(app.dicom_port, txn, refs_of(paths)) == status.SUCCESS
        wait_for(lambda: modality.reports, timeout=30)
        [(event_type, info)] = modality.reports
        assert event_type == 1 and info.TransactionUID == txn
        pacs_reqs = app.runtime.store.query("SELECT event_type FROM forward_pacs_requests")
        assert pacs_reqs and all(r["event_type"] == 1 for r in pacs_reqs)
    finally:
        app.stop()
        modality.close()
