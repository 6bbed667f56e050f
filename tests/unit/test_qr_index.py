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
