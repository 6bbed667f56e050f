"""The pure parts of DICOMweb: QIDO-RS query parsing (qr.qido), multipart/related
bodies (web.dicomweb.multipart) and display rendering (image.display)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from appliance.qr import qido
from image import display
from web.dicomweb import multipart


def test_keys_by_keyword_and_tag_with_the_defaults_of_the_level() -> None:
    s = qido.parse([("PatientID", "P1"), ("00080020", "20260101-")], "STUDY", {}, 100)
    assert [(k.keyword, k.vr, k.value) for k in s.keys] == [
        ("PatientID", "LO", "P1"),
        ("StudyDate", "DA", "20260101-"),
    ]
    assert s.returned[:3] == ["StudyDate", "StudyTime", "AccessionNumber"]
    assert "SeriesInstanceUID" not in s.returned


def test_uid_lists_are_comma_separated() -> None:
    s = qido.parse([("StudyInstanceUID", "1.2,1.3")], "STUDY", {}, 100)
    assert s.keys[0].value == "1.2\\1.3"


def test_includefield_all_and_named() -> None:
    every = qido.parse([("includefield", "all")], "SERIES", {}, 100)
    assert "NumberOfStudyRelatedInstances" in every.returned and "PatientName" in every.returned
    named = qido.parse([("includefield", "PatientName,00100030")], "SERIES", {"StudyInstanceUID": "1.2"}, 100)  # fmt: skip
    assert named.returned[-2:] == ["PatientName", "PatientBirthDate"]


def test_limit_is_capped_by_the_service_and_says_so() -> None:
    assert (qido.parse([("limit", "5")], "STUDY", {}, 10).limit, qido.parse([("limit", "5")], "STUDY", {}, 10).capped) == (5, False)  # fmt: skip
    capped = qido.parse([("limit", "50")], "STUDY", {}, 10)
    assert (capped.limit, capped.capped) == (10, True)


def test_keys_of_other_levels_are_ignored_with_a_warning() -> None:
    s = qido.parse([("SOPInstanceUID", "1.2"), ("fuzzymatching", "true")], "STUDY", {}, 10)
    assert s.ignored == ["SOPInstanceUID"] and s.keys == []
    assert len(s.warnings()) == 2 and "fuzzymatching" in s.warnings()[0]


@pytest.mark.parametrize(
    ("args", "key"),
    [
        ([("Bogus", "1")], "Bogus"),
        ([("FFFFFFFF", "1")], "FFFFFFFF"),
        ([("PatientName.X", "1")], "PatientName.X"),
        ([("StudyDate", "yesterday")], "StudyDate"),
        ([("PatientID", "a"), ("PatientID", "b")], "PatientID"),
        ([("offset", "9999999999")], "offset"),
    ],
)
def test_bad_parameters_name_the_key(args: list[tuple[str, str]], key: str) -> None:
    with pytest.raises(qido.QidoError) as err:
        qido.parse(args, "STUDY", {}, 10)
    assert err.value.key == key


@pytest.mark.parametrize("uid", ["..", "1.2.", "1..2", "a.b", "1/2", "1" * 65, ""])
def test_path_uids_are_checked(uid: str) -> None:
    with pytest.raises(qido.QidoError):
        qido.check_uid(uid, "StudyInstanceUID")


content = st.binary(max_size=300).filter(lambda b: b"--b0und" not in b)


@settings(max_examples=200, deadline=None)
@given(st.lists(content, min_size=1, max_size=5))
def test_multipart_written_is_read_back(bodies: list[bytes]) -> None:
    raw = b"".join(multipart.write("b0und", (("application/dicom", [b]) for b in bodies)))
    parts = multipart.parse(raw, "b0und")
    assert [raw[p.start : p.end] for p in parts] == bodies
    assert all(p.content_type == "application/dicom" for p in parts)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_multipart_parser_never_fails_otherwise(data: bytes) -> None:
    try:
        parts = multipart.parse(b"--b\r\n" + data, "b")
    except multipart.MultipartError:
        return
    for p in parts:
        assert 0 <= p.start <= p.end <= len(data) + 5


def test_display_windows_inverts_fits_and_encodes() -> None:
    ramp = np.arange(256, dtype=np.uint16).reshape(16, 16) * 16
    im = display.window(ramp, "MONOCHROME2", center=2048, width=4096)
    assert im.mode == "L" and im.getpixel((0, 0)) == 0 and im.getpixel((15, 15)) >= 250
    inverted = display.window(ramp, "MONOCHROME1")
    assert inverted.getpixel((0, 0)) == 255
    small = display.fit(im, 8, 4)
    assert small.size == (4, 4)
    png = Image.open(io.BytesIO(display.encode(small, "image/png")))
    assert png.format == "PNG" and png.size == (4, 4)
    with pytest.raises(display.RenderError):
        display.encode(small, "image/gif")


def test_entity_json_is_what_pydicom_writes() -> None:
    """The direct JSON writer of QIDO results against pydicom's to_json_dict (F.2)."""
    entity = {
        "PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう",
        "PatientID": "P3",
        "ModalitiesInStudy": "CT\\MR",
        "NumberOfStudyRelatedInstances": "5",
        "StudyDate": "20261203",
        "StudyInstanceUID": "1.2.3",
        "ReferringPhysicianName": "Who^Doctor",
        "StudyDescription": "",
    }
    returned = list(entity)
    ours = qido.entity_json(entity, returned)
    theirs = qido.entity_dataset(entity, returned).to_json_dict()
    assert ours == dict(sorted(theirs.items()))
