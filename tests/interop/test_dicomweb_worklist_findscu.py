"""A worklist client over REST (MWL-RS, PS3.18 14) sees the same items as DCMTK
``findscu -W`` on the same box: same patients, accession numbers, steps and names."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from appliance.server import Appliance
from appliance.worklist.repo import WorklistRepo
from tests.dicomweb_helpers import Box, api_token, values
from tests.factories import make_step_request
from tests.helpers import make_config
from tests.interop.test_findscu_worklist import BASE, findscu
from tests.qr_helpers import Held

pytestmark = pytest.mark.interop

MWL = "/dicomweb/modality-scheduled-procedure-steps"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Any:
    app = Appliance(
        make_config(tmp_path_factory.mktemp("mwlrs"), {"devices": [{"ae_title": "CT1"}]})
    ).start()
    repo = WorklistRepo(app.runtime.store)  # type: ignore[union-attr]
    for n, (pid, name, station) in enumerate(
        [
            ("P200", "Doe^John", "CT1"),
            ("P201", "Yamada^Tarou=山田^太郎=やまだ^たろう", "CT1"),
            ("P202", "Müller^Jürgen", "MR1"),
            ("P203", "Smith^Anna", "CT1"),
        ]
    ):
        repo.schedule(
            make_step_request(
                patient_id=pid,
                patient_name=name,
                station_ae=station,
                modality="MR" if station == "MR1" else "CT",
                start=datetime(2026, 12, 3, 8 + n, 0),
            )
        )
    canceled = repo.schedule(make_step_request(patient_id="P204", start=datetime(2026, 12, 3, 13)))
    repo.cancel(canceled)
    yield Box(app, Held(), api_token(app))
    app.stop()


def _dimse(box: Box, tmp: Path, *keys: str) -> set[tuple[str, ...]]:
    found, _ = findscu(box.app, tmp, [*BASE, *keys])
    return {
        (
            str(ds.PatientID),
            str(ds.PatientName),
            str(ds.AccessionNumber),
            str(ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID),
            str(ds.ScheduledProcedureStepSequence[0].ScheduledStationAETitle),
        )  # fmt: skip
        for ds in found
    }


def _rest(box: Box, query: str = "") -> set[tuple[str, ...]]:
    code, _, items = box.json(f"{MWL}{query}")
    assert code == 200
    out = set()
    for item in items:
        pn = item["00100010"]["Value"][0]
        name = "=".join(pn.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic"))
        sps = values(item, "00400100")[0]
        out.add(
            (
                values(item, "00100020")[0],
                name.rstrip("="),
                values(item, "00080050")[0],
                values(sps, "00400009")[0],
                values(sps, "00400001")[0],
            )  # fmt: skip
        )
    return out


@pytest.mark.parametrize(
    ("keys", "query"),
    [
        ((), ""),
        (("(0040,0100)[0].Modality=MR",), "?ScheduledProcedureStepSequence.Modality=MR"),
        (("PatientName=doe*",), "?PatientName=doe*"),
        (("(0040,0100)[0].ScheduledStationAETitle=CT1",), "?00400100.00400001=CT1"),
        (
            ("(0040,0100)[0].ScheduledProcedureStepStartTime=0900-1100",),
            "?ScheduledProcedureStepSequence.ScheduledProcedureStepStartTime=0900-1100",
        ),
    ],
)
def test_rest_and_findscu_see_the_same_items(
    box: Box, tmp_path: Path, keys: tuple[str, ...], query: str
) -> None:
    dimse = _dimse(box, tmp_path, *keys)
    assert dimse, "findscu found nothing: the comparison would prove nothing"
    assert _rest(box, query) == dimse
