"""The direct C-FIND response encoder gives the same bytes as pydicom (PS3.5 7.1)."""

from __future__ import annotations

import struct

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from appliance.dicom import find_wire as wire
from appliance.worklist import matching
from appliance.worklist.scp import CHARSET_VALUES
from tests.factories import make_mwl_query

JP = "Yamada^Tarou=山田^太郎=やまだ^たろう"


def item(name: str) -> dict:
    return {
        "PatientName": name,
        "PatientID": "P1",
        "PatientBirthDate": "19700101",
        "PatientSex": "",
        "AccessionNumber": "ACC1",
        "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1",
        "RequestedProcedureID": "RP1",
        "RequestedProcedureDescription": "CT Thorax ä",
        "PregnancyStatus": 4,
        "RequestedProcedureCodeSequence": [
            {"CodeValue": "C1", "CodingSchemeDesignator": "L", "CodeMeaning": "x"}
        ],
        "ScheduledProcedureStepSequence": [
            {
                "ScheduledStationAETitle": "CT1",
                "ScheduledProcedureStepStartDate": "20261124",
                "ScheduledProcedureStepStartTime": "0930",
                "Modality": "CT",
                "ScheduledProcedureStepID": "S1",
                "ScheduledProcedureStepDescription": "",
                "ScheduledProtocolCodeSequence": [],
            }
        ],
    }


def pydicom_bytes(ds: Dataset, implicit: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit
    fp.is_little_endian = True
    write_dataset(fp, ds)
    return fp.getvalue()


@pytest.mark.parametrize("implicit", [True, False])
@pytest.mark.parametrize(
    ("charset", "name"),
    [
        ("ISO_IR 192", JP),
        ("ISO_IR 100", "Müller^Jürgen"),
        ("ISO_IR 6", "Doe^John"),
        ("ISO 2022 IR 87", JP),
        ("ISO 2022 IR 13\\ISO 2022 IR 87", "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"),
    ],
)
def test_same_bytes_as_pydicom(implicit: bool, charset: str, name: str) -> None:
    query = make_mwl_query(PregnancyStatus=None)
    query.RequestedProcedureCodeSequence = []
    sps = query.ScheduledProcedureStepSequence[0]
    sps.ScheduledProtocolCodeSequence = [Dataset()]
    keys = matching.parse(query).keys
    values = CHARSET_VALUES[charset][0]
    stored = item(name)
    if charset in ("ISO_IR 6",) or "2022" in charset:
        stored["RequestedProcedureDescription"] = "CT Thorax"
    expected = matching.project(keys, stored)
    expected.SpecificCharacterSet = values
    ours = wire.IdentifierEncoder(keys, values, implicit, matching.keys_for_item).encode(stored)
    assert ours == pydicom_bytes(expected, implicit)


def test_command_set_and_pdus() -> None:
    cmd = wire.command_set("1.2.840.10008.5.1.4.31", 7, 0xFF00)
    group_len = struct.unpack("<I", cmd[8:12])[0]
    assert group_len == len(cmd) - 12
    assert struct.pack("<HHIH", 0x0000, 0x0120, 2, 7) in cmd  # Message ID Being Responded To

    class Sock:
        def __init__(self) -> None:
            self.sent = b""

        def send(self, data: bytes) -> None:
            self.sent += data

    class Peer:
        maximum_length = 16

    class Dul:
        socket = Sock()

    class Assoc:
        dul = Dul()
        requestor = Peer()

    writer = wire.ResponseWriter(Assoc(), 1, 7, "1.2.840.10008.5.1.4.31", 0xFF00)
    writer.send(b"0123456789ABCDEFGHIJ")  # 20 bytes: two PDUs of at most 10 data bytes
    writer.flush()
    sent = Assoc.dul.socket.sent
    pdus = []
    while sent:
        length = struct.unpack(">I", sent[2:6])[0]
        pdus.append(sent[6 : 6 + length])
        sent = sent[6 + length :]
    assert all(len(p) <= 16 for p in pdus)
    data = [p for p in pdus if p[5] & 0x01 == 0]
    assert b"".join(p[6:] for p in data) == b"0123456789ABCDEFGHIJ"
    assert [p[5] for p in data] == [0x00, 0x02]  # 10 data bytes a PDU; the last fragment is flagged


@pytest.mark.parametrize("counts", [(3, 2, 1, 0), (65534, 0, 0, 1)])
def test_pending_move_command_is_pynetdicoms(counts: tuple[int, int, int, int]) -> None:
    """The pending C-MOVE-RSP written directly has the command set pynetdicom encodes
    from the same primitive (PS3.7 9.3.4.2, E.1)."""
    from pynetdicom.dimse_messages import C_MOVE_RSP
    from pynetdicom.dimse_primitives import C_MOVE
    from pynetdicom.dsutils import encode

    uid = "1.2.840.10008.5.1.4.1.2.2.2"
    primitive = C_MOVE()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = uid
    primitive.Status = 0xFF00
    (
        primitive.NumberOfRemainingSuboperations,
        primitive.NumberOfCompletedSuboperations,
        primitive.NumberOfFailedSuboperations,
        primitive.NumberOfWarningSuboperations,
    ) = counts
    message = C_MOVE_RSP()
    message.primitive_to_message(primitive)
    assert wire.move_pending_command(uid, 7, *counts) == encode(message.command_set, True, True)
