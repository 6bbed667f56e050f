"""HL7 mapping and character sets, pure: names, dates, MSH-18, ERR locations, ACK shape."""

from __future__ import annotations

from datetime import datetime

import hl7
import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.catalog import Procedure
from appliance.hl7 import ack, charsets, mapping
from appliance.hl7.mapping import Location, OrderError

JAHIS_PID = "PID|0001||JP0001^^^^PI||山田^太郎^^^^^L^I~ヤマダ^タロウ^^^^^L^P~YAMADA^TAROU^^^^^L^A"


def pid(text: str) -> hl7.Segment:
    return hl7.parse("MSH|^~\\&|RIS\r" + text + "\r").segment("PID")


def test_xpn_repetitions_by_representation_code_make_one_pn() -> None:
    assert mapping.person_name(pid(JAHIS_PID), 5) == "YAMADA^TAROU=山田^太郎=ヤマダ^タロウ"


def test_xpn_repetitions_without_code_are_alphabetic_ideographic_phonetic() -> None:
    seg = pid("PID|||1||Yamada^Tarou~山田^太郎~やまだ^たろう")
    assert mapping.person_name(seg, 5) == "Yamada^Tarou=山田^太郎=やまだ^たろう"


def test_xpn_suffix_and_prefix_swap_into_pn_order() -> None:
    # XPN: family^given^middle^suffix^prefix; PN: family^given^middle^prefix^suffix
    assert mapping.person_name(pid("PID|||1||Doe^John^Q^Jr^Dr"), 5) == "Doe^John^Q^Dr^Jr"


def test_ideographic_only_name_keeps_an_empty_alphabetic_group() -> None:
    assert mapping.person_name(pid("PID|||1||山田^太郎^^^^^L^I"), 5) == "=山田^太郎"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20261224", datetime(2026, 12, 24)),
        ("202612240930", datetime(2026, 12, 24, 9, 30)),
        ("20261224093015.25+0900", datetime(2026, 12, 24, 9, 30, 15)),
    ],
)
def test_dtm(text: str, expected: datetime) -> None:
    assert mapping.parse_dtm(text, Location("TQ1", 1, 7)) == expected


@pytest.mark.parametrize("text", ["2026-12-24", "20261301", "20260230", "2026122", "x"])
def test_bad_dtm_names_the_field(text: str) -> None:
    with pytest.raises(OrderError) as info:
        mapping.parse_dtm(text, Location("PID", 1, 7))
    assert (str(info.value.location), info.value.code) == ("PID^1^7", "102")


@given(st.text(max_size=30))
def test_dtm_either_parses_or_raises_order_error(text: str) -> None:
    try:
        mapping.parse_dtm(text, Location("TQ1", 1, 7))
    except OrderError:
        pass


def test_locations_in_erl_form() -> None:
    assert str(Location("PID", 1, 3)) == "PID^1^3"
    assert str(Location("MSH", 1, 9, 2)) == "MSH^1^9^1^2"
    assert str(Location("ORC")) == "ORC^1"


@pytest.mark.parametrize(
    ("msh18", "codec"),
    [
        ("", "ascii"),
        ("ASCII", "ascii"),
        ("8859/1", "latin-1"),
        ("UNICODE UTF-8", "utf-8"),
        ("~ISO IR87", "iso2022_jp"),
        ("ISO IR6~ISO IR87", "iso2022_jp"),
        ("ISO IR87~ISO IR159", "iso2022_jp_1"),
        ("SHIFT_JIS", "shift_jis"),
        ("SJIS", "shift_jis"),
    ],
)
def test_msh_18_chooses_the_codec(msh18: str, codec: str) -> None:
    header = charsets.header(f"MSH|^~\\&|RIS|||||||||||||||{msh18}\rPID|".encode())
    assert charsets.codec_for(charsets.declared(header), "ASCII") == codec


def test_unknown_msh_18_is_a_charset_error() -> None:
    with pytest.raises(charsets.CharsetError):
        charsets.codec_for(["EBCDIC"], "ASCII")


def test_decode_keeps_delimiter_bytes_inside_kanji() -> None:
    # In ISO-2022-JP "ヤマダ" carries a '^' byte and "タロウ" an '&'; in Shift_JIS "タロウ"
    # carries '^' and "竹内" a '|': split before decoding, these names would fall apart.
    text = "MSH|^~\\&|RIS|||||||||||||||~ISO IR87\rPID|||1||ヤマダ^タロウ\r"
    decoded = charsets.decode(text.encode("iso2022_jp"), "ASCII")
    assert hl7.parse(decoded).segment("PID").extract_field(1, 5, 1, 2) == "タロウ"
    text = "MSH|^~\\&|RIS|||||||||||||||SHIFT_JIS\rPID|||1||竹内^タロウ\r"
    decoded = charsets.decode(text.encode("shift_jis"), "ASCII")
    seg = hl7.parse(decoded).segment("PID")
    assert (seg.extract_field(1, 5, 1, 1), seg.extract_field(1, 5, 1, 2)) == ("竹内", "タロウ")


def test_line_feeds_between_segments_are_read_as_segment_ends() -> None:
    decoded = charsets.decode(b"MSH|^~\\&|RIS\r\nPID|||1\nPV1|1\r\n", "ASCII")
    assert [str(s[0][0]) for s in hl7.parse(decoded)] == ["MSH", "PID", "PV1"]


def test_ae_ack_repeats_msh_18_and_escapes_the_reason() -> None:
    received = hl7.parse("MSH|^~\\&|RIS|HOSP|APP|FAC|20261203||ORM^O01|C9|P|2.5.1||||||~ISO IR87\r")
    text = ack.build(received, "AE", [(Location("OBR", 1, 4), "103", "code 'A|B' unknown")])
    segments = [s.split("|") for s in text.split("\r") if s]
    assert segments[0][2:6] == ["APP", "FAC", "RIS", "HOSP"]
    assert segments[0][8] == "ACK^O01^ACK" and segments[0][17] == "~ISO IR87"
    assert segments[1][:3] == ["MSA", "AE", "C9"]
    assert segments[2][:5] == ["ERR", "", "OBR^1^4", "103^Table value not found^HL70357", "E"]
    assert segments[2][8] == "code 'A\\F\\B' unknown"


def test_orders_need_a_catalog_entry() -> None:
    message = hl7.parse(
        "MSH|^~\\&|RIS|HOSP|||||ORM^O01|C1|P|2.5.1\r"
        "PID|1||P1||Doe^John\rORC|NW|PL1\rTQ1|1||||||20261224\rOBR|1|PL1||CT1^CT^L\r"
    )
    known = Procedure("CT1", "L", "CT", "CT")
    ctx = mapping.Context(lambda c: known if c == "CT1" else None, lambda m: "CT1")
    [order] = mapping.orders(message, ctx)
    assert (order.control, order.placer, order.requests[0].station_ae) == ("NW", "PL1", "CT1")
    ctx = mapping.Context(lambda c: None, lambda m: "CT1")
    with pytest.raises(OrderError) as info:
        mapping.orders(message, ctx)
    assert str(info.value.location) == "OBR^1^4"
