"""The Storage SCP over real associations: spool files, statuses, duplicates, access."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from appliance import status
from appliance.forward import journal, queue
from appliance.forward.spool import Spool
from appliance.server import Appliance
from tests.forward_factories import encoded, make_ct, write_series
from tests.forward_helpers import forward_config, pacs_destination, send_files, store_dataset

NOWHERE = pacs_destination("pacs", "PACS", 9)  # nothing listens: rows stay waiting


def _instances(app: Appliance) -> list[dict]:
    return app.runtime.store.query("SELECT * FROM forward_instances ORDER BY id")


def spool_files(app: Appliance) -> list[Path]:
    return list((app.config.data_dir / "spool" / "objects").glob("*/*.dcm"))


def test_success_leaves_a_part10_file_named_at_random(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    # The file per image spool (its journal counterpart: tests/integration/test_forward_journal.py).
    app = start_appliance(
        forward_config([NOWHERE], retry_initial=30.0, retry_max=60.0, spool="files")
    )
    path = write_series(tmp_path / "in", 1)[0]
    assert send_files(app.dicom_port, [path]) == [status.SUCCESS]
    [inst] = _instances(app)
    sent = dcmread(path)
    assert inst["sop_instance_uid"] == sent.SOPInstanceUID
    assert inst["modality"] == "CT" and inst["calling_ae"] == "MODALITY"
    spooled = app.config.data_dir / "spool" / inst["file"]
    raw = spooled.read_bytes()
    assert raw[:128] == b"\0" * 128 and raw[128:132] == b"DICM"
    assert re.fullmatch(r"objects/[0-9a-f]{2}/[0-9a-f]{32}\.dcm", inst["file"])
    assert sent.SOPInstanceUID not in inst["file"]
    got = dcmread(spooled)
    assert got.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
    assert got.file_meta.MediaStorageSOPInstanceUID == sent.SOPInstanceUID
    assert got.file_meta.MediaStorageSOPClassUID == sent.SOPClassUID
    assert got.file_meta.SourceApplicationEntityTitle == "MODALITY"
    # Taken from the socket by the intake, not by pynetdicom's C-STORE handler.
    assert app.health()["services"]["forward"]["received_since_start"] == 1
    assert raw.endswith(encoded(sent))  # the data set byte for byte as received
    rows = app.runtime.store.query("SELECT destination, state FROM forward_queue")
    assert rows == [{"destination": "pacs", "state": queue.WAITING}]


def test_disk_reserve_gives_out_of_resources(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    app = start_appliance(forward_config([NOWHERE], reserve_mb=1 << 40))  # a petabyte kept free
    rsp = store_dataset(app.dicom_port, make_ct())
    assert rsp.Status == status.OUT_OF_RESOURCES
    assert "reserve" in rsp.ErrorComment
    assert _instances(app) == []
    spool = app.config.data_dir / "spool"
    assert spool_files(app) == [] and list((spool / "tmp").iterdir()) == []


def test_unknown_ae_title_is_not_authorized_to_store(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    app = start_appliance(forward_config([NOWHERE]))  # unknown AE titles: verify-only
    ds = make_ct()
    ae = AE(ae_title="STRANGER")
    ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", app.dicom_port, ae_title="APPLIANCE")
    assert assoc.send_c_echo().Status == status.SUCCESS
    rsp = assoc.send_c_store(ds)
    assoc.release()
    assert rsp.Status == status.NOT_AUTHORIZED
    assert "may not store" in rsp.ErrorComment
    assert _instances(app) == []


def test_accept_policy_lets_unknown_ae_titles_store(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    raw = forward_config([NOWHERE], devices=())
    raw["dicom"] = {"unknown_ae": "accept"}
    app = start_appliance(raw)
    assert send_files(app.dicom_port, write_series(tmp_path / "in", 1), calling="ANYONE") == [
        status.SUCCESS
    ]
    assert _instances(app)[0]["calling_ae"] == "ANYONE"


@pytest.mark.parametrize("spool_mode", ["journal", "files"])
def test_repeated_identical_instance_is_idempotent(
    start_appliance: Callable[..., Appliance], tmp_path: Path, spool_mode: str
) -> None:
    app = start_appliance(forward_config([NOWHERE], spool=spool_mode))
    paths = write_series(tmp_path / "in", 2)
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 2
    files = {r["file"] for r in _instances(app)}
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 2
    assert len(_instances(app)) == 2
    assert {r["file"] for r in _instances(app)} == files  # the kept copies, not new ones
    assert app.runtime.store.query("SELECT COUNT(*) AS n FROM forward_queue")[0]["n"] == 2
    assert len(spool_files(app)) == (2 if spool_mode == "files" else 0)
    if spool_mode == "journal":
        [seg] = {journal.parse_ref(f).seq for f in files}  # type: ignore[union-attr]
        path = app.config.data_dir / "spool" / "journal" / journal.segment_name(seg)
        assert len(list(journal.scan(path))) == 2  # the repeats were never committed


@pytest.mark.parametrize("spool_mode", ["journal", "files"])
def test_changed_instance_replaces_the_old_version_and_is_queued_again(
    start_appliance: Callable[..., Appliance], tmp_path: Path, spool_mode: str
) -> None:
    app = start_appliance(forward_config([NOWHERE], spool=spool_mode))
    ds = make_ct()
    first = tmp_path / "v1.dcm"
    ds.save_as(first, enforce_file_format=True)
    assert send_files(app.dicom_port, [first]) == [status.SUCCESS]
    store = app.runtime.store
    with store.write() as db:  # pretend the first version was delivered
        db.execute("UPDATE forward_queue SET state = 'delivered', delivered_at = 1")
    old_file = _instances(app)[0]["file"]
    ds.SeriesDescription = "corrected"
    second = tmp_path / "v2.dcm"
    ds.save_as(second, enforce_file_format=True)
    assert send_files(app.dicom_port, [second]) == [status.SUCCESS]
    [inst] = _instances(app)
    assert inst["file"] != old_file
    if spool_mode == "files":  # a journal record goes with its segment (retention)
        assert not (app.config.data_dir / "spool" / old_file).exists()
    [row] = store.query("SELECT state, generation FROM forward_queue")
    assert row == {"state": queue.WAITING, "generation": 1}
    with Spool(app.config.data_dir / "spool").open(inst["file"]) as f:
        assert dcmread(f).SeriesDescription == "corrected"


def test_queue_database_failure_is_out_of_resources_not_success(
    start_appliance: Callable[..., Appliance], tmp_path: Path, monkeypatch
) -> None:
    app = start_appliance(forward_config([NOWHERE]))

    def locked(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(queue, "record_instance", locked)
    rsp = store_dataset(app.dicom_port, make_ct())
    assert rsp.Status == status.OUT_OF_RESOURCES
    assert "queue" in rsp.ErrorComment


@pytest.mark.filterwarnings("ignore:End of file reached:UserWarning")
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning")
def test_ingest_refuses_what_it_cannot_route(tmp_path: Path) -> None:
    from appliance.app import open_store
    from appliance.errors import ValidationError
    from appliance.forward.receiver import Receiver
    from appliance.forward.spool import Spool
    from tests.helpers import make_config

    cfg = make_config(tmp_path / "data", forward_config([NOWHERE]))
    store = open_store(cfg.data_dir)
    spool = Spool(cfg.data_dir / "spool")
    spool.prepare()
    receiver = Receiver(cfg, store, spool)
    ds = make_ct()
    good = tmp_path / "good.dcm"
    ds.save_as(good, enforce_file_format=True)
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(good.read_bytes()[:400])  # ends inside the SOP Instance UID
    cases = [
        (garbage, ds.SOPInstanceUID, "SOP Instance UID"),  # nothing parseable in it
        (truncated, ds.SOPInstanceUID, "SOP Instance UID"),
        (good, "1.2.3.4.5", "SOP Instance UID"),  # differs from the data set's
        (good, "1.2.abc", "Affected SOP Instance UID"),
    ]
    for path, uid, field in cases:
        with pytest.raises(ValidationError) as info:
            receiver.ingest(path, ds.SOPClassUID, uid, "1.2.840.10008.1.2.1", "MODALITY")
        assert info.value.field == field
    assert store.query("SELECT COUNT(*) AS n FROM forward_instances")[0]["n"] == 0
    store.close()


def test_health_is_degraded_while_the_disk_reserve_refuses_images(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    app = start_appliance(forward_config([NOWHERE], reserve_mb=1 << 40))
    report = app.health()
    assert report["status"] == "degraded"
    assert report["services"]["forward"]["state"].startswith("refusing images")
    ok = start_appliance(forward_config([NOWHERE]), data_dir=tmp_path / "other")
    assert ok.health()["services"]["forward"]["state"] == "running"
