"""Storage Commitment through the appliance: the modality hears back after Orthanc commits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydicom.uid import generate_uid

from appliance import status
from appliance.forward import queue
from appliance.server import Appliance
from tests.forward_factories import write_series
from tests.forward_helpers import (
    CommitmentModality,
    forward_config,
    pacs_destination,
    refs_of,
    send_files,
)
from tests.helpers import wait_for
from tests.orthanc import Orthanc


def test_commitment_answered_only_after_orthanc_commits(
    start_appliance: Callable[..., Appliance], orthanc: Orthanc, tmp_path: Path
) -> None:
    modality = CommitmentModality()
    try:
        raw = forward_config(
            [pacs_destination("pacs", orthanc.aet, orthanc.dicom_port, commitment="pacs")],
            commitment_timeout=60.0,
        )
        raw["devices"] = [{"ae_title": "MODALITY", "host": "127.0.0.1", "port": modality.port}]
        orthanc.kill()  # the PACS is down while the modality sends and asks
        app = start_appliance(raw)
        store = app.runtime.store
        paths = write_series(tmp_path / "in", 4)
        assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 4
        txn = generate_uid()
        assert modality.request(app.dicom_port, txn, refs_of(paths)) == status.SUCCESS
        wait_for(lambda: queue.summary(store)[0]["last_error"], timeout=10)
        pending = store.query("SELECT state FROM forward_commitments")
        assert pending == [{"state": "pending"}] and modality.reports == []

        orthanc.start()
        orthanc.add_modality("appliance", "APPLIANCE", app.dicom_port)
        wait_for(lambda: modality.reports, timeout=30)
        [(event_type, info)] = modality.reports
        assert event_type == 1  # all committed
        assert info.TransactionUID == txn
        assert "FailedSOPSequence" not in info
        committed = {
            (i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID)
            for i in info.ReferencedSOPSequence
        }
        assert committed == set(refs_of(paths))
        # The PACS committed (its own N-EVENT-REPORT recorded) before the modality heard back.
        [report] = wait_for(
            lambda: store.query(
                "SELECT reported_at FROM forward_commitments WHERE state = 'reported'"
            ),
            timeout=10,
        )
        # Deliveries may be asked about in more than one request (one per batch).
        pacs_reqs = store.query("SELECT answered_at, event_type FROM forward_pacs_requests")
        assert pacs_reqs and all(r["event_type"] == 1 for r in pacs_reqs)
        assert max(r["answered_at"] for r in pacs_reqs) <= report["reported_at"]
        rows = store.query("SELECT committed_at FROM forward_queue")
        assert all(r["committed_at"] for r in rows)
        assert set(orthanc.instance_uids()) == {uid for _, uid in refs_of(paths)}
    finally:
        modality.close()
