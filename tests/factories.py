"""Factories for worklist data and queries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydicom.dataset import Dataset

from appliance.worklist.model import Code, StepRequest


def make_step_request(**over: Any) -> StepRequest:
    """A valid scheduled step; keyword arguments override fields."""
    base: dict[str, Any] = {
        "patient_id": "PID001",
        "patient_name": "Doe^John",
        "station_ae": "CT1",
        "modality": "CT",
        "start": datetime(2026, 11, 24, 9, 30),
        "birth_date": "19700101",
        "sex": "M",
        "requested_procedure_description": "CT Chest",
        "requested_procedure_code": Code("CTCH", "LOCAL", "CT Chest"),
        "sps_description": "Chest with contrast",
        "protocol_codes": (Code("P1", "LOCAL", "Chest protocol"),),
    }
    base.update(over)
    return StepRequest(**base)


def make_mwl_query(**over: Any) -> Dataset:
    """A typical modality worklist query with universal return keys; SPS keys via sps_*."""
    ds = Dataset()
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.AccessionNumber = ""
    ds.StudyInstanceUID = ""
    ds.RequestedProcedureID = ""
    ds.RequestedProcedureDescription = ""
    sps = Dataset()
    sps.ScheduledStationAETitle = ""
    sps.ScheduledProcedureStepStartDate = ""
    sps.ScheduledProcedureStepStartTime = ""
    sps.Modality = ""
    sps.ScheduledProcedureStepID = ""
    sps.ScheduledProcedureStepDescription = ""
    for key, value in over.items():
        if key.startswith("sps_"):
            setattr(sps, key[4:], value)
        else:
            setattr(ds, key, value)
    ds.ScheduledProcedureStepSequence = [sps]
    return ds
