"""DCMTK findscu -W, an independent modality, against the worklist: every matching rule and
character set of the issue, checked on the decoded responses it extracts."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from appliance.server import Appliance
from appliance.worklist.repo import WorklistRepo
from tests.factories import make_step_request
from tests.helpers import peer_env, require_peer

JP = "Yamada^Tarou=山田^太郎=やまだ^たろう"
JP_KANA = "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"

DEVICES = [
    {"ae_title": "CT1"},
    {"ae_title": "JPCT", "character_set": "ISO 2022 IR 87"},
    {"ae_title": "JPKANA", "character_set": "ISO 2022 IR 13\\ISO 2022 IR 87"},
    {"ae_title": "LATIN", "character_set": "ISO_IR 100"},
]


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.helpers import make_config

    app = Appliance(make_config(tmp_path_factory.mktemp("wl"), {"devices": DEVICES})).start()
    repo = WorklistRepo(app.runtime.store)
    rows = [
        dict(patient_id="P100", patient_name="Doe^John", start=datetime(2026, 11, 24, 8, 0)),
        dict(patient_id="P101", patient_name="Müller^Jürgen", start=datetime(2026, 11, 24, 10, 30)),
        dict(patient_id="P102", patient_name=JP, start=datetime(2026, 11, 24, 14, 0)),
        dict(
            patient_id="P103",
            patient_name="Smith^Anna",
            start=datetime(2026, 11, 25, 9, 0),
            performing_physician="House^Gregory",
        ),
        dict(
            patient_id="P104",
            patient_name="Tanaka^Hanako",
            start=datetime(2026, 11, 25, 13, 0),
            station_ae="MR1",
            modality="MR",
        ),
        dict(
            patient_id="P105",
            patient_name=JP_KANA,
            start=datetime(2026, 11, 26, 9, 0),
            accession_number="KANA1",
        ),
    ]
    for r in rows:
        repo.schedule(make_step_request(**r))
    yield app
    app.stop()


def findscu(
    app: Appliance, tmp: Path, keys: list[str], calling: str = "CT1", query_file: Path | None = None
) -> tuple[list[Dataset], str]:
    exe = require_peer("findscu")
    out = tmp / f"rsp{len(list(tmp.iterdir()))}"
    out.mkdir()
    args = [exe, "-d", "-W", "-aet", calling, "-aec", "APPLIANCE", "-X", "-od", str(out)]
    for k in keys:
        args += ["-k", k]
    args += ["127.0.0.1", str(app.dicom_port)]
    if query_file is not None:
        args.append(str(query_file))
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, env=peer_env())
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    found = [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    return found, log


BASE = [
    "PatientName",
    "PatientID",
    "AccessionNumber",
    "StudyInstanceUID",
    "RequestedProcedureID",
    "(0040,0100)[0].ScheduledStationAETitle",
    "(0040,0100)[0].ScheduledProcedureStepStartDate",
    "(0040,0100)[0].ScheduledProcedureStepStartTime",
    "(0040,0100)[0].Modality",
    "(0040,0100)[0].ScheduledProcedureStepID",
]


def ids(found: list[Dataset]) -> list[str]:
    return sorted(str(ds.PatientID) for ds in found)


def with_keys(**over: str) -> list[str]:
    keys = {k.split("=")[0]: k for k in BASE}
    for name, value in over.items():
        path = name if not name.startswith("sps_") else f"(0040,0100)[0].{name[4:]}"
        keys[path] = f"{path}={value}"
    return list(keys.values())


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({}, ["P100", "P101", "P102", "P103", "P104", "P105"]),  # universal
        ({"PatientID": "P101"}, ["P101"]),  # single value
        ({"PatientID": "P10*"}, ["P100", "P101", "P102", "P103", "P104", "P105"]),  # wildcard *
        ({"PatientID": "P1?4"}, ["P104"]),  # wildcard ?
        ({"PatientName": "doe^john"}, ["P100"]),  # case-insensitive name
        ({"PatientName": "muller*"}, ["P101"]),  # accent-insensitive name
        ({"PatientName": "*Anna"}, ["P103"]),
        ({"sps_ScheduledProcedureStepStartDate": "20261124"}, ["P100", "P101", "P102"]),
        ({"sps_ScheduledProcedureStepStartDate": "20261125-"}, ["P103", "P104", "P105"]),
        ({"sps_ScheduledProcedureStepStartDate": "-20261124"}, ["P100", "P101", "P102"]),
        (
            {"sps_ScheduledProcedureStepStartTime": "0900-1100"},
            ["P101", "P103", "P105"],
        ),  # TM range alone
        # Combined date-time: from 24th 10:00 to 25th 09:30.
        (
            {
                "sps_ScheduledProcedureStepStartDate": "20261124-20261125",
                "sps_ScheduledProcedureStepStartTime": "1000-0930",
            },
            ["P101", "P102", "P103"],
        ),
        ({"sps_Modality": "MR"}, ["P104"]),  # sequence matching
        ({"sps_Modality": "MR", "sps_ScheduledStationAETitle": "CT1"}, []),  # all keys of one item
        (
            {
                "sps_ScheduledStationAETitle": "CT1",
                "sps_ScheduledProcedureStepStartDate": "20261125",
            },
            ["P103"],
        ),
        (
            {"sps_ScheduledPerformingPhysicianName": "House*"},
            ["P103"],
        ),  # empty stored values never match
    ],
)
def test_matching_rules(
    box: Appliance, tmp_path: Path, over: dict[str, str], expected: list[str]
) -> None:
    found, _ = findscu(box, tmp_path, with_keys(**over))
    assert ids(found) == expected


def test_uid_list(box: Appliance, tmp_path: Path) -> None:
    repo = WorklistRepo(box.runtime.store)
    uids = {
        r["patient_id"]: r["study_instance_uid"]
        for r in repo.list_day(datetime(2026, 11, 24).date())
    }
    found, _ = findscu(
        box, tmp_path, with_keys(StudyInstanceUID=f"{uids['P100']}\\{uids['P102']}\\1.2.3")
    )
    assert ids(found) == ["P100", "P102"]


def test_returns_exactly_the_requested_keys(box: Appliance, tmp_path: Path) -> None:
    found, log = findscu(
        box, tmp_path, ["PatientName", "PatientID=P100", "(0040,0100)[0].Modality"]
    )
    assert len(found) == 1
    top = sorted(e.keyword for e in found[0] if e.tag.group != 2)
    assert top == [
        "PatientID",
        "PatientName",
        "ScheduledProcedureStepSequence",
        "SpecificCharacterSet",
    ]
    assert [e.keyword for e in found[0].ScheduledProcedureStepSequence[0]] == ["Modality"]
    assert "Success" in log


def test_unsupported_key_gives_ff01(box: Appliance, tmp_path: Path) -> None:
    found, log = findscu(box, tmp_path, ["PatientID=P100", "StudyDate"])
    assert len(found) == 1 and found[0].StudyDate == ""
    assert "0xff01: Pending" in log


def test_bad_date_gets_failure_status(box: Appliance, tmp_path: Path) -> None:
    _, log = findscu(box, tmp_path, with_keys(sps_ScheduledProcedureStepStartDate="24.11.2026x"))
    assert "0xc000: Failed: Unable to process" in log.replace(
        "Unable to Process", "Unable to process"
    )


def query_file(tmp: Path, charset: list[str] | str, name: str = "", accession: str = "") -> Path:
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.PatientID = ""
    ds.AccessionNumber = accession
    sps = Dataset()
    sps.ScheduledStationAETitle = ""
    sps.Modality = ""
    ds.ScheduledProcedureStepSequence = [sps]
    path = tmp / "query.dcm"
    ds.save_as(path, implicit_vr=False, little_endian=True)
    return path


@pytest.mark.parametrize("pattern", ["山田*", "やまだ^たろう", "YAMADA^TAROU", "*太郎"])
def test_japanese_query_and_answer_iso_2022_ir_87(
    box: Appliance, tmp_path: Path, pattern: str
) -> None:
    q = query_file(tmp_path, ["", "ISO 2022 IR 87"], name=pattern)
    found, _ = findscu(box, tmp_path, [], calling="JPCT", query_file=q)
    assert ids(found) == ["P102", "P105"] if pattern != "YAMADA^TAROU" else ids(found) == ["P102"]
    by_id = {str(ds.PatientID): ds for ds in found}
    p102 = by_id["P102"]
    assert p102.SpecificCharacterSet == ["", "ISO 2022 IR 87"]
    assert str(p102.PatientName) == JP
    pn = p102.PatientName
    assert (pn.family_name, pn.ideographic, pn.phonetic) == ("Yamada", "山田^太郎", "やまだ^たろう")


def test_half_width_katakana_iso_2022_ir_13_ir_87(box: Appliance, tmp_path: Path) -> None:
    q = query_file(tmp_path, ["ISO 2022 IR 13", "ISO 2022 IR 87"], accession="KANA1")
    found, _ = findscu(box, tmp_path, [], calling="JPKANA", query_file=q)
    assert len(found) == 1
    assert found[0].SpecificCharacterSet == ["ISO 2022 IR 13", "ISO 2022 IR 87"]
    assert str(found[0].PatientName) == JP_KANA


def test_latin1_device(box: Appliance, tmp_path: Path) -> None:
    found, _ = findscu(box, tmp_path, ["PatientName=M*LLER*", "PatientID"], calling="LATIN")
    assert len(found) == 1
    assert found[0].SpecificCharacterSet == "ISO_IR 100"
    assert str(found[0].PatientName) == "Müller^Jürgen"
    raw = (tmp_path / "rsp0").glob("rsp*.dcm").__next__().read_bytes()
    assert "Müller".encode("latin-1") in raw


def test_utf8_by_default(box: Appliance, tmp_path: Path) -> None:
    found, _ = findscu(box, tmp_path, ["PatientName", "PatientID=P102"])
    assert found[0].SpecificCharacterSet == "ISO_IR 192"
    assert str(found[0].PatientName) == JP


def test_utf8_query_without_device_charset(box: Appliance, tmp_path: Path) -> None:
    q = query_file(tmp_path, "ISO_IR 192", name="山田*")
    found, _ = findscu(box, tmp_path, [], calling="CT1", query_file=q)
    assert ids(found) == ["P102", "P105"]
    assert all(ds.SpecificCharacterSet == "ISO_IR 192" for ds in found)


def test_unknown_calling_ae_gets_no_items(box: Appliance, tmp_path: Path) -> None:
    found, log = findscu(box, tmp_path, with_keys(), calling="NOBODY")
    assert found == []
    assert "Calling AE title is not a configured device" in log
    assert "0xc000: Failed: Unable to process" in log.replace(
        "Unable to Process", "Unable to process"
    )


def test_runner_type(start_appliance: Callable[..., Appliance]) -> None:
    """The module fixture and the function fixture can coexist (sanity of the harness)."""
    app = start_appliance()
    assert app.dicom_port


def test_runs_of_wildcards_answer_like_one(box: Appliance, tmp_path: Path) -> None:
    """16 `*` then `N??` froze the box with a backtracking regex (issue 11); now it answers
    what `*N??` answers (findscu's own 60 s limit would fail the old matcher)."""
    one, _ = findscu(box, tmp_path, with_keys(PatientName="*N??"))
    many, _ = findscu(box, tmp_path, with_keys(PatientName="*" * 16 + "N??"))
    assert "P103" in ids(one)  # Smith^Anna
    assert ids(many) == ids(one)
    wide, _ = findscu(box, tmp_path, with_keys(PatientName="*?*?*" * 6 + "Z"))
    assert ids(wide) == []
