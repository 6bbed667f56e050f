"""Refused associations and requests are in the audit log (not only on stderr): what an
admin looks for first when a new modality "gets no worklist"."""

from __future__ import annotations

import time
from collections.abc import Callable

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    Verification,
)

from appliance.server import Appliance
from tests.helpers import wait_for


def _assoc(app: Appliance, calling: str, called: str = "APPLIANCE", find: bool = False):
    ae = AE(ae_title=calling)
    ae.add_requested_context(ModalityWorklistInformationFind if find else Verification)
    return ae.associate("127.0.0.1", app.dicom_port, ae_title=called)


def _audit(app: Appliance, action: str) -> list[dict]:
    return app.runtime.store.query("SELECT * FROM audit WHERE action = ? ORDER BY id", (action,))


def test_rejected_associations_are_audited_once_a_minute(
    start_appliance: Callable[..., Appliance],
) -> None:
    app = start_appliance({"dicom": {"unknown_ae": "reject"}, "devices": [{"ae_title": "CT1"}]})
    for _ in range(3):  # a modality retrying
        assert _assoc(app, "NEWCT").is_rejected
    assert _assoc(app, "CT1", called="WRONGBOX").is_rejected  # a known one, wrong address
    # Once for the retries (once a minute at most), once for the wrong called AE title.
    # The wrong called AE title is audited from EVT_REJECTED, which pynetdicom fires
    # after the A-ASSOCIATE-RJ has gone out: wait for the row rather than race it.
    wait_for(lambda: len(_audit(app, "dicom-association-rejected")) >= 2, timeout=5)
    time.sleep(0.2)  # a third row (a retry audited twice) would show up by now
    rows = _audit(app, "dicom-association-rejected")
    assert len(rows) == 2, rows
    first, wrong_box = rows
    assert wrong_box["object"] == "CT1"
    assert (first["actor"], first["object"], first["source"]) == ("NEWCT", "NEWCT", "127.0.0.1")
    assert "calling AE title not recognized" in first["detail"]
    assert wrong_box["detail"] == "called WRONGBOX: called AE title not recognized"


def test_reject_with_no_device_yet_rejects_everyone_and_still_serves_echo_to_none(
    start_appliance: Callable[..., Appliance],
) -> None:
    """unknown_ae = reject on a box with no device: every association is rejected
    (pynetdicom's allow-list could not say "nobody": the box failed to start)."""
    app = start_appliance({"dicom": {"unknown_ae": "reject"}, "devices": []})
    assoc = _assoc(app, "ANYONE")
    assert assoc.is_rejected
    rj = assoc.acceptor.primitive
    assert (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x03)


def test_a_refused_worklist_query_is_audited(start_appliance: Callable[..., Appliance]) -> None:
    app = start_appliance()  # unknown AE titles: verify-only
    assoc = _assoc(app, "NEWCT", find=True)
    assert assoc.is_established
    query = Dataset()
    query.PatientName = "*"
    statuses = [s.Status for s, _ in assoc.send_c_find(query, ModalityWorklistInformationFind)]
    assoc.release()
    assert statuses and statuses[-1] != 0x0000
    [row] = _audit(app, "dicom-request-refused")
    assert row["object"] == "NEWCT"
    assert "worklist" in row["detail"] and "verify-only" in row["detail"]
