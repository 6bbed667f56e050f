"""Hostile peers: malformed C-FIND identifiers and MPPS / print attribute lists get a precise
status with an ErrorComment, one warning line naming the peer, no traceback; the association
and the next one keep working. A C-FIND stops at dicom.query_time_limit with A700."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    Verification,
)

from appliance import status
from appliance.server import Appliance
from appliance.worklist.repo import WorklistRepo
from tests.factories import make_mwl_query, make_step_request
from tests.printscu import FILM_SESSION, GRAY_META
from tests.raw_dimse import (
    LogTrap,
    deflate,
    el,
    encode,
    item,
    nested,
    sending_raw,
    start_service_box,
    steady,
    trapped_log,
)

MWL = ModalityWorklistInformationFind
MPPS = ModalityPerformedProcedureStep
SPS = 0x00400100
PATIENT_NAME, PATIENT_ID = 0x00100010, 0x00100020
NAME = b"Doe^John"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    """One appliance for the module: CT1 may query, send MPPS and print; one step scheduled."""
    app = start_service_box(tmp_path_factory.mktemp("malformed"))
    yield app
    app.stop()


@pytest.fixture
def trap() -> Iterator[LogTrap]:
    with trapped_log() as t:
        yield t


@contextlib.contextmanager
def associate(app: Appliance, *contexts: tuple[str, str]) -> Iterator[Any]:
    """An association from CT1 with the given (abstract syntax, transfer syntax) contexts and
    Verification; released at the end (aborted if the test failed mid-way)."""
    ae = AE(ae_title="CT1")
    for uid, ts in contexts:
        ae.add_requested_context(uid, [ts])
    ae.add_requested_context(Verification)
    assoc = steady(ae.associate("127.0.0.1", app.dicom_port, ae_title="APPLIANCE"))
    assert assoc.is_established
    try:
        yield assoc
    except BaseException:
        assoc.abort()
        raise
    assoc.release()


def normal_query_works(assoc: Any) -> None:
    rsp = list(assoc.send_c_find(make_mwl_query(), MWL))
    assert [int(st.Status) for st, _ in rsp] == [status.PENDING, status.SUCCESS]
    assert rsp[0][1].PatientID == "PID001"


def assert_one_warning(trap: LogTrap, *words: str) -> None:
    """Exactly one line at WARNING or above, naming the peer and the reason; no traceback,
    no patient name anywhere in the log."""
    lines = trap.lines()
    assert len(lines) == 1, lines
    assert "CT1 at 127.0.0.1:" in lines[0]
    for word in words:
        assert word in lines[0]
    assert "Traceback" not in trap.text
    assert "Doe" not in trap.text and "John" not in trap.text


def find_raw(app: Appliance, trap: LogTrap, data: bytes, ts: str = ExplicitVRLittleEndian) -> Any:
    """Send ``data`` as the identifier of a C-FIND; returns the single final response after
    checking the log, a normal query on the same association and on a new one."""
    with associate(app, (MWL, ts)) as assoc:
        trap.clear()
        with sending_raw(data):
            rsp = list(assoc.send_c_find(Dataset(), MWL))
        assert len(rsp) == 1, [hex(int(st.Status)) for st, _ in rsp]
        final = rsp[0][0]
        assert_one_warning(trap, f"0x{int(final.Status):04X}", str(final.ErrorComment))
        assert assoc.is_established
        normal_query_works(assoc)
    with associate(app, (MWL, EXPLICIT)) as again:
        normal_query_works(again)
    return final


# -- C-FIND: the identifier cannot be decoded -> C000 ------------------------------------

TRUNCATED_SQ = el(SPS, "SQ", item(el(0x00080060, "CS", b"CT"), undefined=False), length=200)
OPEN_SQ = el(SPS, "SQ", b"", length=0xFFFFFFFF) + item(el(0x00080060, "CS", b"CT"))
ZZ = el(PATIENT_NAME, "ZZ", NAME)
SEQUENCE_END = bytes.fromhex("FEFFDDE000000000")
# Only the 4-byte-length VRs can say "undefined" in Explicit VR; in Implicit VR any element can.
UNDEFINED_UC = el(0x00080119, "UC", b"", length=0xFFFFFFFF) + b"CODE" + SEQUENCE_END
UNDEFINED_LO = el(PATIENT_ID, "LO", b"", length=0xFFFFFFFF, implicit=True) + NAME + SEQUENCE_END
EXPLICIT, IMPLICIT = ExplicitVRLittleEndian, ImplicitVRLittleEndian


@pytest.mark.parametrize(
    ("data", "ts", "comment"),
    [
        (TRUNCATED_SQ, EXPLICIT, "truncated: ScheduledProcedureStepSequence runs past the end"),
        (OPEN_SQ, EXPLICIT, "truncated: a sequence or an item has no end"),
        (el(PATIENT_NAME, "PN", NAME)[:-3], EXPLICIT, "truncated: PatientName runs past the end"),
        (NAME[:5], EXPLICIT, "truncated: the data ends inside an element header"),
        (ZZ, EXPLICIT, 'unknown VR "ZZ" in PatientName'),
        (UNDEFINED_UC, EXPLICIT, "undefined length on UC element LongCodeValue"),
        (UNDEFINED_LO, IMPLICIT, "undefined length on LO element PatientID"),
    ],
    ids=[
        "truncated-sequence", "unterminated-sequence", "truncated-value", "truncated-header",
        "vr-zz", "undefined-uc", "undefined-lo-implicit",
    ],
)  # fmt: skip
def test_undecodable_identifier_gets_c000(
    box: Appliance, trap: LogTrap, data: bytes, ts: str, comment: str
) -> None:
    final = find_raw(box, trap, data, ts)
    assert int(final.Status) == status.UNABLE_TO_PROCESS
    assert final.ErrorComment == comment


# -- C-FIND: nested deeper than any worklist identifier -> A900 --------------------------


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_sequence_nested_a_thousand_deep_gets_a900(box: Appliance, trap: LogTrap, ts: str) -> None:
    data = nested(SPS, 1000, el(0x00080060, "CS", b"CT"), implicit=ts == ImplicitVRLittleEndian)
    final = find_raw(box, trap, data, ts)
    assert int(final.Status) == status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert final.ErrorComment == "sequences nested deeper than 8"
    assert final.OffendingElement == SPS


def test_eight_levels_are_served_nine_are_not(box: Appliance, trap: LogTrap) -> None:
    with (
        associate(box, (MWL, EXPLICIT)) as assoc,
        sending_raw(el(PATIENT_NAME, "PN", b"") + nested(SPS, 8)),
    ):
        assert int(list(assoc.send_c_find(Dataset(), MWL))[-1][0].Status) == status.SUCCESS
    final = find_raw(box, trap, el(PATIENT_NAME, "PN", b"") + nested(SPS, 9))
    assert int(final.Status) == status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS


# -- C-FIND: values their VR does not allow -> C000 -------------------------------------


def _query(**over: Any) -> bytes:
    return encode(make_mwl_query(**over))


@pytest.mark.parametrize(
    ("data", "comment"),
    [
        (_query(PatientName="A" * 65), "PatientName longer than 64 characters a group (PN)"),
        (_query(PatientName="A^B=" + "C" * 65), "PatientName longer than 64 characters a group (PN)"),
        (_query(PatientID="1" * 65), "PatientID longer than 64 characters (LO)"),
        (_query(AccessionNumber="1" * 17), "AccessionNumber longer than 16 characters (SH)"),
        (_query(sps_Modality="C" * 17), "Modality longer than 16 characters (CS)"),
        (_query(sps_ScheduledStationAETitle="A" * 17), "ScheduledStationAETitle longer than 16 characters (AE)"),
        (_query(StudyInstanceUID="1." * 32 + "1"), "StudyInstanceUID longer than 64 characters (UI)"),
        (_query(sps_ScheduledProcedureStepStartDate="0" * 19), "ScheduledProcedureStepStartDate longer than 18 characters (DA)"),
        (_query(sps_ScheduledProcedureStepStartTime="0" * 29), "ScheduledProcedureStepStartTime longer than 28 characters (TM)"),
        (el(PATIENT_NAME, "PN", b"") + el(0x00101030, "DS", b"heavy "), "PatientWeight is not a valid DS value"),
    ],
    ids=["pn", "pn-ideographic", "lo", "sh", "cs", "ae", "ui", "da-range", "tm-range", "ds"],
)  # fmt: skip
def test_value_its_vr_does_not_allow_gets_c000(
    box: Appliance, trap: LogTrap, data: bytes, comment: str
) -> None:
    final = find_raw(box, trap, data)
    assert int(final.Status) == status.UNABLE_TO_PROCESS
    assert final.ErrorComment == comment[:64]
    assert final.OffendingElement is not None


def test_values_at_their_vr_maximum_are_served(box: Appliance) -> None:
    q = make_mwl_query(
        PatientName="*" * 64 + "=" + "*" * 64,
        sps_ScheduledProcedureStepStartDate="20261124-20261124",
        sps_ScheduledStationAETitle="CT1",
    )
    with associate(box, (MWL, EXPLICIT)) as assoc:
        rsp = list(assoc.send_c_find(q, MWL))
    assert [int(st.Status) for st, _ in rsp] == [status.PENDING, status.SUCCESS]


# -- C-FIND: character sets -> C000 naming the set --------------------------------------


def test_unknown_specific_character_set_gets_c000(box: Appliance, trap: LogTrap) -> None:
    data = el(0x00080005, "CS", b"ISO_IR 999") + el(PATIENT_NAME, "PN", NAME)
    final = find_raw(box, trap, data)
    assert int(final.Status) == status.UNABLE_TO_PROCESS
    assert final.ErrorComment == "Specific Character Set ISO_IR 999 is not supported"


def test_text_not_in_its_declared_character_set_gets_c000(box: Appliance, trap: LogTrap) -> None:
    data = el(0x00080005, "CS", b"ISO_IR 192") + el(PATIENT_NAME, "PN", b"Doe^J\xc3\x28")
    final = find_raw(box, trap, data)
    assert int(final.Status) == status.UNABLE_TO_PROCESS
    assert final.ErrorComment == "PatientName is not valid in its character set"


# -- C-FIND: a deflated identifier that inflates beyond 1 MiB -> C000 -----------------


def test_deflate_bomb_gets_c000(box: Appliance, trap: LogTrap) -> None:
    bomb = el(PATIENT_NAME, "PN", b"") + el(0x00091010, "UN", bytes(2 << 20))
    data = deflate(bomb)
    assert len(data) < 4096
    final = find_raw(box, trap, data, DeflatedExplicitVRLittleEndian)
    assert int(final.Status) == status.UNABLE_TO_PROCESS
    assert final.ErrorComment == "deflated data set inflates beyond 1048576 bytes"


# -- C-FIND: the per-query time limit -> A700 -----------------------------------------


def test_query_over_its_time_limit_ends_with_a700(
    start_appliance: Callable[..., Appliance],
) -> None:
    """A legal query whose wildcards cost ~0.3 ms a name, over 600 names: about 0.17 s of
    matching, cut at 0.03 s; the same query with the default limit runs to the end."""
    raw = {"devices": [{"ae_title": "CT1"}]}
    limited = start_appliance({**raw, "dicom": {"query_time_limit": 0.03}})
    unlimited = start_appliance(raw, data_dir=limited.config.data_dir.parent / "other")
    for app in (limited, unlimited):
        repo = WorklistRepo(app.runtime.store)
        for i in range(600):
            repo.schedule(make_step_request(patient_id=f"P{i}", patient_name="A" * 60 + f"^{i}"))
    query = make_mwl_query(PatientName="*" + "A?" * 20 + "B")
    with trapped_log() as trap, associate(limited, (MWL, EXPLICIT)) as assoc:
        rsp = list(assoc.send_c_find(query, MWL))
        assert len(rsp) == 1
        assert int(rsp[0][0].Status) == status.OUT_OF_RESOURCES
        assert rsp[0][0].ErrorComment == "Query exceeded 0.03 s; narrow the query"
        assert_one_warning(trap, "0xA700")
        assert assoc.send_c_echo().Status == status.SUCCESS
    with associate(unlimited, (MWL, EXPLICIT)) as assoc:
        assert [int(st.Status) for st, _ in assoc.send_c_find(query, MWL)] == [status.SUCCESS]


# -- MPPS N-CREATE / N-SET: 0110 undecodable, 0106 invalid value ------------------------


def _mpps_create(**over: Any) -> Dataset:
    ds = Dataset()
    ref = Dataset()
    ref.StudyInstanceUID = generate_uid()
    ds.ScheduledStepAttributesSequence = [ref]
    ds.PatientName = "Doe^John"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT1"
    ds.PerformedProcedureStepStartDate = "20261124"
    ds.PerformedProcedureStepStartTime = "093100"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "CT"
    for key, value in over.items():
        setattr(ds, key, value)
    return ds


MPPS_CASES = [
    (encode(_mpps_create())[:-5], status.PROCESSING_FAILURE, "truncated: ScheduledStepAttributesSequence runs past the end"),
    (ZZ, status.PROCESSING_FAILURE, 'unknown VR "ZZ" in PatientName'),
    (nested(0x00400270, 1000), status.PROCESSING_FAILURE, "sequences nested deeper than 8"),
    (UNDEFINED_UC, status.PROCESSING_FAILURE, "undefined length on UC element LongCodeValue"),
    (encode(_mpps_create(PatientName="A" * 65)), status.INVALID_ATTRIBUTE_VALUE, "PatientName longer than 64 characters a group (PN)"),
    (el(0x00080005, "CS", b"ISO_IR 999") + encode(_mpps_create()), status.INVALID_ATTRIBUTE_VALUE, "Specific Character Set ISO_IR 999 is not supported"),
]  # fmt: skip
MPPS_IDS = ["truncated", "vr-zz", "deep", "undefined-uc", "pn-long", "charset"]


def _mpps_exchange(app: Appliance, trap: LogTrap, send: Callable[[Any], Any]) -> Dataset:
    with associate(app, (MPPS, EXPLICIT)) as assoc:
        trap.clear()
        st = send(assoc)
        assert_one_warning(trap, f"0x{int(st.Status):04X}", str(st.ErrorComment))
        assert assoc.is_established
        assert assoc.send_c_echo().Status == status.SUCCESS
        ok, _ = assoc.send_n_create(_mpps_create(), MPPS, generate_uid())
        assert ok.Status == status.SUCCESS
    return st


@pytest.mark.parametrize(("data", "code", "comment"), MPPS_CASES, ids=MPPS_IDS)
def test_mpps_n_create_malformed(
    box: Appliance, trap: LogTrap, data: bytes, code: int, comment: str
) -> None:
    def send(assoc: Any) -> Any:
        with sending_raw(data):
            return assoc.send_n_create(Dataset(), MPPS, generate_uid())[0]

    st = _mpps_exchange(box, trap, send)
    assert (int(st.Status), st.ErrorComment) == (code, comment)


@pytest.mark.parametrize(("data", "code", "comment"), MPPS_CASES, ids=MPPS_IDS)
def test_mpps_n_set_malformed(
    box: Appliance, trap: LogTrap, data: bytes, code: int, comment: str
) -> None:
    uid = generate_uid()
    with associate(box, (MPPS, EXPLICIT)) as assoc:
        assert assoc.send_n_create(_mpps_create(), MPPS, uid)[0].Status == status.SUCCESS

    def send(assoc: Any) -> Any:
        with sending_raw(data):
            return assoc.send_n_set(Dataset(), MPPS, uid)[0]

    st = _mpps_exchange(box, trap, send)
    assert (int(st.Status), st.ErrorComment) == (code, comment)


# -- Print N-CREATE / N-SET: the same faults, the same statuses -------------------------

PRINT_CASES = [
    (el(0x20000010, "IS", b"1")[:-1], status.PROCESSING_FAILURE, "truncated: NumberOfCopies runs past the end"),
    (el(0x20000010, "ZZ", b"1 "), status.PROCESSING_FAILURE, 'unknown VR "ZZ" in NumberOfCopies'),
    (el(0x20000010, "IS", b"1 ") + nested(0x20000500, 1000), status.PROCESSING_FAILURE, "sequences nested deeper than 8"),
    (el(0x20000010, "IS", b"1.5 "), status.INVALID_ATTRIBUTE_VALUE, "NumberOfCopies is not a valid IS value"),
    (el(0x20000010, "IS", b"1 ") + el(0x20000050, "LO", b"L" * 65 + b" "), status.INVALID_ATTRIBUTE_VALUE, "FilmSessionLabel longer than 64 characters (LO)"),
]  # fmt: skip
PRINT_IDS = ["truncated", "vr-zz", "deep", "is-invalid", "lo-long"]


def _session(assoc: Any, data: bytes | None = None) -> Any:
    """N-CREATE a Film Session on the Basic Grayscale Print Management context."""
    ds = Dataset()
    ds.NumberOfCopies = 1
    if data is None:
        return assoc.send_n_create(ds, FILM_SESSION, generate_uid(), meta_uid=GRAY_META)
    with sending_raw(data):
        return assoc.send_n_create(ds, FILM_SESSION, generate_uid(), meta_uid=GRAY_META)


def _print_exchange(app: Appliance, trap: LogTrap, send: Callable[[Any], Any]) -> Any:
    with associate(app, (GRAY_META, EXPLICIT)) as assoc:
        trap.clear()
        st = send(assoc)
        assert_one_warning(trap, f"0x{int(st.Status):04X}", str(st.ErrorComment))
        assert assoc.is_established
        assert _session(assoc)[0].Status == status.SUCCESS
    return st


@pytest.mark.parametrize(("data", "code", "comment"), PRINT_CASES, ids=PRINT_IDS)
def test_print_n_create_malformed(
    box: Appliance, trap: LogTrap, data: bytes, code: int, comment: str
) -> None:
    st = _print_exchange(box, trap, lambda assoc: _session(assoc, data)[0])
    assert (int(st.Status), st.ErrorComment) == (code, comment)


@pytest.mark.parametrize(("data", "code", "comment"), PRINT_CASES, ids=PRINT_IDS)
def test_print_n_set_malformed(
    box: Appliance, trap: LogTrap, data: bytes, code: int, comment: str
) -> None:
    def send(assoc: Any) -> Any:
        created, reply = _session(assoc)
        assert created.Status == status.SUCCESS
        uid = reply.AffectedSOPInstanceUID
        with sending_raw(data):
            return assoc.send_n_set(Dataset(), FILM_SESSION, uid, meta_uid=GRAY_META)[0]

    st = _print_exchange(box, trap, send)
    assert (int(st.Status), st.ErrorComment) == (code, comment)
