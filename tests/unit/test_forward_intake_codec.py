"""The intake's encoders and decoders against pydicom's and pynetdicom's own."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE

from appliance.forward import intake
from appliance.forward.wire import dataset_offset

CT = "1.2.840.10008.5.1.4.1.1.2"
UID = "1.2.826.0.1.3680043.8.498.1234567890123"


def _command_bytes(msg: object) -> bytes:
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, True
    write_dataset(buf, msg.command_set)  # type: ignore[attr-defined]
    return buf.getvalue()


@pytest.mark.parametrize("comment", ["", "out of resources: spool disk reserve reached", "odd"])
@pytest.mark.parametrize("code", [0x0000, 0xA700, 0xC000, 0x0124])
def test_store_response_is_byte_for_byte_pynetdicoms(code: int, comment: str) -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = CT
    rsp.AffectedSOPInstanceUID = UID
    rsp.Status = code
    if comment:
        rsp.ErrorComment = comment
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    assert intake.store_response(7, CT, UID, code, comment) == _command_bytes(msg)


def test_parse_command_reads_what_pynetdicom_sends() -> None:
    req = C_STORE()
    req.MessageID = 513
    req.AffectedSOPClassUID = CT
    req.AffectedSOPInstanceUID = UID
    req.Priority = 2
    req.MoveOriginatorApplicationEntityTitle = "MOVER"
    req.MoveOriginatorMessageID = 3
    req.DataSet = BytesIO(b"\x08\x00\x18\x00")
    msg = C_STORE_RQ()
    msg.primitive_to_message(req)
    cmd = intake.parse_command(_command_bytes(msg))
    assert cmd == intake.Command(0x0001, 513, CT, UID, True)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\x00\x00\x00\x04\x00\x00\x00",  # group length with its value missing
        struct.pack("<HHI", 0x0008, 0x0018, 2) + b"1\0",  # not a command group
        struct.pack("<HHI", 0x0000, 0x0110, 2) + b"\x01\x00",  # no Command Field
    ],
)
def test_parse_command_refuses_what_is_not_a_command_set(raw: bytes) -> None:
    assert intake.parse_command(raw) is None


def test_file_meta_is_what_pydicom_writes() -> None:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = CT
    meta.MediaStorageSOPInstanceUID = UID
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
    meta.ImplementationClassUID = intake.IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = intake.IMPLEMENTATION_VERSION
    meta.SourceApplicationEntityTitle = "CT1"
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_file_meta_info(buf, meta, enforce_standard=True)
    ours = intake.file_meta(CT, UID, "1.2.840.10008.1.2.4.90", "CT1")
    assert ours == b"\0" * 128 + b"DICM" + buf.getvalue()
    assert dataset_offset(BytesIO(ours + b"rest")) == len(ours)


def _dataset(implicit: bool, **elements: str) -> bytes:
    ds = Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, implicit
    write_dataset(buf, ds)
    return buf.getvalue()


@pytest.mark.parametrize("ts", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5"])
def test_header_values_from_the_start_of_a_data_set(ts: str) -> None:
    raw = _dataset(
        ts == "1.2.840.10008.1.2",
        SpecificCharacterSet="ISO_IR 192",
        ImageType="ORIGINAL\\PRIMARY",
        SOPClassUID=CT,
        SOPInstanceUID=UID,
        StudyDate="20261127",
        Modality="CT",
        PatientName="Doe^John",
    )
    assert intake.header_values(raw, ts) == {0x00080018: UID, 0x00080060: "CT"}
    # Cut before Modality: not enough to decide; the caller reads the whole file.
    assert intake.header_values(raw[: raw.index(b"\x08\x00\x60\x00")], ts) is None


def test_header_values_of_a_data_set_without_them() -> None:
    raw = _dataset(False, SOPClassUID=CT, PatientName="Doe^John")
    assert intake.header_values(raw, "1.2.840.10008.1.2.1") == {0x00080018: "", 0x00080060: ""}


@pytest.mark.parametrize("ts", ["1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"])
def test_header_values_leaves_big_endian_and_deflate_to_pydicom(ts: str) -> None:
    assert intake.header_values(_dataset(False, Modality="CT"), ts) is None


def test_header_values_stops_at_an_undefined_length() -> None:
    seq = struct.pack("<HH", 0x0008, 0x0006) + b"SQ\0\0" + b"\xff\xff\xff\xff"
    raw = seq + _dataset(False, SOPInstanceUID=UID, Modality="CT")
    assert intake.header_values(raw, "1.2.840.10008.1.2.1") is None
