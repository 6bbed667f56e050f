"""The sender against a scripted pynetdicom PACS: retries, dead letters, fallback, batches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
)

from appliance import status
from appliance.forward import queue, sender
from appliance.server import Appliance
from tests.forward_factories import make_ct, write_series
from tests.forward_helpers import FakePacs, forward_config, pacs_destination, send_files
from tests.helpers import wait_for


def _one_destination(start_appliance: Callable[..., Appliance], pacs: FakePacs, **fwd: object):
    dest = pacs_destination("pacs", pacs.ae_title, pacs.port)
    return start_appliance(forward_config([dest], **fwd))


def _rows(app: Appliance) -> list[dict]:
    return app.runtime.store.query("SELECT * FROM forward_queue ORDER BY id")


def test_out_of_resources_is_retried_then_delivered(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    pacs = fake_pacs(statuses=[status.OUT_OF_RESOURCES, status.OUT_OF_RESOURCES])
    app = _one_destination(start_appliance, pacs)
    paths = write_series(tmp_path / "in", 1)
    assert send_files(app.dicom_port, paths) == [status.SUCCESS]
    wait_for(lambda: _rows(app)[0]["state"] == queue.DELIVERED, timeout=10)
    row = _rows(app)[0]
    assert row["attempts"] == 2  # two refusals counted, the third try delivered
    assert [code for code, _, _ in pacs.received] == [
        status.OUT_OF_RESOURCES,
        status.OUT_OF_RESOURCES,
        status.SUCCESS,
    ]


def test_permanent_failure_goes_to_dead_letters_and_can_be_resent(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    pacs = fake_pacs(statuses=[status.CANNOT_UNDERSTAND])
    app = _one_destination(start_appliance, pacs)
    store = app.runtime.store
    paths = write_series(tmp_path / "in", 1)
    assert send_files(app.dicom_port, paths) == [status.SUCCESS]
    dead = wait_for(lambda: queue.dead_letters(store), timeout=10)
    assert dead[0]["reason"].startswith("cannot understand 0xC000")
    assert dead[0]["last_status"] == status.CANNOT_UNDERSTAND
    assert dead[0]["sop_instance_uid"] == dcmread(paths[0]).SOPInstanceUID
    assert len(pacs.received) == 1  # not retried on its own
    assert queue.summary(store, ["pacs"])[0]["dead"] == 1

    assert queue.resend(store, [dead[0]["id"]]) == 1
    wait_for(lambda: _rows(app)[0]["state"] == queue.DELIVERED, timeout=10)
    assert pacs.stored_uids() == [dcmread(paths[0]).SOPInstanceUID]
    assert queue.dead_letters(store) == []


def test_abort_mid_batch_retries_only_what_was_in_flight(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    pacs = fake_pacs(abort_at=[2])  # the third C-STORE gets an A-ABORT instead of an answer
    app = _one_destination(start_appliance, pacs, batch_size=10)
    paths = write_series(tmp_path / "in", 6)
    uids = [dcmread(p).SOPInstanceUID for p in paths]
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 6
    wait_for(lambda: sorted(pacs.stored_uids()) == sorted(uids), timeout=15)
    wait_for(lambda: all(r["state"] == queue.DELIVERED for r in _rows(app)), timeout=10)
    attempts = [r["attempts"] for r in _rows(app)]
    assert sum(attempts) == 1  # only the aborted one counted an attempt
    assert pacs.associations >= 2


def test_warning_counts_as_delivered(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    pacs = fake_pacs(statuses=[status.COERCION_OF_DATA_ELEMENTS])
    app = _one_destination(start_appliance, pacs)
    assert send_files(app.dicom_port, write_series(tmp_path / "in", 1)) == [status.SUCCESS]
    wait_for(lambda: _rows(app)[0]["state"] == queue.DELIVERED, timeout=10)
    assert _rows(app)[0]["last_status"] == status.COERCION_OF_DATA_ELEMENTS
    assert len(pacs.received) == 1


def test_pacs_without_compressed_syntax_gets_decompressed_pixels(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    pacs = fake_pacs(syntaxes=[ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    app = _one_destination(start_appliance, pacs)
    ds = make_ct(rows=64, columns=64, seed=3)
    original = ds.pixel_array.copy()
    ds.compress(RLELossless)
    path = tmp_path / "rle.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert send_files(app.dicom_port, [path]) == [status.SUCCESS]
    wait_for(lambda: pacs.stored_uids(), timeout=10)
    _, got, syntax = pacs.received[0]
    assert syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    assert got.SOPInstanceUID == ds.SOPInstanceUID  # decompression keeps the instance UID
    assert np.array_equal(got.pixel_array, original)
    # The spool still holds the file as it was received (RLE).
    spooled = app.runtime.store.query("SELECT file, transfer_syntax FROM forward_instances")[0]
    assert spooled["transfer_syntax"] == RLELossless


def test_sop_class_refused_by_pacs_is_dead_with_reason(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    pacs = fake_pacs(sop_classes=[MRImageStorage])
    app = _one_destination(start_appliance, pacs)
    assert send_files(app.dicom_port, write_series(tmp_path / "in", 1)) == [status.SUCCESS]
    dead = wait_for(lambda: queue.dead_letters(app.runtime.store), timeout=10)
    assert "accepted no presentation context" in dead[0]["reason"]
    assert CTImageStorage in dead[0]["reason"]
    # Retried on its own backoff first (a PACS configuration may change), then dead.
    assert dead[0]["attempts"] == sender.INSTANCE_ATTEMPTS
    assert dead[0]["reason"].startswith(f"gave up after {sender.INSTANCE_ATTEMPTS} attempts")


def test_a_batch_goes_over_one_association(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    pacs = fake_pacs()
    app = _one_destination(start_appliance, pacs, idle_release=5.0, batch_size=8, associations=1)
    paths = write_series(tmp_path / "in", 30)
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 30
    wait_for(lambda: len(pacs.stored_uids()) == 30, timeout=20)
    assert pacs.associations == 1
    assert sorted(pacs.stored_uids()) == sorted(dcmread(p).SOPInstanceUID for p in paths)


def test_parallel_associations_send_each_instance_once(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    pacs = fake_pacs()
    app = _one_destination(start_appliance, pacs, idle_release=5.0, batch_size=4, associations=3)
    paths = write_series(tmp_path / "in", 30)
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 30
    wait_for(lambda: len(pacs.stored_uids()) >= 30, timeout=20)
    wait_for(lambda: queue.summary(app.runtime.store)[0]["delivered"] == 30, timeout=10)
    assert len(pacs.received) == 30  # no instance sent twice
    assert sorted(pacs.stored_uids()) == sorted(dcmread(p).SOPInstanceUID for p in paths)
    assert 1 < pacs.associations <= 3


def test_routing_rules_by_modality_and_calling_ae(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    ct_pacs, mr_pacs, archive, ct1_only = (
        fake_pacs(ae_title=n) for n in ("CTP", "MRP", "ARC", "CT1P")
    )
    app = start_appliance(
        forward_config(
            [
                pacs_destination("ct", "CTP", ct_pacs.port, modalities=["CT"]),
                pacs_destination("mr", "MRP", mr_pacs.port, modalities=["mr"]),
                pacs_destination("archive", "ARC", archive.port),
                pacs_destination("ct1", "CT1P", ct1_only.port, from_ae=["CT1"]),
            ],
            devices=("CT1", "MODALITY"),
        )
    )
    ct = write_series(tmp_path / "ct", 2, modality="CT")
    mr = write_series(tmp_path / "mr", 2, modality="MR", sop_class=MRImageStorage)
    assert send_files(app.dicom_port, ct + mr) == [status.SUCCESS] * 4
    assert send_files(app.dicom_port, ct[:1], calling="CT1") == [status.SUCCESS]
    uids = {p: dcmread(p).SOPInstanceUID for p in ct + mr}
    wait_for(lambda: len(archive.stored_uids()) == 4, timeout=10)
    wait_for(lambda: len(ct_pacs.stored_uids()) == 2 and len(mr_pacs.stored_uids()) == 2, 10)
    wait_for(lambda: len(ct1_only.stored_uids()) == 1, timeout=10)
    assert sorted(ct_pacs.stored_uids()) == sorted(uids[p] for p in ct)
    assert sorted(mr_pacs.stored_uids()) == sorted(uids[p] for p in mr)
    assert ct1_only.stored_uids() == [uids[ct[0]]]


def test_retention_deletes_delivered_files_and_health_reports_the_queue(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    pacs = fake_pacs()
    # Files deleted one by one: the file per image spool (segments: test_forward_journal.py).
    app = _one_destination(start_appliance, pacs, retention_hours=0.0, spool="files")
    assert send_files(app.dicom_port, write_series(tmp_path / "in", 3)) == [status.SUCCESS] * 3
    objects = app.config.data_dir / "spool" / "objects"
    wait_for(lambda: len(pacs.stored_uids()) == 3, timeout=10)
    wait_for(lambda: not list(objects.rglob("*.dcm")), timeout=10)
    health = app.health()["services"]["forward"]
    assert health["state"] == "running"
    pacs_health = health["destinations"]["pacs"]
    assert pacs_health["waiting"] == 0 and pacs_health["delivered"] == 3
    assert pacs_health["delivered_last_minute"] == 3
    assert pacs_health["oldest_waiting_s"] is None
    wait_for(lambda: app.health()["services"]["forward"]["retention"]["deleted_since_start"] == 3)


def test_health_shows_why_items_wait(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    dest = pacs_destination("down", "NOBODY", 9)  # nothing listens on port 9
    app = start_appliance(forward_config([dest]))
    assert send_files(app.dicom_port, write_series(tmp_path / "in", 2)) == [status.SUCCESS] * 2
    wait_for(lambda: app.health()["services"]["forward"]["destinations"]["down"]["last_error"])
    down = app.health()["services"]["forward"]["destinations"]["down"]
    assert down["waiting"] == 2 and down["oldest_waiting_s"] >= 0
    assert "no association with NOBODY@127.0.0.1:9" in down["last_error"]
    assert app.health()["status"] == "ok"  # a PACS being down does not make the box unhealthy
