"""Helpers of the Query/Retrieve tests: held studies stored by C-STORE, and a pynetdicom
Q/R SCU (C-FIND, C-MOVE, C-GET with the SCP role for its storage contexts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from tests.forward_factories import make_ct
from tests.forward_helpers import MODALITY, send_files
from tests.raw_dimse import steady

QR_SCU = "QRSCU"
PATIENT_FIND = PatientRootQueryRetrieveInformationModelFind
STUDY_FIND = StudyRootQueryRetrieveInformationModelFind
PATIENT_MOVE = PatientRootQueryRetrieveInformationModelMove
STUDY_MOVE = StudyRootQueryRetrieveInformationModelMove
PATIENT_GET = PatientRootQueryRetrieveInformationModelGet
STUDY_GET = StudyRootQueryRetrieveInformationModelGet
JAPANESE = "Yamada^Tarou=山田^太郎=やまだ^たろう"


@dataclass
class Held:
    """What ``store_studies`` stored: study UID -> series UID -> SOP Instance UIDs."""

    studies: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    by_patient: dict[str, list[str]] = field(default_factory=dict)

    def instances(self, study: str) -> list[str]:
        return [uid for series in self.studies[study].values() for uid in series]


STUDIES = [
    # patient ID, name, birth date, sex, study date, time, accession, description,
    # series: (modality, SOP class, images)
    ("P1", "Doe^John", "19700101", "M", "20261201", "083000", "ACC1", "Chest",
     [("CT", CTImageStorage, 3), ("MR", MRImageStorage, 2)]),
    ("P1", "Doe^John", "19700101", "M", "20261115", "141500", "ACC2", "Head",
     [("CT", CTImageStorage, 2)]),
    ("P2", "Roe^Jane", "19800202", "F", "20261202", "100000", "ACC3", "Abdomen",
     [("CT", CTImageStorage, 2)]),
    ("P3", JAPANESE, "19900303", "M", "20261203", "090000", "ACC4", "Knee",
     [("CT", CTImageStorage, 1)]),
]  # fmt: skip


def store_studies(port: int, directory: Path) -> Held:
    """C-STORE the four studies of ``STUDIES`` (ten images) as MODALITY; returns their UIDs."""
    held = Held()
    paths: list[Path] = []
    directory.mkdir(parents=True, exist_ok=True)
    n = 0
    for pid, name, birth, sex, date, tm, acc, desc, series in STUDIES:
        study = generate_uid()
        held.studies[study] = {}
        held.by_patient.setdefault(pid, []).append(study)
        for number, (modality, sop_class, count) in enumerate(series, start=1):
            series_uid = generate_uid()
            held.studies[study][series_uid] = []
            for i in range(count):
                ds = make_ct(seed=i, modality=modality, sop_class=sop_class, study_uid=study)
                ds.SeriesInstanceUID = series_uid
                ds.PatientID, ds.PatientName, ds.PatientBirthDate = pid, name, birth
                ds.PatientSex, ds.StudyDate, ds.StudyTime = sex, date, tm
                ds.AccessionNumber, ds.StudyDescription, ds.StudyID = acc, desc, acc[-1]
                ds.SeriesNumber, ds.SeriesDescription = number, f"{desc} {modality}"
                ds.ReferringPhysicianName = "Who^Doctor"
                if not name.isascii():
                    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
                path = directory / f"{n:03d}.dcm"
                ds.save_as(path, enforce_file_format=True)
                paths.append(path)
                held.studies[study][series_uid].append(ds.SOPInstanceUID)
                n += 1
    statuses = send_files(port, paths, calling=MODALITY)
    assert statuses == [0] * len(paths), statuses
    return held


def qr_config(dest_port: int = 0, **dicom: Any) -> dict[str, Any]:
    """TOML-shaped settings: MODALITY stores, QRSCU queries, DEST is a move destination."""
    devices: list[dict[str, Any]] = [{"ae_title": MODALITY}, {"ae_title": QR_SCU}]
    if dest_port:
        devices.append({"ae_title": "DEST", "host": "127.0.0.1", "port": dest_port})
    devices.append({"ae_title": "NOHOST"})
    return {"devices": devices, "forward": {"reserve_mb": 0}, "dicom": dicom}


def identifier(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _assoc(port: int, contexts: list[str], calling: str = QR_SCU, **kw: Any) -> Any:
    ae = AE(ae_title=calling)
    for uid in contexts:
        ae.add_requested_context(uid)
    assoc = steady(ae.associate("127.0.0.1", port, ae_title="APPLIANCE", **kw))
    assert assoc.is_established
    return assoc


def find(
    port: int, query: Dataset, model: str = STUDY_FIND, calling: str = QR_SCU
) -> list[tuple[int, Dataset | None, Dataset]]:
    """Every C-FIND response: (status, identifier, status data set)."""
    assoc = _assoc(port, [model], calling)
    try:
        return [(int(st.Status), ds, st) for st, ds in assoc.send_c_find(query, model)]
    finally:
        assoc.release()


def matches(rsp: list[tuple[int, Any, Any]]) -> list[Dataset]:
    """The identifiers of the pending responses, after a final Success."""
    assert rsp[-1][0] == 0x0000, [hex(r[0]) for r in rsp]
    return [ds for code, ds, _ in rsp if code in (0xFF00, 0xFF01)]


def move(
    port: int, query: Dataset, destination: str, model: str = STUDY_MOVE, calling: str = QR_SCU
) -> list[tuple[int, Dataset | None, Dataset]]:
    assoc = _assoc(port, [model], calling)
    try:
        return [(int(st.Status), ds, st) for st, ds in assoc.send_c_move(query, destination, model)]
    finally:
        assoc.release()


def get(
    port: int, query: Dataset, model: str = STUDY_GET, calling: str = QR_SCU
) -> tuple[list[tuple[int, Dataset | None, Dataset]], list[Dataset]]:
    """C-GET: the responses and the data sets received by the C-STORE sub-operations."""
    received: list[Dataset] = []

    def on_store(event: Any) -> int:
        received.append(event.dataset)
        return 0x0000

    ae = AE(ae_title=calling)
    ae.add_requested_context(model)
    roles = []
    for uid in (CTImageStorage, MRImageStorage):
        ae.add_requested_context(uid)
        roles.append(build_role(uid, scp_role=True))
    assoc = steady(ae.associate(
        "127.0.0.1", port, ae_title="APPLIANCE", ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    ))  # fmt: skip
    assert assoc.is_established
    try:
        rsp = [(int(st.Status), ds, st) for st, ds in assoc.send_c_get(query, model)]
    finally:
        assoc.release()
    return rsp, received
