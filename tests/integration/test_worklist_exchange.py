"""Worklist import and export: DICOM JSON and CSV, through the repo and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from appliance.app import open_store
from appliance.worklist import exchange
from appliance.worklist.repo import WorklistRepo, row_to_item
from tests.factories import make_step_request

JP = "Yamada^Tarou=山田^太郎=やまだ^たろう"


@pytest.fixture
def repo(tmp_path: Path) -> WorklistRepo:
    return WorklistRepo(open_store(tmp_path / "a"))


def other_server_item(**over) -> dict:
    """An MWL item as another worklist server would export it (pydicom's to_json_dict)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = JP
    ds.PatientID = "EXT1"
    ds.PatientBirthDate = "19800202"
    ds.PatientSex = "F"
    ds.PatientWeight = "61.5"
    ds.AccessionNumber = "EXTACC1"
    ds.RequestedProcedureID = "RP1"
    ds.RequestedProcedureDescription = "MR Brain"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.12345"
    sps = Dataset()
    sps.ScheduledStationAETitle = "MR1"
    sps.ScheduledProcedureStepStartDate = "20261124"
    sps.ScheduledProcedureStepStartTime = "101500"
    sps.Modality = "MR"
    sps.ScheduledProcedureStepID = "SPS1"
    sps.RequestedContrastAgent = "Gadolinium"
    ds.ScheduledProcedureStepSequence = [sps]
    for k, v in over.items():
        setattr(ds, k, v)
    return ds.to_json_dict()


def test_json_from_another_server_imports_as_it_is(repo: WorklistRepo) -> None:
    bad_missing = other_server_item(AccessionNumber="EXTACC2")
    del bad_missing["00100020"]  # Patient ID
    text = json.dumps([other_server_item(), bad_missing, "nonsense"])
    report = exchange.import_json(repo, text)
    assert report.scheduled == 1
    assert report.errors[0][0] == 2 and "PatientID" in report.errors[0][1]
    assert report.errors[1][0] == 3
    row = repo.search("EXTACC1")[0]
    item = row_to_item(row)
    assert item["PatientName"] == JP
    assert item["StudyInstanceUID"] == "1.2.826.0.1.3680043.8.498.12345"
    assert item["PatientWeight"] == "61.5"  # kept as an extra attribute
    assert item["ScheduledProcedureStepSequence"][0]["RequestedContrastAgent"] == "Gadolinium"
    assert item["ScheduledProcedureStepSequence"][0]["ScheduledProcedureStepID"] == "SPS1"


def test_json_round_trip(repo: WorklistRepo, tmp_path: Path) -> None:
    repo.schedule(make_step_request(patient_name=JP, patient_id="J1", accession_number="ACC9"))
    repo.schedule(make_step_request(patient_id="J2", start=datetime(2026, 11, 25, 8)))
    text = exchange.export_json(repo)
    exported = json.loads(text)
    assert len(exported) == 2
    assert exported[0]["00100010"]["Value"][0]["Ideographic"] == "山田^太郎"
    other = WorklistRepo(open_store(tmp_path / "b"))
    report = exchange.import_json(other, text)
    assert report.errors == [] and report.scheduled == 2

    def items(r: WorklistRepo) -> list[dict]:
        return [
            row_to_item(x)
            for x in r.store.query("SELECT * FROM steps ORDER BY start_dt")
            and r.search("J1") + r.search("J2")
        ]

    assert items(repo) == items(other)
    # Only the day asked for.
    assert len(json.loads(exchange.export_json(repo, datetime(2026, 11, 25).date(), None))) == 1


def test_csv_import_reports_bad_rows_and_keeps_good(repo: WorklistRepo) -> None:
    text = (
        "patient_id,patient_name,birth_date,sex,station_ae,modality,start,procedure_code\n"
        "C1,Suzuki^Ichiro=鈴木^一郎,19600101,M,CT1,CT,2026-11-24 09:00,CTH^LOCAL^CT Head\n"
        "C2,Bad^Date,1960-01-01,M,CT1,CT,2026-11-24 09:30,\n"
        ",No^Id,,,CT1,CT,2026-11-24 10:00,\n"
        "C4,Ok^Too,,F,CT1,CT,2026-11-24T10:30,\n"
        "C5,Bad^Code,,F,CT1,CT,2026-11-24 11:00,justonepart\n"
    )
    report = exchange.import_csv(repo, text)
    assert report.scheduled == 2
    assert [(pos, reason.split(":")[0]) for pos, reason in report.errors] == [
        (3, "birth_date"),
        (4, "patient_id"),
        (6, "procedure_code"),
    ]
    row = repo.search("C1")[0]
    assert row["patient_name"] == "Suzuki^Ichiro=鈴木^一郎"
    assert json.loads(row["procedure_code"])["CodeValue"] == "CTH"


def test_csv_unknown_column_is_named(repo: WorklistRepo) -> None:
    with pytest.raises(Exception, match="patient_nam"):
        exchange.import_csv(repo, "patient_nam\nx\n")


def test_csv_round_trip(repo: WorklistRepo, tmp_path: Path) -> None:
    repo.schedule(make_step_request(patient_name=JP, patient_id="J1"))
    text = exchange.export_csv(repo)
    other = WorklistRepo(open_store(tmp_path / "b"))
    report = exchange.import_csv(other, text)
    assert report.errors == []
    a, b = row_to_item(repo.search("J1")[0]), row_to_item(other.search("J1")[0])
    assert a == b


def test_cli_import_and_export(tmp_path: Path) -> None:
    f = tmp_path / "wl.json"
    f.write_text(json.dumps([other_server_item()]), encoding="utf-8")
    data = tmp_path / "data"
    run = [sys.executable, "-m", "appliance", "worklist"]
    out = subprocess.run(
        [*run, "import", str(f), "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "scheduled 1 step, 0 records refused" in out.stdout
    again = subprocess.run(
        [*run, "import", str(f), "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1 and "record 1:" in again.stdout
    exp = subprocess.run(
        [*run, "export", "--format", "csv", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert exp.returncode == 0
    lines = exp.stdout.splitlines()
    assert lines[0].startswith("patient_id,patient_name")
    assert "EXTACC1" in lines[1] and "山田" in lines[1]
