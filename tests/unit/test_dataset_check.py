"""dataset_check: a peer's data set walked on its bytes, pure (no association)."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from appliance import dataset_check as dc
from tests.factories import make_mwl_query
from tests.raw_dimse import el, encode, item, nested, sq

QUERY = dc.Limits(query=True)
PN = 0x00100010


def read(data: bytes, implicit: bool = False, limits: dc.Limits = QUERY, **kw: object) -> Dataset:
    return dc.read(BytesIO(data), implicit, True, False, limits, **kw)  # type: ignore[arg-type]


def refusal(data: bytes, implicit: bool = False, limits: dc.Limits = QUERY) -> dc.Malformed:
    with pytest.raises(dc.Malformed) as info:
        read(data, implicit, limits)
    return info.value


@pytest.mark.parametrize("implicit", [False, True])
def test_a_valid_query_is_read_whole(implicit: bool) -> None:
    ds = read(encode(make_mwl_query(PatientName="Doe*", sps_Modality="CT"), implicit), implicit)
    assert ds.PatientName == "Doe*"
    assert ds.ScheduledProcedureStepSequence[0].Modality == "CT"


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        (["ISO 2022 IR 13", "ISO 2022 IR 87"], "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"),
        ("ISO 2022 IR 149", "Hong^Gildong=洪^吉洞=홍^길동"),
        ("ISO_IR 192", "Müller^Jürgen"),
        ("ISO_IR 100", "Müller^Jürgen"),
    ],
)
def test_names_in_their_character_sets_are_read(charset: object, name: str) -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.PatientName = name
    assert str(read(encode(ds)).PatientName) == name


def test_lengths_count_characters_not_bytes() -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "é" * 64  # 128 bytes in UTF-8
    assert read(encode(ds)).PatientName == "é" * 64
    ds.PatientName = "é" * 65
    assert refusal(encode(ds)).reason == "PatientName longer than 64 characters a group (PN)"


def test_ranges_are_longer_only_in_a_query() -> None:
    data = el(0x00400002, "DA", b"20261124-20261125 ")
    assert read(data).ScheduledProcedureStepStartDate == "20261124-20261125"
    wrong = refusal(data, limits=dc.Limits())
    assert (wrong.kind, wrong.reason) == (
        dc.VALUE,
        "ScheduledProcedureStepStartDate longer than 8 characters (DA)",
    )


def test_the_device_character_set_applies_when_the_query_declares_none() -> None:
    ds = read(el(PN, "PN", "Müller".encode("latin-1")), charset=["ISO_IR 100"])
    assert ds.PatientName == "Müller"
    with pytest.raises(dc.Malformed, match="not valid in its character set"):
        read(el(PN, "PN", "Müller".encode("latin-1")), charset=["ISO_IR 192"])


def test_depth_is_counted_in_sequences() -> None:
    assert read(nested(0x00400100, 8))
    deep = refusal(nested(0x00400100, 9))
    assert (deep.kind, deep.reason, deep.tag) == (
        dc.STRUCTURE,
        "sequences nested deeper than 8",
        0x00400100,
    )


def test_implicit_private_sequence_is_walked_like_a_sequence() -> None:
    inner = el(PN, "PN", b"A" * 66, implicit=True)
    data = el(0x00090010, "LO", b"ACME", implicit=True) + el(
        0x00091010, "UN", item(inner, undefined=False), implicit=True
    )
    assert (
        refusal(data, implicit=True).reason == "PatientName longer than 64 characters a group (PN)"
    )


def test_explicit_un_of_undefined_length_is_refused() -> None:
    data = sq(0x00091010, item(b""), undefined=True).replace(b"SQ", b"UN", 1)
    assert refusal(data).reason == "undefined length on UN element (0009,1010)"


def test_item_delimiter_outside_an_item_is_refused() -> None:
    assert refusal(bytes.fromhex("FEFF0DE000000000")).reason.startswith("unexpected ")


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), implicit=st.booleans())
def test_any_bytes_are_read_or_refused_with_malformed(data: bytes, implicit: bool) -> None:
    try:
        read(data, implicit)
    except dc.Malformed as exc:
        assert 0 < len(exc.reason) <= 64 and "\\" not in exc.reason


def test_contents_running_past_their_item_are_refused() -> None:
    inner = sq(0x00400100, item(el(0x00080060, "CS", b"CT")))  # undefined length
    body = struct.pack("<HHL", 0xFFFE, 0xE000, 12) + inner  # the item says 12 bytes
    reason = refusal(el(0x00400100, "SQ", body)).reason
    assert reason == "an item or a sequence is shorter than its contents"
