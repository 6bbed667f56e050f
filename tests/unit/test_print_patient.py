"""Whose films a print job holds: the patient the printed images carried (pure)."""

from __future__ import annotations

from pydicom.dataset import Dataset

from appliance.printing.service import job_patient
from appliance.printing.session import image_patient


def test_an_image_item_gives_name_id_and_accession_where_present() -> None:
    item = Dataset()
    item.PatientName = "Yamada^Tarou"
    item.PatientID = "P001"
    assert image_patient(item) == {"patient_name": "Yamada^Tarou", "patient_id": "P001"}
    assert image_patient(Dataset()) == {}
    item.AccessionNumber = "  "  # blank is absent
    assert "accession_number" not in image_patient(item)


def _film(*patients: dict[str, str]) -> dict:
    return {"boxes": [{"info": {"patient": p} if p else {}} for p in patients]}


def test_a_job_takes_the_first_patient_and_lists_several() -> None:
    one = {"patient_name": "A^B", "patient_id": "P1", "accession_number": "X1"}
    assert job_patient([_film(one, one, {})]) == one
    other = {"patient_name": "C^D", "patient_id": "P2"}
    both = job_patient([_film(one), _film(other)])
    assert both == {"patient_name": "A^B, C^D", "patient_id": "P1, P2", "accession_number": "X1"}
    assert job_patient([_film({}, {})]) == {}  # no image said whose it is
