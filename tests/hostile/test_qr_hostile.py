"""Hostile peers of the Query/Retrieve SCP: malformed identifiers get a precise status with
an ErrorComment and one warning line naming the peer, and the association keeps working;
a C-MOVE destination that accepts and never answers ends within the dicom.* timeouts
while the listener keeps answering C-ECHO."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from appliance import status
from appliance.server import Appliance
from tests.forward_helpers import FakePacs
from tests.helpers import make_config
from tests.qr_helpers import (
    PATIENT_FIND,
    QR_SCU,
    STUDY_FIND,
    STUDY_GET,
    STUDY_MOVE,
    Held,
    identifier,
    move,
    qr_config,
    store_studies,
)
from tests.raw_dimse import LogTrap, el, encode, sending_raw, steady, trapped_log

LEVEL = 0x00080052
A900, C000 = status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, status.UNABLE_TO_PROCESS


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Appliance, Held]]:
    tmp = tmp_path_factory.mktemp("qr-hostile")
    app = Appliance(make_config(tmp / "data", qr_config())).start()
    yield app, store_studies(app.dicom_port, tmp / "images")
    app.stop()


@pytest.fixture
def trap() -> Iterator[LogTrap]:
    with trapped_log() as t:
        yield t


def _raw(level: bytes, *more: bytes) -> bytes:
    return el(LEVEL, "CS", level) + b"".join(more)


BAD_FINDS = [
    (encode(identifier("STUDY", PatientName="")).replace(b"STUDY ", b"study "), STUDY_FIND, A900,
     "QueryRetrieveLevel 'study' not STUDY/SERIES/IMAGE"),
    (_raw(b"", el(0x00100020, "LO", b"")), STUDY_FIND, A900, "Query/Retrieve Level is missing"),
    (encode(identifier("PATIENT", PatientID="")), STUDY_FIND, A900,
     "QueryRetrieveLevel 'PATIENT' not STUDY/SERIES/IMAGE"),
    (encode(identifier("HOSPITAL", PatientID="")), PATIENT_FIND, A900,
     "QueryRetrieveLevel 'HOSPITAL' not PATIENT/STUDY/SERIES/IMAGE"),
    (encode(identifier("STUDY", SOPInstanceUID="")), STUDY_FIND, A900,
     "SOPInstanceUID is a IMAGE key, below the STUDY level"),
    (encode(identifier("STUDY", StudyDate="2026-12")), STUDY_FIND, C000,
     "StudyDate: '2026-12' is not a date or date range"),
    (encode(identifier("STUDY", PatientName="A" * 65)), STUDY_FIND, C000,
     "PatientName longer than 64 characters a group (PN)"),
    (_raw(b"STUDY ", el(0x00100010, "PN", b"Doe^John")[:-3]), STUDY_FIND, C000,
     "truncated: PatientName runs past the end"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "model", "code", "comment"),
    BAD_FINDS,
    ids=["lowercase-level", "no-level", "patient-in-study-root", "unknown-level",
         "key-below-level", "bad-date", "long-name", "truncated"],
)  # fmt: skip
def test_malformed_query_gets_a_precise_status(
    held: Any, trap: LogTrap, data: bytes, model: str, code: int, comment: str
) -> None:
    app, _ = held
    ae = AE(ae_title=QR_SCU)
    ae.add_requested_context(model, [ExplicitVRLittleEndian])
    assoc = steady(ae.associate("127.0.0.1", app.dicom_port, ae_title="APPLIANCE"))
    assert assoc.is_established
    trap.clear()
    with sending_raw(data):
        rsp = list(assoc.send_c_find(Dataset(), model))
    assert len(rsp) == 1, [hex(int(st.Status)) for st, _ in rsp]
    final = rsp[0][0]
    assert (int(final.Status), str(final.ErrorComment)) == (code, comment)
    lines = trap.lines()
    assert len(lines) == 1 and f"{QR_SCU} at 127.0.0.1:" in lines[0], lines
    assert "Traceback" not in trap.text and "Doe" not in trap.text
    # The same association answers a good query.
    good = list(assoc.send_c_find(identifier("STUDY", StudyInstanceUID=""), model))
    assert int(good[-1][0].Status) == status.SUCCESS and len(good) == 5
    assoc.release()


def test_bad_uid_in_a_query_gets_c000(held: Any, trap: LogTrap) -> None:
    app, _ = held
    ae = AE(ae_title=QR_SCU)
    ae.add_requested_context(STUDY_FIND, [ExplicitVRLittleEndian])
    assoc = steady(ae.associate("127.0.0.1", app.dicom_port, ae_title="APPLIANCE"))
    trap.clear()
    rsp = list(assoc.send_c_find(identifier("STUDY", StudyInstanceUID="1.2.x"), STUDY_FIND))
    assoc.release()
    assert [(int(st.Status), str(st.ErrorComment)) for st, _ in rsp] == [
        (C000, "StudyInstanceUID: '1.2.x' is not a UID")
    ]
    # pydicom's own reader also warns of the value (as for the worklist); ours is one line.
    ours = [line for line in trap.lines() if "appliance.qr" in line]
    assert len(ours) == 1 and "refused: 0xC000 StudyInstanceUID" in ours[0], ours


@pytest.mark.parametrize("model", [STUDY_MOVE, STUDY_GET])
def test_malformed_retrieve_gets_a_precise_status(held: Any, model: str) -> None:
    app, _ = held
    ae = AE(ae_title=QR_SCU)
    ae.add_requested_context(model, [ExplicitVRLittleEndian])
    assoc = steady(ae.associate("127.0.0.1", app.dicom_port, ae_title="APPLIANCE"))
    cases = [
        (identifier("SERIES", StudyInstanceUID="1.2.3"), A900,
         "SeriesInstanceUID is required to retrieve at the SERIES level"),
        (identifier("STUDY", StudyInstanceUID="1.2.x"), C000,
         "StudyInstanceUID: '1.2.x' is not a UID"),
        (identifier("HOSPITAL", StudyInstanceUID="1.2.3"), A900,
         "QueryRetrieveLevel 'HOSPITAL' not STUDY/SERIES/IMAGE"),
    ]  # fmt: skip
    for query, code, comment in cases:
        if model == STUDY_MOVE:
            rsp = list(assoc.send_c_move(query, "DEST", model))
        else:
            rsp = list(assoc.send_c_get(query, model))
        assert [(int(st.Status), str(st.ErrorComment)) for st, _ in rsp] == [(code, comment)]
    assert assoc.is_established
    assoc.release()


def test_move_to_a_destination_that_never_answers_ends_within_the_timeouts(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    mute = fake_pacs(ae_title="DEST", hang_at=[0])
    app = start_appliance(qr_config(mute.port, dimse_timeout=1.5, acse_timeout=2))
    held = store_studies(app.dicom_port, tmp_path / "images")
    study = next(iter(held.studies))
    result: list[Any] = []
    started = time.monotonic()
    mover = threading.Thread(
        target=lambda: result.append(
            move(app.dicom_port, identifier("STUDY", StudyInstanceUID=study), "DEST")
        )
    )
    mover.start()
    # While the move waits on the mute destination, the listener answers C-ECHO.
    ae = AE(ae_title=QR_SCU)
    ae.add_requested_context(Verification)
    echo = steady(ae.associate("127.0.0.1", app.dicom_port, ae_title="APPLIANCE"))
    assert int(echo.send_c_echo().Status) == status.SUCCESS
    echo.release()
    mover.join(15)
    assert not mover.is_alive()
    elapsed = time.monotonic() - started
    assert elapsed < 1.5 + 4, elapsed
    (rsp,) = result
    final = rsp[-1][2]
    assert rsp[-1][0] == status.UNABLE_TO_PERFORM_SUBOPERATIONS
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0, 5)
    echo = steady(ae.associate("127.0.0.1", app.dicom_port, ae_title="APPLIANCE"))
    assert int(echo.send_c_echo().Status) == status.SUCCESS
    echo.release()
