"""Orders sent over MLLP, judged by the ACK and by DCMTK findscu -W, an independent modality:
Japanese names from a JAHIS-style ISO-2022-JP order and from a Shift_JIS RIS arrive with
all three component groups; cancel, discontinue and reschedule show in the worklist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from appliance import catalog
from appliance.catalog import Procedure
from appliance.server import Appliance
from appliance.worklist.repo import WorklistRepo
from tests.hl7peer import Ack, MllpPeer, msg, msh, orm
from tests.interop.test_findscu_worklist import findscu

pytestmark = pytest.mark.interop

# A JAHIS-style OMI^O23 (JAHIS 放射線データ交換規約): MSH-18 "~ISO IR87" (ASCII by default,
# JIS X 0208 by ISO 2022 escape), PID-5 repetitions by XPN-8 I (kanji), P (katakana),
# A (romaji). "ヤマダ" carries a '^' byte and "タロウ" an '&' byte in ISO-2022-JP.
JAHIS = (
    msh("JP1", kind="OMI^O23^OMI_O23", charset="~ISO IR87"),
    "PID|0001||JP0001^^^^PI||山田^太郎^^^^^L^I~ヤマダ^タロウ^^^^^L^P~YAMADA^TAROU^^^^^L^A||19700101|M",
    "PV1|0001|O|放射線科^^^^^C",
    "ORC|NW|JPPL001^RIS||||||||||1234^佐藤^一郎^^^^^^^L^^^^^I",
    "TQ1|||||||20261224100000||R",
    "OBR|1|JPPL001^RIS||CTCH^胸部CT^LOCAL||||||||||||||JPACC001|JPRP001|JPSPS001||||CT",
    "ZDS|1.2.392.200036.9116.2.6.1.48.1.20261224^^Application^DICOM",
)
JP_NAME = "YAMADA^TAROU=山田^太郎=ヤマダ^タロウ"
# An older RIS writing Shift_JIS; "竹内" carries a '|' byte and "タロウ" a '^' byte there.
SJIS = (
    msh("SJ1", charset="SHIFT_JIS"),
    "PID|1||SJ0001||竹内^美智子^^^^^L^I~タケウチ^ミチコ^^^^^L^P||19850315|F",
    "ORC|NW|SJPL001^RIS",
    "TQ1|||||||20261224113000",
    "OBR|1|SJPL001^RIS||CTCH^胸部CT^LOCAL||||||||||||||SJACC001||||||CT",
)
SJ_NAME = "=竹内^美智子=タケウチ^ミチコ"

DEVICES = [
    {"ae_title": "JPCT", "character_set": "ISO 2022 IR 87"},
    {"ae_title": "ALL", "character_set": "ISO 2022 IR 87", "hide_completed": False},
]
HL7 = {
    "enabled": True,
    "host": "127.0.0.1",
    "port": 0,
    "allowed_senders": ["RIS^HOSP"],
    "stations": {"CT": "JPCT"},
}


@pytest.fixture
def box(start_appliance: Any) -> Appliance:
    app: Appliance = start_appliance({"devices": DEVICES, "hl7": HL7})
    catalog.save(app.runtime.store, Procedure("CTCH", "LOCAL", "CT Chest", "CT"))
    return app


def query(tmp: Path, **keys: str) -> Path:
    ds = Dataset()
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.PatientName = ""
    ds.PatientID = keys.get("patient_id", "")
    ds.AccessionNumber = ""
    ds.StudyInstanceUID = ""
    ds.AdmissionID = ""
    ds.PlacerOrderNumberImagingServiceRequest = ""
    ds.RequestedProcedurePriority = ""
    sps = Dataset()
    sps.ScheduledStationAETitle = ""
    sps.ScheduledProcedureStepStartDate = ""
    sps.ScheduledProcedureStepStartTime = ""
    sps.ScheduledProcedureStepStatus = ""
    sps.Modality = ""
    ds.ScheduledProcedureStepSequence = [sps]
    path = tmp / f"q{len(list(tmp.glob('q*.dcm')))}.dcm"
    ds.save_as(path, implicit_vr=False, little_endian=True)
    return path


def find(box: Appliance, tmp: Path, patient_id: str, calling: str = "JPCT") -> list[Dataset]:
    found, _ = findscu(box, tmp, [], calling=calling, query_file=query(tmp, patient_id=patient_id))
    return found


def test_jahis_iso_2022_jp_order_reaches_the_modality_with_three_groups(
    box: Appliance, tmp_path: Path
) -> None:
    with MllpPeer(box.listener("hl7").port) as peer:
        payload = peer.exchange(msg(*JAHIS, codec="iso2022_jp"))
    ack = Ack.parse(payload, "iso2022_jp")
    assert (ack.code, ack.control_id) == ("AA", "JP1"), ack.text
    assert ack.text.split("\r")[0].endswith("|~ISO IR87")  # answered in its own charset
    [ds] = find(box, tmp_path, "JP0001")
    assert ds.SpecificCharacterSet == ["", "ISO 2022 IR 87"]
    assert str(ds.PatientName) == JP_NAME
    pn = ds.PatientName
    assert (pn.family_name, pn.ideographic, pn.phonetic) == ("YAMADA", "山田^太郎", "ヤマダ^タロウ")
    assert ds.AccessionNumber == "JPACC001"
    assert ds.StudyInstanceUID == "1.2.392.200036.9116.2.6.1.48.1.20261224"  # ZDS-1
    sps = ds.ScheduledProcedureStepSequence[0]
    assert (sps.ScheduledStationAETitle, sps.Modality) == ("JPCT", "CT")
    assert (sps.ScheduledProcedureStepStartDate, sps.ScheduledProcedureStepStartTime) == (
        "20261224",
        "100000",
    )


def test_shift_jis_order_reaches_the_modality_with_its_groups(
    box: Appliance, tmp_path: Path
) -> None:
    with MllpPeer(box.listener("hl7").port) as peer:
        ack = Ack.parse(peer.exchange(msg(*SJIS, codec="shift_jis")), "shift_jis")
    assert (ack.code, ack.control_id) == ("AA", "SJ1"), ack.text
    [ds] = find(box, tmp_path, "SJ0001")
    assert str(ds.PatientName) == SJ_NAME
    assert (ds.PatientName.ideographic, ds.PatientName.phonetic) == (
        "竹内^美智子",
        "タケウチ^ミチコ",
    )


def test_cancel_discontinue_and_reschedule_as_the_modality_sees_them(
    box: Appliance, tmp_path: Path
) -> None:
    with MllpPeer(box.listener("hl7").port) as peer:
        for i, pl in enumerate(("PLA", "PLB", "PLC")):
            order = orm(f"N{i}", placer=pl, accession=f"ACC{pl}", patient_id=f"P{pl}", sps_id="")
            assert Ack.parse(peer.exchange(order)).code == "AA"
        [b] = [r for r in WorklistRepo(box.runtime.store).search("PPLB")]
        WorklistRepo(box.runtime.store).set_status([b["step_pk"]], "STARTED")
        cancel = orm("X1", control="CA", placer="PLA", accession="ACCPLA", patient_id="PPLA")
        stop = orm("X2", control="DC", placer="PLB", accession="ACCPLB", patient_id="PPLB")
        move = orm("X3", control="XO", placer="PLC", accession="ACCPLC", patient_id="PPLC",
                   start="20261230153000", sps_id="")  # fmt: skip
        for order in (cancel, stop, move):
            ack = Ack.parse(peer.exchange(order))
            assert ack.code == "AA", ack.text
    assert find(box, tmp_path, "PPLA") == []  # cancelled: gone from the worklist
    assert find(box, tmp_path, "PPLB") == []  # discontinued: hidden from this station
    [stopped] = find(box, tmp_path, "PPLB", calling="ALL")
    assert stopped.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == "DISCONTINUED"
    [moved] = find(box, tmp_path, "PPLC")
    assert (moved.PlacerOrderNumberImagingServiceRequest, moved.AdmissionID) == ("PLC", "V123")
    assert moved.RequestedProcedurePriority == "ROUTINE"
    sps = moved.ScheduledProcedureStepSequence[0]
    assert (sps.ScheduledProcedureStepStartDate, sps.ScheduledProcedureStepStartTime) == (
        "20261230",
        "153000",
    )
