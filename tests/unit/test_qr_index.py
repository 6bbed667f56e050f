"""The index columns of a data set: read from the start kept by the intake or from the
spooled file, the same values; names decoded with the data set's character set."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from appliance.qr import index
from tests.forward_factories import encoded, make_ct

JAPANESE = "Yamada^Tarou=山田^太郎=やまだ^たろう"


def _ct() -> object:
    ds = make_ct(StudyDate="20261201", AccessionNumber="ACC1", SeriesNumber=3)
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.PatientName = JAPANESE
    ds.StudyDescription = "胸部"
    return ds


@pytest.mark.parametrize("implicit", [False, True])
def test_head_and_file_give_the_same_columns(tmp_path: Path, implicit: bool) -> None:
    ds = _ct()
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)  # type: ignore[attr-defined]
    ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    from_head = index.head_attributes(encoded(ds, implicit=implicit), ts)  # type: ignore[arg-type]
    assert from_head == index.read_attributes(path)
    assert from_head is not None
    assert from_head["patient_name"] == JAPANESE  # all three component groups, decoded
    assert from_head["study_description"] == "胸部"
    assert (from_head["study_date"], from_head["series_number"]) == ("20261201", "3")


def test_a_start_that_ends_before_the_last_indexed_tag_is_not_enough() -> None:
    raw = encoded(_ct())  # type: ignore[arg-type]
    cut = raw.index(b"\x20\x00\x0d\x00")  # before StudyInstanceUID
    assert index.head_attributes(raw[:cut], ExplicitVRLittleEndian) is None
    assert index.head_attributes(raw[: cut + 20], ExplicitVRLittleEndian) is None


def test_big_endian_is_read_from_the_file() -> None:
    assert index.head_attributes(b"\x00" * 64, ExplicitVRBigEndian) is None


def test_an_unreadable_file_gives_none(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not dicom")
    assert index.read_attributes(bad) is None


def test_retention_takes_the_index_row_and_a_new_copy_brings_it_back(tmp_path: Path) -> None:
    from appliance.app import open_store
    from appliance.forward import queue
    from appliance.forward.retention import sweep
    from appliance.forward.spool import Spool

    store = open_store(tmp_path / "db")
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    ds = _ct()
    src = spool.tmp / "rx.dcm"
    ds.save_as(src, enforce_file_format=True)  # type: ignore[attr-defined]
    sf = spool.place(src)
    attrs = index.read_attributes(spool.path(sf.rel))
    info = queue.InstanceInfo(ds.SOPInstanceUID, ds.SOPClassUID, ExplicitVRLittleEndian, "CT", "M")  # type: ignore[attr-defined]
    queue.record_instance(store, info, sf.rel, sf.token, sf.size, ["pacs"], now=0, indexed=attrs)

    def rows() -> list[dict[str, object]]:
        return store.query("SELECT patient_name, accession_number FROM qr_instances")

    assert rows() == [{"patient_name": JAPANESE, "accession_number": "ACC1"}]
    items = queue.claim(store, "pacs", 10, now=1)
    queue.mark_delivered(store, [(i, 0) for i in items], now=1)
    assert sweep(store, spool, retention_s=10, now=100)[0] == 1
    assert rows() == []
    queue.record_instance(store, info, "f2", "d2", 1, ["pacs"], now=200, indexed=attrs)
    assert len(rows()) == 1
    store.close()


def test_backfill_indexes_instances_held_before_the_index(tmp_path: Path) -> None:
    from appliance.app import open_store
    from appliance.forward import queue
    from appliance.forward.spool import Spool

    store = open_store(tmp_path / "db")
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    uids = []
    for n in range(3):
        ds = make_ct(seed=n, AccessionNumber=f"A{n}")
        src = spool.tmp / "rx.dcm"
        ds.save_as(src, enforce_file_format=True)
        sf = spool.place(src)
        info = queue.InstanceInfo(
            ds.SOPInstanceUID, ds.SOPClassUID, ExplicitVRLittleEndian, "CT", "M"
        )
        queue.record_instance(store, info, sf.rel, sf.token, sf.size, [], now=n)
        uids.append(ds.SOPInstanceUID)
    spool.path(
        store.query("SELECT file FROM forward_instances WHERE id = 3")[0]["file"]
    ).write_bytes(b"x")
    assert index.backfill(store, spool.open, batch=2) == 2
    got = store.query("SELECT sop_instance_uid, accession_number FROM qr_instances ORDER BY 2")
    assert got == [{"sop_instance_uid": uids[0], "accession_number": "A0"},
                   {"sop_instance_uid": uids[1], "accession_number": "A1"}]  # fmt: skip
    assert index.backfill(store, spool.open) == 0  # the unreadable one is not retried forever
    store.close()


@pytest.mark.parametrize("implicit", [False, True])
def test_plain_ascii_and_a_sequence_on_the_way_give_the_file_values(
    tmp_path: Path, implicit: bool
) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = make_ct(StudyDate="20261201", AccessionNumber="ACC9", SeriesNumber=12,
                 ReferringPhysicianName="Who^Doctor", StudyTime="083000.5")  # fmt: skip
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    plain = index.head_attributes(encoded(ds, implicit=implicit), ts)
    assert plain == index.read_attributes(path)
    assert plain is not None and plain["study_time"] == "083000.5"
    code = Dataset()
    code.CodeValue = "X"
    ds.ProcedureCodeSequence = Sequence([code])  # (0008,1032), before the series keys
    raw = encoded(ds, implicit=implicit)
    assert index._walk(raw, implicit) is not None  # a defined length is skipped over
    ds["ProcedureCodeSequence"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)
    raw = encoded(ds, implicit=implicit)
    assert index._walk(raw, implicit) is None  # pydicom's reader walks into it instead
    assert index.head_attributes(raw, ts) == index.read_attributes(path) == plain
