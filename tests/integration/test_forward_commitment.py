"""Storage Commitment SCP over real associations, with scripted PACS and modality."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage, generate_uid
from pynetdicom import AE

from appliance import status
from appliance.server import Appliance
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


@pytest.fixture
def modality() -> Iterator[CommitmentModality]:
    m = CommitmentModality()
    yield m
    m.close()


def _start(
    start_appliance: Callable[..., Appliance],
    modality: CommitmentModality,
    pacs: FakePacs,
    policy: str,
    **fwd: object,
) -> Appliance:
    raw = forward_config(
        [pacs_destination("pacs", pacs.ae_title, pacs.port, commitment=policy)], **fwd
    )
    raw["devices"] = [{"ae_title": "MODALITY", "host": "127.0.0.1", "port": modality.port}]
    return start_appliance(raw)


def _failed(info: Dataset) -> dict[str, int]:
    return {i.ReferencedSOPInstanceUID: i.FailureReason for i in info.get("FailedSOPSequence", [])}


def _committed(info: Dataset) -> set[str]:
    return {i.ReferencedSOPInstanceUID for i in info.get("ReferencedSOPSequence", [])}


def test_delivery_policy_commits_after_the_pacs_stored(
    start_appliance: Callable[..., Appliance],
    modality: CommitmentModality,
    pacs: FakePacs,
    tmp_path: Path,
) -> None:
    app = _start(start_appliance, modality, pacs, "delivery")
    paths = write_series(tmp_path / "in", 3)
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 3
    assert modality.request(app.dicom_port, generate_uid(), refs_of(paths)) == status.SUCCESS
    [(event_type, info)] = wait_for(lambda: modality.reports, timeout=10)
    assert event_type == 1
    assert _committed(info) == {uid for _, uid in refs_of(paths)}
    assert len(pacs.stored_uids()) == 3  # delivered before the report


def test_unknown_and_conflicting_instances_fail_with_reasons(
    start_appliance: Callable[..., Appliance],
    modality: CommitmentModality,
    pacs: FakePacs,
    tmp_path: Path,
) -> None:
    app = _start(start_appliance, modality, pacs, "delivery")
    paths = write_series(tmp_path / "in", 2)
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 2
    (cls0, uid0), (_, uid1) = refs_of(paths)
    missing = generate_uid()
    refs = [(cls0, uid0), (MRImageStorage, uid1), (cls0, missing)]
    assert modality.request(app.dicom_port, generate_uid(), refs) == status.SUCCESS
    [(event_type, info)] = wait_for(lambda: modality.reports, timeout=10)
    assert event_type == 2
    assert _committed(info) == {uid0}
    assert _failed(info) == {
        uid1: status.CLASS_INSTANCE_CONFLICT,
        missing: status.NO_SUCH_SOP_INSTANCE,
    }


def test_pacs_without_commitment_times_out_as_processing_failure(
    start_appliance: Callable[..., Appliance],
    modality: CommitmentModality,
    pacs: FakePacs,
    tmp_path: Path,
) -> None:
    app = _start(start_appliance, modality, pacs, "pacs", commitment_timeout=1.0)
    paths = write_series(tmp_path / "in", 1)
    assert send_files(app.dicom_port, paths) == [status.SUCCESS]
    assert modality.request(app.dicom_port, generate_uid(), refs_of(paths)) == status.SUCCESS
    [(event_type, info)] = wait_for(lambda: modality.reports, timeout=15)
    assert event_type == 2
    assert _failed(info) == {refs_of(paths)[0][1]: status.PROCESSING_FAILURE}
    assert pacs.stored_uids()  # stored, but never committed by that PACS
    health = app.health()["services"]["forward"]["commitment"]
    assert "does not accept Storage Commitment" in health["last_error"]


def _n_action(port: int, calling: str, ds: Dataset, action_type: int = 1) -> Dataset:
    ae = AE(ae_title=calling)
    ae.add_requested_context(CommitmentModality.SOP_CLASS)
    assoc = ae.associate("127.0.0.1", port, ae_title="APPLIANCE")
    assert assoc.is_established
    try:
        rsp, _ = assoc.send_n_action(
            ds, action_type, CommitmentModality.SOP_CLASS, CommitmentModality.SOP_INSTANCE
        )
    finally:
        assoc.release()
    return rsp


def test_bad_requests_get_named_statuses(
    start_appliance: Callable[..., Appliance],
    modality: CommitmentModality,
    pacs: FakePacs,
    tmp_path: Path,
) -> None:
    app = _start(start_appliance, modality, pacs, "delivery")
    good = Dataset()
    good.TransactionUID = generate_uid()
    item = Dataset()
    item.ReferencedSOPClassUID = MRImageStorage
    item.ReferencedSOPInstanceUID = generate_uid()
    good.ReferencedSOPSequence = [item]

    rsp = _n_action(app.dicom_port, "STRANGER", good)
    assert rsp.Status == status.NOT_AUTHORIZED
    rsp = _n_action(app.dicom_port, "MODALITY", good, action_type=7)
    assert rsp.Status == status.NO_SUCH_ACTION_TYPE
    no_txn = Dataset()
    no_txn.ReferencedSOPSequence = [item]
    rsp = _n_action(app.dicom_port, "MODALITY", no_txn)
    assert rsp.Status == status.INVALID_ARGUMENT_VALUE
    assert "Transaction UID" in rsp.ErrorComment
    assert _n_action(app.dicom_port, "MODALITY", good).Status == status.SUCCESS
    rsp = _n_action(app.dicom_port, "MODALITY", good)
    assert rsp.Status == status.PROCESSING_FAILURE
    assert "already used" in rsp.ErrorComment
