"""Storage Commitment reports to a device with ``tls = "required"`` (issue 13): the box
opens the N-EVENT-REPORT association over DICOM TLS, verifying the modality's certificate
against ``dicom.tls_ca`` and presenting its own; a modality whose certificate has expired
gets no report, and the commitment row says why."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

from pydicom.uid import generate_uid

from appliance import status
from appliance.dicom import tls
from appliance.server import Appliance
from tests import tlscerts
from tests.forward_factories import write_series
from tests.forward_helpers import (
    CommitmentModality,
    FakePacs,
    forward_config,
    pacs_destination,
    refs_of,
    send_files,
)
from tests.helpers import wait_for


def _modality_listener(pair: tlscerts.Pair, ca: Path) -> ssl.SSLContext:
    """The modality's TLS listener: its pair; the box must show a certificate the CA signed."""
    return tls.server_context(pair.cert, pair.key, str(ca))


def _run(
    start_appliance: Callable[..., Appliance], pacs: FakePacs, tmp_path: Path, which: str
) -> tuple[Appliance, CommitmentModality, list[tuple[str, str]], str]:
    ca, ca_key, ca_cert = tlscerts.make_ca(tmp_path / "pki", "Clinic CA")
    modality_pair = tlscerts.issue(
        tmp_path / "pki", "modality", ca_key, ca_cert, expired=which == "expired"
    )
    box = tlscerts.issue(tmp_path / "pki", "box", ca_key, ca_cert)
    scu = tlscerts.issue(tmp_path / "pki", "modality-scu", ca_key, ca_cert)
    # The modality calls the box's TLS port (it must: tls = required) with a certificate
    # of its own, and trusts the box's certificate through the same CA.
    toward_box = tls.client_context(str(ca.cert), scu.cert, scu.key)
    modality = CommitmentModality(
        tls_server=_modality_listener(modality_pair, ca.cert), tls_args=(toward_box, "localhost")
    )
    raw = forward_config(
        [pacs_destination("pacs", "PACS", pacs.port, commitment="delivery")],
        devices=("STORER",),
    )
    raw["devices"].append(
        {"ae_title": "MODALITY", "host": "127.0.0.1", "port": modality.port, "tls": "required"}
    )
    raw["dicom"] = {"tls_cert": str(box.cert), "tls_key": str(box.key), "tls_ca": str(ca.cert)}
    app = start_appliance(raw)
    paths = write_series(tmp_path / "in", 2)
    assert send_files(app.dicom_port, paths, calling="STORER") == [status.SUCCESS] * 2
    wait_for(lambda: len(pacs.stored_uids()) == 2, timeout=20)
    txn = generate_uid()
    assert modality.request(app.dicom_tls_port, txn, refs_of(paths)) == status.SUCCESS
    return app, modality, refs_of(paths), txn


def test_the_report_goes_over_tls(
    start_appliance: Callable[..., Appliance], pacs: FakePacs, tmp_path: Path
) -> None:
    app, modality, refs, txn = _run(start_appliance, pacs, tmp_path, "good")
    try:
        wait_for(lambda: modality.reports, timeout=20)
        [(event_type, info)] = modality.reports
        assert event_type == 1 and info.TransactionUID == txn
    finally:
        modality.close()


def test_an_expired_modality_certificate_gets_no_report_and_says_why(
    start_appliance: Callable[..., Appliance], pacs: FakePacs, tmp_path: Path
) -> None:
    app, modality, refs, txn = _run(start_appliance, pacs, tmp_path, "expired")
    try:
        rows = wait_for(
            lambda: app.runtime.store.query(
                "SELECT * FROM forward_commitments WHERE report_attempts > 0"
            ),
            timeout=20,
        )
        assert "TLS: certificate refused: certificate has expired" in str(rows[0])
        assert modality.reports == []
    finally:
        modality.close()
