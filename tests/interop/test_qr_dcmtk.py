"""DCMTK findscu, movescu and getscu against the Query/Retrieve SCP: studies stored by
C-STORE, found at each level, moved to a DCMTK storescp configured as a device and got
over the same association; checked on what the DCMTK tools wrote."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from appliance.server import Appliance
from tests.helpers import make_config, peer_env, require_peer, wait_for
from tests.orthanc import free_port
from tests.qr_helpers import JAPANESE, QR_SCU, Held, qr_config, store_studies


class StoreSCP:
    """DCMTK storescp as the move destination DEST on a free loopback port."""

    def __init__(self, out: Path) -> None:
        self.out = out
        out.mkdir(parents=True)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [require_peer("storescp"), "-aet", "DEST", "-od", str(out), str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=peer_env(),
        )  # fmt: skip
        wait_for(self._listening, timeout=10)

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError("storescp exited")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def received(self) -> set[str]:
        return {str(pydicom.dcmread(p).SOPInstanceUID) for p in self.out.iterdir()}

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Appliance, Held, StoreSCP]]:
    tmp = tmp_path_factory.mktemp("qr-dcmtk")
    dest = StoreSCP(tmp / "dest")
    app = Appliance(make_config(tmp / "data", qr_config(dest.port))).start()
    held = store_studies(app.dicom_port, tmp / "images")
    yield app, held, dest
    app.stop()
    dest.stop()


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=peer_env())


def findscu(app: Appliance, tmp: Path, root: str, keys: list[str]) -> list[Dataset]:
    out = tmp / f"rsp{len(list(tmp.iterdir()))}"
    out.mkdir()
    args = [require_peer("findscu"), root, "-aet", QR_SCU, "-aec", "APPLIANCE", "-X", "-od",
            str(out)]  # fmt: skip
    for k in keys:
        args += ["-k", k]
    proc = _run([*args, "127.0.0.1", str(app.dicom_port)])
    assert proc.returncode == 0, proc.stderr
    return [pydicom.dcmread(p) for p in sorted(out.iterdir())]


def test_findscu_study_root_levels(box: Any, tmp_path: Path) -> None:
    app, held, _ = box
    found = findscu(app, tmp_path, "-S", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID",
                                          "PatientName=doe*", "AccessionNumber",
                                          "NumberOfStudyRelatedInstances"])  # fmt: skip
    assert sorted(str(d.AccessionNumber) for d in found) == ["ACC1", "ACC2"]
    assert sorted(int(d.NumberOfStudyRelatedInstances) for d in found) == [2, 5]
    dated = findscu(app, tmp_path, "-S", ["QueryRetrieveLevel=STUDY", "AccessionNumber",
                                          "StudyDate=20261201-20261202"])  # fmt: skip
    assert sorted(str(d.AccessionNumber) for d in dated) == ["ACC1", "ACC3"]
    study = next(iter(held.studies))
    series = findscu(app, tmp_path, "-S", ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={study}",
                                           "SeriesInstanceUID", "Modality"])  # fmt: skip
    assert sorted(str(d.Modality) for d in series) == ["CT", "MR"]
    images = findscu(app, tmp_path, "-S", ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study}",
                                           "SOPInstanceUID", "InstanceNumber=2"])  # fmt: skip
    assert len(images) == 2  # instance 2 of the CT and of the MR series


def test_findscu_patient_root_and_a_japanese_name(box: Any, tmp_path: Path) -> None:
    app, _, _ = box
    found = findscu(app, tmp_path, "-P", ["QueryRetrieveLevel=PATIENT", "PatientID",
                                          "PatientName", "NumberOfPatientRelatedStudies"])  # fmt: skip
    by_id = {str(d.PatientID): d for d in found}
    assert sorted(by_id) == ["P1", "P2", "P3"]
    assert int(by_id["P1"].NumberOfPatientRelatedStudies) == 2
    assert str(by_id["P3"].PatientName) == JAPANESE
    jp = findscu(app, tmp_path, "-P", ["QueryRetrieveLevel=PATIENT", "PatientID",
                                       "SpecificCharacterSet=\\ISO 2022 IR 87",
                                       "PatientName=Yamada*"])  # fmt: skip
    assert [str(d.PatientName) for d in jp] == [JAPANESE]
    assert list(jp[0].SpecificCharacterSet) == ["", "ISO 2022 IR 87"]


def test_movescu_moves_a_study_to_storescp(box: Any) -> None:
    app, held, dest = box
    study = list(held.studies)[2]
    proc = _run([require_peer("movescu"), "-S", "-v", "-aet", QR_SCU, "-aec", "APPLIANCE",
                 "-aem", "DEST", "-k", "QueryRetrieveLevel=STUDY", "-k",
                 f"StudyInstanceUID={study}", "127.0.0.1", str(app.dicom_port)])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert set(held.instances(study)) <= dest.received()


def test_movescu_to_an_unknown_destination_gets_a801(box: Any) -> None:
    app, held, _ = box
    study = next(iter(held.studies))
    proc = _run([require_peer("movescu"), "-P", "-d", "-aet", QR_SCU, "-aec", "APPLIANCE",
                 "-aem", "NOBODY", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=P1",
                 "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(app.dicom_port)])  # fmt: skip
    text = (proc.stdout + proc.stderr).lower()
    assert "0xa801" in text, text[-2000:]
    assert "move destination nobody is not a known device" in text


def test_getscu_gets_a_series(box: Any, tmp_path: Path) -> None:
    app, held, _ = box
    study = next(iter(held.studies))
    series, uids = list(held.studies[study].items())[1]
    out = tmp_path / "got"
    out.mkdir()
    proc = _run([require_peer("getscu"), "-S", "-aet", QR_SCU, "-aec", "APPLIANCE", "-od",
                 str(out), "-k", "QueryRetrieveLevel=SERIES", "-k",
                 f"SeriesInstanceUID={series}", "127.0.0.1", str(app.dicom_port)])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = {str(pydicom.dcmread(p).SOPInstanceUID) for p in out.iterdir()}
    assert got == set(uids)


# findscu proposes all uncompressed syntaxes; the appliance takes implicit VR little
# endian, answered by appliance.dicom.find_wire. Explicit VR little endian (direct too),
# big endian and deflated (pynetdicom) are compared in tests/integration/test_qr_scp.py
# with an SCU that proposes one syntax at a time, which findscu cannot.


def _charset(d: Dataset) -> str:
    value = d.get("SpecificCharacterSet", "")
    return value if isinstance(value, str) else "\\".join(value)


def _described(found: list[Dataset]) -> list[tuple[str, ...]]:
    return sorted(
        (
            str(d.PatientID),
            str(d.PatientName),
            _charset(d),
            str(d.get("StudyDescription", "")),
            str(d.get("NumberOfStudyRelatedInstances", "")),
            str(d.get("ModalitiesInStudy", "")),
            str(d.QueryRetrieveLevel),
            str(d.RetrieveAETitle),
        )
        for d in found
    )


@pytest.mark.parametrize("charset", ["ISO_IR 192", "\\ISO 2022 IR 87"])
def test_direct_responses_in_both_little_endian_syntaxes(
    box: Any, tmp_path: Path, charset: str
) -> None:
    app, _, _ = box
    keys = ["QueryRetrieveLevel=STUDY", f"SpecificCharacterSet={charset}", "PatientID",
            "PatientName", "StudyDescription", "NumberOfStudyRelatedInstances",
            "ModalitiesInStudy", "RetrieveAETitle", "StudyInstanceUID"]  # fmt: skip
    answers = {}
    for flag in ("-x=", "-xi"):
        out = tmp_path / f"rsp{flag}"
        out.mkdir()
        args = [require_peer("findscu"), "-S", flag, "-d", "-aet", QR_SCU, "-aec", "APPLIANCE",
                "-X", "-od", str(out)]  # fmt: skip
        for k in keys:
            args += ["-k", k]
        proc = _run([*args, "127.0.0.1", str(app.dicom_port)])
        assert proc.returncode == 0, proc.stderr
        log = proc.stdout + proc.stderr
        accepted = [line for line in log.splitlines() if "Accepted Transfer Syntax" in line]
        assert accepted == ["D:     Accepted Transfer Syntax: =LittleEndianImplicit"]
        answers[flag] = _described([pydicom.dcmread(p) for p in sorted(out.iterdir())])
    assert len(answers["-xi"]) == 4
    jp = [a for a in answers["-xi"] if a[0] == "P3"]
    assert [a[1] for a in jp] == [JAPANESE]  # three component groups, decoded by DCMTK's file
    expected = "ISO_IR 192" if charset == "ISO_IR 192" else "\\ISO 2022 IR 87"
    assert jp[0][2] == expected
    assert {a[6:] for a in answers["-xi"]} == {("STUDY", "APPLIANCE")}
    assert answers["-x="] == answers["-xi"]
