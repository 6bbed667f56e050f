"""IPP encoding, media choice, PWG raster and printer-state mapping, without a printer."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from appliance.printing import ipp
from appliance.printing.output import IppOutput, choose_media, media_size_mm
from image import pwg


def test_request_encoding_follows_rfc_8010() -> None:
    req = ipp.encode_request(
        ipp.PRINT_JOB,
        "ipp://h/p",
        [(ipp.INTEGER, "copies", 2)],
        [(ipp.KEYWORD, "media", ["a", "b"])],
        7,
    )
    assert req[:8] == struct.pack(">BBHI", 2, 0, 0x0002, 7)
    assert req[8] == ipp.OPERATION_GROUP
    assert b"\x47\x00\x12attributes-charset\x00\x05utf-8" in req
    assert b"\x21\x00\x06copies\x00\x04\x00\x00\x00\x02" in req
    # The second value of a 1setOf has an empty name.
    assert b"\x44\x00\x05media\x00\x01a\x44\x00\x00\x00\x01b" in req
    assert req.endswith(b"\x03")


def _attr(tag: int, name: str, value: bytes) -> bytes:
    return (
        struct.pack(">BH", tag, len(name)) + name.encode() + struct.pack(">H", len(value)) + value
    )


def test_response_decoding_skips_collections() -> None:
    body = struct.pack(">BBHI", 2, 0, 0x0000, 9) + bytes([ipp.OPERATION_GROUP])
    body += _attr(ipp.CHARSET, "attributes-charset", b"utf-8")
    body += bytes([ipp.PRINTER_GROUP])
    body += _attr(ipp.ENUM, "printer-state", struct.pack(">i", 3))
    body += _attr(ipp.BEG_COLLECTION, "media-col-default", b"")
    body += _attr(ipp.MEMBER_NAME, "", b"media-size")
    body += _attr(ipp.BEG_COLLECTION, "", b"")
    body += _attr(ipp.MEMBER_NAME, "", b"x-dimension")
    body += _attr(ipp.INTEGER, "", struct.pack(">i", 21000))
    body += _attr(ipp.END_COLLECTION, "", b"")
    body += _attr(ipp.END_COLLECTION, "", b"")
    body += _attr(ipp.KEYWORD, "printer-state-reasons", b"media-empty-error")
    body += _attr(ipp.KEYWORD, "", b"door-open-report")
    body += b"\x03"
    resp = ipp.decode_response(body)
    assert resp.ok and resp.request_id == 9
    printer = resp.group(ipp.PRINTER_GROUP)
    assert printer["printer-state"] == [3]
    assert printer["media-col-default"] == [None]
    assert printer["printer-state-reasons"] == ["media-empty-error", "door-open-report"]


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("iso_a4_210x297mm", (210.0, 297.0)),
        ("na_letter_8.5x11in", (215.9, 279.4)),
        ("custom_min_3x5in", (76.2, 127.0)),
        ("oddball", None),
    ],
)
def test_media_sizes(name: str, size: tuple[float, float] | None) -> None:
    got = media_size_mm(name)
    assert got == size if size is None else got == pytest.approx(size)


def test_media_choice_prefers_the_smallest_that_holds_the_film() -> None:
    media = ["na_letter_8.5x11in", "iso_a4_210x297mm", "iso_a3_297x420mm", "na_ledger_11x17in"]
    assert choose_media((203.2, 254.0), media).media == "na_letter_8.5x11in"  # 8x10 in
    assert choose_media((254.0, 203.2), media).media == "na_letter_8.5x11in"  # landscape too
    assert choose_media((279.4, 355.6), media).media == "na_ledger_11x17in"  # 11x14 in
    assert choose_media((355.6, 431.8), media).media == "iso_a3_297x420mm"  # 14x17: the largest
    assert choose_media((200, 250), []).media == "iso_a4_210x297mm"


class _FakeIpp(IppOutput):
    def __init__(self, attrs: dict) -> None:
        super().__init__("p", "ipp://127.0.0.1:1/ipp/print")
        self._attrs = attrs

    def attributes(self) -> dict:
        return self._attrs


@pytest.mark.parametrize(
    ("state", "reasons", "expected"),
    [
        (3, ["none"], ("NORMAL", "NORMAL")),
        (3, ["media-low-report"], ("WARNING", "SUPPLY LOW")),
        (5, ["media-empty-error"], ("WARNING", "SUPPLY EMPTY")),
        (5, ["media-jam-error"], ("WARNING", "FILM JAM")),
        (4, ["door-open-error"], ("WARNING", "COVER OPEN")),
        (5, ["other-error"], ("WARNING", "PRINTER DOWN")),
    ],
)
def test_printer_state_reasons_become_printer_status_info(
    state: int, reasons: list[str], expected: tuple[str, str]
) -> None:
    got = _FakeIpp({"printer-state": [state], "printer-state-reasons": reasons}).state()
    assert (got.status, got.info) == expected


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 300),
    st.integers(1, 40),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_pwg_raster_round_trips(width: int, height: int, color: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (height, width, 3) if color else (height, width)
    arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
    arr[: height // 2] = arr[0]  # repeated rows and runs
    arr[:, : width // 3] = 255
    im = Image.fromarray(arr, "RGB" if color else "L")
    buf = io.BytesIO()
    assert pwg.write_pwg(buf, [(im, 300), (im, 300)], 2) == 2
    data = buf.getvalue()
    assert [p["bpp"] for p in pwg.read_pwg_headers(data)] == [24 if color else 8] * 2
    assert np.array_equal(np.asarray(pwg.decode_pwg_page(data, 1)), arr)
