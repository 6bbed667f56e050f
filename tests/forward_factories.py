"""Dataset factories: small, valid, generated images for the forward tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

STUDY_ROOT = "1.2.826.0.1.3680043.10.1464"  # test UIDs under a fixed, private-looking root


def make_ct(
    rows: int = 32,
    columns: int = 32,
    seed: int = 0,
    modality: str = "CT",
    sop_class: str = CTImageStorage,
    study_uid: str | None = None,
    **over: Any,
) -> Dataset:
    """A CT image with 16-bit random pixels and a fresh SOP Instance UID."""
    rng = np.random.default_rng(seed)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Test^Patient"
    ds.PatientID = "P-0001"
    ds.Modality = modality
    ds.InstanceNumber = seed + 1
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = rng.integers(0, 4096, size=(rows, columns), dtype=np.uint16).tobytes()
    for key, value in over.items():
        setattr(ds, key, value)
    return ds


def write_series(directory: Path, count: int, **kw: Any) -> list[Path]:
    """``count`` CT files in one study under ``directory``; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    study = kw.pop("study_uid", None) or generate_uid()
    paths = []
    for i in range(count):
        ds = make_ct(seed=i, study_uid=study, **kw)
        path = directory / f"img{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def encoded(ds: Dataset, implicit: bool = False) -> bytes:
    """The data set alone (no File Meta) as sent on the wire: little endian, explicit VR
    unless ``implicit``."""
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, implicit
    write_dataset(buf, ds)
    return buf.getvalue()
