"""store_wire's encoders and parsers against pynetdicom's, byte for byte (no sockets)."""

from __future__ import annotations

import struct
from io import BytesIO
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode, split_dataset
from pynetdicom.pdu import P_DATA_TF

from appliance.forward import store_wire
from appliance.forward.store_wire import WireError
from tests.forward_factories import make_ct

uids = st.from_regex(r"\A[1-9][0-9]{0,8}(\.(0|[1-9][0-9]{0,8})){1,7}\Z")


def _pynetdicom_request(
    sop_class: str, sop_instance: str, message_id: int, priority: int, data: bytes
) -> C_STORE_RQ:
    req = C_STORE()
    req.MessageID = message_id
    req.Priority = priority
    req.AffectedSOPClassUID = sop_class
    req.AffectedSOPInstanceUID = sop_instance
    req.DataSet = BytesIO(data)
    msg = C_STORE_RQ()
    msg.primitive_to_message(req)
    return msg


def _pdus(msg: C_STORE_RQ | C_STORE_RSP, context_id: int, max_pdu: int) -> bytes:
    """The message as pynetdicom puts it on the wire: P-DATA-TF PDUs, encoded."""
    out = []
    for primitive in msg.encode_msg(context_id, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        out.append(pdu.encode())
    return b"".join(out)


@settings(max_examples=200, deadline=None)
@given(
    sop_class=uids,
    sop_instance=uids,
    message_id=st.integers(1, 0xFFFF),
    priority=st.sampled_from([0, 1, 2]),
)
def test_command_set_is_byte_identical_to_pynetdicom(
    sop_class: str, sop_instance: str, message_id: int, priority: int
) -> None:
    msg = _pynetdicom_request(sop_class, sop_instance, message_id, priority, b"\0\0")
    expected = encode(msg.command_set, True, True)
    assert store_wire.command_set(sop_class, sop_instance, message_id, priority) == expected


def test_default_priority_is_pynetdicoms() -> None:
    msg = _pynetdicom_request(CTImageStorage, "1.2.3.4", 7, 2, b"\0\0")
    assert store_wire.command_set(CTImageStorage, "1.2.3.4", 7) == encode(
        msg.command_set, True, True
    )


@pytest.mark.parametrize(
    ("max_pdu", "length", "per_batch"),
    [
        (4096, 1, 1),
        (4096, 4090, 1),  # exactly one full PDV
        (4096, 4091, 2),
        (4096, 3 * 4090 * 5 + 17, 3),  # several batches, a short last PDV
        (16384, 525_000, 64),
        (128, 1000, 2),  # the command set itself in several PDUs
        (0, 300_000, 1),  # no maximum: one PDV for the data set
    ],
)
def test_request_pdus_are_byte_identical_to_pynetdicom(
    max_pdu: int, length: int, per_batch: int
) -> None:
    data = bytes(range(256)) * (length // 256) + bytes(length % 256)
    msg = _pynetdicom_request(CTImageStorage, "1.2.826.0.1.3680043.2.1125.1", 3, 2, data)
    expected = _pdus(msg, 11, max_pdu)
    max_data = max_pdu - 6 if max_pdu else store_wire.UNLIMITED_PDV
    command = store_wire.command_set(CTImageStorage, "1.2.826.0.1.3680043.2.1125.1", 3)
    chunk = bytearray(per_batch * max_data)
    batches = list(store_wire.request_pdus(command, BytesIO(data), length, 11, max_data, chunk))
    assert b"".join(batches) == expected
    assert len(batches) == -(-length // len(chunk))  # ceil: one write a chunk read


def test_a_file_shorter_than_announced_is_a_broken_exchange() -> None:
    chunk = bytearray(100)
    with pytest.raises(WireError) as err:
        list(store_wire.request_pdus(b"", BytesIO(b"x" * 150), 200, 1, 100, chunk))
    assert err.value.broken


def _response(status: int, comment: str | None, message_id: int = 5, max_pdu: int = 16384) -> bytes:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = CTImageStorage
    rsp.AffectedSOPInstanceUID = "1.2.3.4.5.6"
    rsp.Status = status
    if comment is not None:
        rsp.ErrorComment = comment
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    return _pdus(msg, 9, max_pdu)


def _command_of(pdus: bytes, context_id: int = 9) -> bytes:
    """The command set carried by P-DATA-TF PDUs, through store_wire's PDV parser."""
    out = bytearray()
    pos = 0
    while pos < len(pdus):
        pdu_type, _, length = struct.unpack_from(">BBI", pdus, pos)
        assert pdu_type == store_wire.P_DATA_TF
        for cx, header, fragment in store_wire.pdv_items(pdus[pos + 6 : pos + 6 + length]):
            assert cx == context_id and header & store_wire.COMMAND
            out += fragment
        pos += 6 + length
    return bytes(out)


@pytest.mark.parametrize(
    ("status", "comment"),
    [(0x0000, None), (0xB000, None), (0xA700, "disk full"), (0xC000, "odd"), (0x0122, "")],
)
@pytest.mark.parametrize("max_pdu", [16384, 32])  # 32: the command set over several PDUs
def test_c_store_response_from_pynetdicom(status: int, comment: str | None, max_pdu: int) -> None:
    fields = store_wire.parse_command(_command_of(_response(status, comment, max_pdu=max_pdu)))
    assert store_wire.c_store_response(fields, 5) == (status, comment or "")


def test_a_response_to_another_message_is_refused() -> None:
    fields = store_wire.parse_command(_command_of(_response(0, None, message_id=4)))
    with pytest.raises(WireError, match="message 4 while 5 waited"):
        store_wire.c_store_response(fields, 5)


def test_a_request_is_not_a_response() -> None:
    command = store_wire.command_set(CTImageStorage, "1.2.3", 5)
    with pytest.raises(WireError, match="where a C-STORE-RSP was due"):
        store_wire.c_store_response(store_wire.parse_command(command), 5)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_parsers_refuse_garbage_with_wire_errors_only(data: bytes) -> None:
    for parse in (
        lambda: store_wire.c_store_response(store_wire.parse_command(data), 1),
        lambda: list(store_wire.pdv_items(data)),
    ):
        try:
            parse()
        except WireError:
            pass


@pytest.mark.parametrize(
    "syntax",
    [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, DeflatedExplicitVRLittleEndian],
)
def test_dataset_offset_agrees_with_pynetdicom(tmp_path: Path, syntax: str) -> None:
    ds = make_ct(rows=16, columns=16)
    if syntax == RLELossless:
        ds.compress(RLELossless)
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    path = tmp_path / "x.dcm"
    ds.save_as(path, enforce_file_format=True)
    with open(path, "rb") as f:
        assert store_wire.dataset_offset(f, path) == split_dataset(path)[1]


def test_dataset_offset_without_group_length_asks_pydicom(tmp_path: Path) -> None:
    """A File Meta group without (0002,0000) (required, yet seen) is parsed element by element."""
    ds = make_ct(rows=4, columns=4)
    path = tmp_path / "x.dcm"
    ds.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    offset = split_dataset(path)[1]
    assert raw[132:140] == b"\x02\x00\x00\x00UL\x04\x00"
    stripped = raw[:132] + raw[144:]  # the group length element removed
    path.write_bytes(stripped)
    with open(path, "rb") as f:
        assert store_wire.dataset_offset(f, path) == offset - 12
    assert stripped[offset - 12 :] == raw[offset:]
