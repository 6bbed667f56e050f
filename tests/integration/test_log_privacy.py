"""A full day's flow through ``appliance serve`` at INFO, logging to stderr and to a
rotating file: the log shows what happened and never a patient's name or ID."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep, ModalityWorklistInformationFind

from appliance import accounts, catalog, status
from appliance.app import open_store
from tests.factories import make_mwl_query
from tests.forward_factories import make_ct
from tests.forward_helpers import FakePacs, store_dataset
from tests.helpers import wait_for
from tests.printscu import PrintSCU
from tests.webclient import https_context

JAPANESE = {"id": "JP-7731", "name": "Yamada^Tarou=山田^太郎=やまだ^たろう", "birth": "1970-03-04"}
LATIN = {"id": "DE-4410", "name": "Müller^Jürgen", "birth": "1958-11-02"}
# Every part of the names on its own, and the IDs: none may appear in the log.
SECRETS = ["JP-7731", "DE-4410", "Yamada", "Tarou", "山田", "太郎", "やまだ", "たろう", "Müller",
           "Jürgen", "Muller", "Jurgen", "M\\xfc", "\\u5c71"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(port: int, token: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"https://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10, context=https_context()) as resp:
        assert resp.status == 201
        result: dict[str, Any] = json.loads(resp.read())
        return result


def worklist(port: int) -> list[Dataset]:
    ae = AE(ae_title="CT1")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="APPLIANCE")
    assert assoc.is_established
    try:
        query = make_mwl_query()
        query.SpecificCharacterSet = "ISO_IR 192"
        found = [ds for st, ds in assoc.send_c_find(query, ModalityWorklistInformationFind)
                 if st.Status in (status.PENDING, status.PENDING_WARNING)]  # fmt: skip
    finally:
        assoc.release()
    return found


def mpps(port: int, item: Dataset) -> None:
    """MPPS IN PROGRESS then COMPLETED for a worklist item, as the CT does."""
    sps = item.ScheduledProcedureStepSequence[0]
    ref = Dataset()
    ref.StudyInstanceUID = item.StudyInstanceUID
    ref.AccessionNumber = item.AccessionNumber
    ref.RequestedProcedureID = item.RequestedProcedureID
    ref.ScheduledProcedureStepID = sps.ScheduledProcedureStepID
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ScheduledStepAttributesSequence = [ref]
    ds.PatientName, ds.PatientID = item.PatientName, item.PatientID
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT1"
    ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = "20261124", "093100"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepEndDate = ds.PerformedProcedureStepEndTime = None
    ds.Modality, ds.StudyID, ds.PerformedSeriesSequence = "CT", "1", []
    ae = AE(ae_title="CT1")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", port, ae_title="APPLIANCE")
    assert assoc.is_established
    try:
        uid = generate_uid()
        st, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, uid)
        assert st.Status == status.SUCCESS
        done = Dataset()
        done.PerformedProcedureStepStatus = "COMPLETED"
        done.PerformedProcedureStepEndDate, done.PerformedProcedureStepEndTime = (
            "20261124",
            "100000",
        )
        st, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, uid)
        assert st.Status == status.SUCCESS
    finally:
        assoc.release()


def test_a_days_flow_at_info_logs_no_patient_name_or_id(tmp_path: Path, pacs: FakePacs) -> None:
    data = tmp_path / "data"
    store = open_store(data)
    admin = accounts.create_user(store, "admin", "correct horse battery", accounts.ADMIN)
    token = accounts.create_token(store, admin, "test")
    catalog.save(store, catalog.Procedure("CTCH", "LOCAL", "CT Chest", "CT"))
    store.close()
    dport, wport = free_port(), free_port()
    config = tmp_path / "appliance.toml"
    config.write_text(f"""
data_dir = "{data}"
[dicom]
host = "127.0.0.1"
port = {dport}
tls_port = 0
[web]
host = "127.0.0.1"
port = {wport}
http_port = 0
[logging]
level = "INFO"
file = "log/appliance.log"
[forward]
reserve_mb = 0
[[devices]]
ae_title = "CT1"
modality = "CT"
[[devices]]
ae_title = "MODALITY"
[[destinations]]
name = "pacs"
ae_title = "{pacs.ae_title}"
host = "127.0.0.1"
port = {pacs.port}
[[printers]]
name = "ward"
uri = "folder:{tmp_path / "ward"}"
[[print_profiles]]
dpi = 30
""")
    stderr = tmp_path / "stderr.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("APPLIANCE_CONFIG", "NOTIFY_SOCKET")}
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=err, env=env,
        )  # fmt: skip
    try:
        wait_for(lambda: "appliance ready" in stderr.read_text(errors="replace"), timeout=30)
        for patient, hour in ((JAPANESE, "09"), (LATIN, "10")):
            api(wport, token, "/api/v1/procedures", {
                "patient_id": patient["id"], "patient_name": patient["name"],
                "birth_date": patient["birth"], "sex": "M", "procedure": "CTCH",
                "station_ae": "CT1", "start": f"2026-11-24T{hour}:00",
            })  # fmt: skip
        items = worklist(dport)
        assert {str(i.PatientID) for i in items} == {JAPANESE["id"], LATIN["id"]}
        for item in items:
            mpps(dport, item)
        image = make_ct(PatientName=LATIN["name"], PatientID=LATIN["id"])
        image.SpecificCharacterSet = "ISO_IR 192"
        assert store_dataset(dport, image).Status == status.SUCCESS
        wait_for(lambda: pacs.received, timeout=20)
        scu = PrintSCU(dport, calling="CT1")
        try:
            scu.print_film("STANDARD\\1,1", session_attrs={"FilmSessionLabel": LATIN["id"]})
        finally:
            scu.release()
        wait_for(lambda: list((tmp_path / "ward").glob("*.pdf")), timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0

    file_log = (data / "log" / "appliance.log").read_text(encoding="utf-8")
    for log in (stderr.read_text(encoding="utf-8"), file_log):
        # The log tells the day's story...
        # (the forwarder logs nothing at INFO for an image that goes through)
        for event in ("appliance ready", "worklist query from CT1: 2 items", "COMPLETED from CT1",
                      "print job .* DONE", "appliance stopped"):  # fmt: skip
            assert re.search(event, log), (event, log[-3000:])
        # ...without the patients.
        leaked = [s for s in SECRETS if s.lower() in log.lower()]
        assert leaked == [], [line for line in log.splitlines() if any(s in line for s in leaked)]
