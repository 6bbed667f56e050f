"""Status back to the RIS ([[hl7.outbound]]): MPPS over a real association moves a step of an
HL7 order, and a RIS on a real MLLP socket receives ORM^O01 SC with ORC-5 IP then CM;
retries, dead letters and restarts keep every message (issue 14)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from appliance import catalog, status
from appliance.catalog import Procedure
from appliance.server import Appliance
from appliance.worklist.repo import WorklistRepo
from tests.factories import make_step_request
from tests.helpers import wait_for
from tests.hl7peer import Ack, FakeRis, MllpPeer, orm
from tests.integration.test_worklist_scp import mpps_assoc, mpps_create_ds


def settings(ris_port: int, **over: Any) -> dict[str, Any]:
    ris = {"name": "ris", "host": "127.0.0.1", "port": ris_port, "receiving_application": "RIS",
           "receiving_facility": "HOSP", "retry_initial": 0.1, "retry_max": 0.3, "timeout": 2.0} | over  # fmt: skip
    return {
        "devices": [{"ae_title": "CT1"}],
        "hl7": {"enabled": True, "host": "127.0.0.1", "port": 0, "allowed_senders": ["RIS^HOSP"],
                "stations": {"CT": "CT1"}, "outbound": [ris]},
    }  # fmt: skip


@pytest.fixture
def ris() -> Iterator[FakeRis]:
    server = FakeRis()
    yield server
    server.close()


def start(start_appliance: Callable[..., Appliance], ris_port: int, **kw: Any) -> Appliance:
    app = start_appliance(settings(ris_port), **kw)
    if not catalog.all_rows(app.runtime.store):
        catalog.save(app.runtime.store, Procedure("CTCH", "LOCAL", "CT Chest", "CT"))
    return app


def order_step(app: Appliance, control_id: str = "C1") -> dict[str, Any]:
    with MllpPeer(app.listener("hl7").port) as peer:
        assert Ack.parse(peer.exchange(orm(control_id))).code == "AA"
    return WorklistRepo(app.runtime.store).search("P1001")[0]


def mpps(app: Appliance, step: dict[str, Any], final: str = "COMPLETED") -> None:
    uid = generate_uid()
    assoc = mpps_assoc(app)
    st, _ = assoc.send_n_create(mpps_create_ds(step), ModalityPerformedProcedureStep, uid)
    assert st.Status == status.SUCCESS
    mods = Dataset()
    mods.PerformedProcedureStepStatus = final
    mods.PerformedProcedureStepEndDate = "20261224"
    mods.PerformedProcedureStepEndTime = "100000"
    st, _ = assoc.send_n_set(mods, ModalityPerformedProcedureStep, uid)
    assert st.Status == status.SUCCESS
    assoc.release()


def outbox(app: Appliance) -> list[dict[str, Any]]:
    return app.runtime.store.query(
        "SELECT status, state, attempts, last_error, ack_code FROM hl7_outbox ORDER BY pk"
    )


def test_mpps_in_progress_then_completed_reaches_the_ris_in_order(
    start_appliance: Callable[..., Appliance], ris: FakeRis
) -> None:
    app = start(start_appliance, ris.port)
    mpps(app, order_step(app))
    wait_for(lambda: len(ris.received) == 2)
    for i, orc5 in enumerate(("IP", "CM")):
        msh, orc = ris.fields(i, "MSH"), ris.fields(i, "ORC")
        assert (msh[4], msh[5], msh[8]) == ("RIS", "HOSP", "ORM^O01^ORM_O01")
        assert (orc[1], orc[2], orc[3], orc[5]) == ("SC", "PL1001^RIS", "F1001^APPLIANCE", orc5)
        assert ris.fields(i, "PID")[3].startswith("P1001")
        assert ris.fields(i, "OBR")[18] == "ACC1001"
    wait_for(lambda: [r["state"] for r in outbox(app)] == ["sent", "sent"])
    assert app.health()["services"]["hl7"]["outbound"]["ris"]["sent"] == 2


def test_discontinued_is_sent_as_dc(
    start_appliance: Callable[..., Appliance], ris: FakeRis
) -> None:
    app = start(start_appliance, ris.port)
    mpps(app, order_step(app), final="DISCONTINUED")
    wait_for(lambda: len(ris.received) == 2)
    assert ris.fields(1, "ORC")[5] == "DC"


def test_ae_from_the_ris_is_a_dead_letter_with_its_reason(
    start_appliance: Callable[..., Appliance], ris: FakeRis
) -> None:
    ris.code = "AE"
    app = start(start_appliance, ris.port)
    mpps(app, order_step(app))
    wait_for(lambda: [r["state"] for r in outbox(app)] == ["dead", "dead"])
    assert outbox(app)[0]["last_error"] == "RIS answered AE: as told"
    assert app.health()["services"]["hl7"]["outbound"]["ris"]["dead"] == 2


def test_ris_down_is_retried_and_nothing_is_lost_across_a_restart(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    import socket

    down = socket.socket()  # bound, not listening: connections are refused, and no other
    down.bind(("127.0.0.1", 0))  # listener (the appliance's own on port 0) can take the port
    port = down.getsockname()[1]
    app = start(start_appliance, port, data_dir=tmp_path / "d")
    mpps(app, order_step(app))
    wait_for(lambda: (rows := outbox(app)) and rows[0]["attempts"] >= 2)
    rows = outbox(app)
    assert [r["state"] for r in rows] == ["waiting", "waiting"]
    assert "ConnectionRefused" in rows[0]["last_error"]
    assert rows[1]["attempts"] == 0  # CM waits behind IP: the RIS gets them in order
    app.stop()
    down.close()
    ris = FakeRis(port=port)
    try:
        again = start(start_appliance, port, data_dir=tmp_path / "d")
        wait_for(lambda: len(ris.received) == 2)
        assert [ris.fields(i, "ORC")[5] for i in (0, 1)] == ["IP", "CM"]
        wait_for(lambda: [r["state"] for r in outbox(again)] == ["sent", "sent"])
    finally:
        ris.close()


def test_status_set_by_the_ris_itself_is_not_echoed(
    start_appliance: Callable[..., Appliance], ris: FakeRis
) -> None:
    app = start(start_appliance, ris.port)
    order_step(app)
    with MllpPeer(app.listener("hl7").port) as peer:
        assert Ack.parse(peer.exchange(orm("C2", control="SC", status="IP"))).code == "AA"
        assert Ack.parse(peer.exchange(orm("C3", control="DC"))).code == "AA"
    assert WorklistRepo(app.runtime.store).search("P1001")[0]["status"] == "DISCONTINUED"
    assert app.runtime.store.query("SELECT count(*) AS n FROM hl7_status_events")[0]["n"] == 0
    assert outbox(app) == [] and ris.received == []


def test_steps_not_ordered_by_hl7_send_nothing(
    start_appliance: Callable[..., Appliance], ris: FakeRis
) -> None:
    app = start(start_appliance, ris.port)
    repo = WorklistRepo(app.runtime.store)
    pk = repo.schedule(make_step_request())
    repo.set_status([pk], "STARTED")
    repo.set_status([pk], "COMPLETED")
    assert app.runtime.store.query("SELECT count(*) AS n FROM hl7_status_events")[0]["n"] == 0
    assert outbox(app) == []


def test_without_outbound_the_events_are_cleared(start_appliance: Callable[..., Appliance]) -> None:
    raw = settings(1)
    raw["hl7"].pop("outbound")
    app = start_appliance(raw)
    catalog.save(app.runtime.store, Procedure("CTCH", "LOCAL", "CT Chest", "CT"))
    mpps(app, order_step(app))
    events = "SELECT count(*) AS n FROM hl7_status_events"
    wait_for(lambda: app.runtime.store.query(events)[0]["n"] == 0)
    assert outbox(app) == [] and "outbound" not in app.health()["services"]["hl7"]


def test_a_dead_letter_can_be_resent_from_the_cli(
    start_appliance: Callable[..., Appliance], ris: FakeRis
) -> None:
    import subprocess
    import sys

    ris.code = "AE"
    app = start(start_appliance, ris.port)
    mpps(app, order_step(app))
    wait_for(lambda: [r["state"] for r in outbox(app)] == ["dead", "dead"])
    data = ["--data-dir", str(app.config.data_dir)]
    listing = subprocess.run(
        [sys.executable, "-m", "appliance", "hl7", "outbox", "--state", "dead", *data],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = listing.stdout.splitlines()
    assert len(lines) == 2 and all("RIS answered AE: as told" in line for line in lines), lines
    first = int(lines[-1].split()[0])  # newest first: the last line is the IP message
    ris.code = "AA"
    resent = subprocess.run(
        [sys.executable, "-m", "appliance", "hl7", "resend", str(first), *data],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert resent.returncode == 0, resent.stderr
    wait_for(lambda: [r["state"] for r in outbox(app)] == ["sent", "dead"])
    assert ris.fields(2, "ORC")[5] == "IP" and ris.fields(2, "MSH")[9] == ris.fields(0, "MSH")[9]
    audit = app.runtime.store.query("SELECT action FROM audit WHERE action = 'hl7-resend'")
    assert audit == [{"action": "hl7-resend"}]
