"""HL7 v2 orders over a real MLLP socket into the worklist: each judged by the ACK received
and by the database afterwards (issue 14)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance import catalog
from appliance.catalog import Procedure
from appliance.server import Appliance
from appliance.worklist.repo import STEP_COLUMNS, STEP_FROM, WorklistRepo
from tests.hl7peer import Ack, MllpPeer, msg, msh, orm

HL7 = {
    "enabled": True,
    "host": "127.0.0.1",
    "port": 0,
    "allowed_senders": ["RIS^HOSP", "OLDRIS"],
    "stations": {"CT": "CT1", "MR": "MR1"},
}


def add_catalog(app: Appliance) -> None:
    store = app.runtime.store
    catalog.save(store, Procedure("CTCH", "LOCAL", "CT Chest", "CT", "P1", "LOCAL", "Chest"))
    catalog.save(store, Procedure("MRBR", "LOCAL", "MR Brain", "MR"))


@pytest.fixture
def box(start_appliance: Callable[..., Appliance]) -> Appliance:
    app = start_appliance({"hl7": HL7})
    add_catalog(app)
    return app


@pytest.fixture
def peer(box: Appliance) -> Any:
    with MllpPeer(box.listener("hl7").port) as p:
        yield p


def steps(app: Appliance, where: str = "1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    return app.runtime.store.query(f"SELECT {STEP_COLUMNS} {STEP_FROM} WHERE {where}", params)


def counts(app: Appliance) -> tuple[int, int, int, int]:
    q = app.runtime.store.db.execute
    return tuple(  # type: ignore[return-value]
        q(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("steps", "patients", "procedures", "audit")
    )


def test_hl7_is_off_by_default(appliance: Appliance) -> None:
    assert appliance.listener("hl7") is None
    assert "hl7" not in appliance.health()["services"]


def test_new_order_is_in_the_worklist_when_the_aa_arrives(box: Appliance, peer: MllpPeer) -> None:
    ack = Ack.parse(peer.exchange(orm("C1", zds="1.2.826.0.1.3680043.9.7.1")))
    assert (ack.code, ack.control_id, ack.errors) == ("AA", "C1", [])
    assert "|ACK^O01^ACK|" in ack.text
    [row] = steps(box)  # no waiting: the change was committed before the ACK was sent
    assert (row["patient_id"], row["issuer"], row["patient_name"]) == ("P1001", "HOSP", "Doe^John")
    assert (row["birth_date"], row["sex"]) == ("19700101", "M")
    assert (row["accession_number"], row["requested_procedure_id"], row["sps_id"]) == (
        "ACC1001",
        "RP1001",
        "SPS1001",
    )
    assert (row["station_ae"], row["modality"]) == ("CT1", "CT")  # station from hl7.stations
    assert (row["start_date"], row["start_time"], row["priority"]) == (
        "20261224",
        "093000",
        "ROUTINE",
    )
    assert row["study_instance_uid"] == "1.2.826.0.1.3680043.9.7.1"
    assert '"CodeValue": "CTCH"' in row["procedure_code"] and '"P1"' in row["protocol"]
    assert (row["referring_physician"], row["requesting_physician"]) == (
        "House^Gregory",
        "Wilson^James",
    )
    extra = json.loads(row["procedure_extra"])
    assert extra["PlacerOrderNumberImagingServiceRequest"] == "PL1001"  # ORC-2
    assert extra["FillerOrderNumberImagingServiceRequest"] == "F1001"  # ORC-3
    assert (extra["AdmissionID"], extra["CurrentPatientLocation"]) == ("V123", "RAD^R12^B1")
    assert extra["ReasonForTheRequestedProcedure"] == "Chest pain"  # OBR-31
    audit = box.runtime.store.query(
        "SELECT actor, action, source FROM audit WHERE action = 'schedule'"
    )
    assert audit == [{"actor": "hl7:RIS^HOSP", "action": "schedule", "source": "127.0.0.1"}]
    health = box.health()["services"]["hl7"]
    assert (health["state"], health["received"], health["AA"]) == ("running", 1, 1)


def test_omi_with_ipc_overrides_obr(box: Appliance, peer: MllpPeer) -> None:
    order = msg(
        msh("O1", kind="OMI^O23"),
        "PID|1||P2001^^^HOSP||Roe^Jane||19800202|F",
        "ORC|NW|PL2001^RIS||||||||||",
        "TQ1|1||||||20261224110000||S",
        "OBR|1|PL2001^RIS||MRBR^MR Brain^LOCAL||||||||||||||OBRACC|OBRRP|OBRSPS||||CT",
        "IPC|IPCACC|IPCRP|1.2.3.4.5|IPCSPS|MR|PR1^Brain routine^LOCAL|MRSTATION|ROOM2|MR7",
    )
    ack = Ack.parse(peer.exchange(order))
    assert ack.code == "AA", ack.text
    [row] = steps(box)
    assert (row["accession_number"], row["requested_procedure_id"], row["sps_id"]) == (
        "IPCACC",
        "IPCRP",
        "IPCSPS",
    )
    assert (row["study_instance_uid"], row["modality"], row["station_ae"]) == (
        "1.2.3.4.5",
        "MR",
        "MR7",
    )
    assert (row["station_name"], row["location"], row["priority"]) == ("MRSTATION", "ROOM2", "STAT")
    assert '"PR1"' in row["protocol"]


def test_reschedule_xo_changes_the_same_step(box: Appliance, peer: MllpPeer) -> None:
    assert Ack.parse(peer.exchange(orm("C1"))).code == "AA"
    [before] = steps(box)
    ack = Ack.parse(peer.exchange(orm("C2", control="XO", start="20261227143000", priority="S")))
    assert ack.code == "AA", ack.text
    [after] = steps(box)
    assert after["step_pk"] == before["step_pk"]
    assert (after["start_date"], after["start_time"], after["priority"]) == (
        "20261227",
        "143000",
        "STAT",
    )
    assert after["study_instance_uid"] == before["study_instance_uid"]
    assert (
        box.runtime.store.query("SELECT count(*) AS n FROM audit WHERE action = 'update'")[0]["n"]
        == 1
    )


def test_cancel_removes_the_step_from_the_worklist(box: Appliance, peer: MllpPeer) -> None:
    assert Ack.parse(peer.exchange(orm("C1"))).code == "AA"
    ack = Ack.parse(peer.exchange(orm("C2", control="CA")))
    assert ack.code == "AA", ack.text
    assert [r["status"] for r in steps(box)] == ["CANCELED"]
    assert WorklistRepo(box.runtime.store).search("P1001")[0]["status"] == "CANCELED"


def test_cancel_of_a_started_step_is_refused_and_discontinue_ends_it(
    box: Appliance, peer: MllpPeer
) -> None:
    assert Ack.parse(peer.exchange(orm("C1"))).code == "AA"
    [row] = steps(box)
    WorklistRepo(box.runtime.store).set_status([row["step_pk"]], "STARTED")
    ack = Ack.parse(peer.exchange(orm("C2", control="CA")))
    assert ack.code == "AE" and ack.errors[0][1] == "207", ack.text
    assert [r["status"] for r in steps(box)] == ["STARTED"]
    ack = Ack.parse(peer.exchange(orm("C3", control="DC")))
    assert ack.code == "AA", ack.text
    assert [r["status"] for r in steps(box)] == ["DISCONTINUED"]
    audit = box.runtime.store.query("SELECT actor, detail FROM audit WHERE action = 'discontinue'")
    assert audit == [{"actor": "hl7:RIS^HOSP", "detail": "DISCONTINUED"}]


def test_status_change_sc_sets_the_step_status(box: Appliance, peer: MllpPeer) -> None:
    assert Ack.parse(peer.exchange(orm("C1"))).code == "AA"
    assert Ack.parse(peer.exchange(orm("C2", control="SC", status="IP"))).code == "AA"
    assert [r["status"] for r in steps(box)] == ["STARTED"]


def test_change_of_an_unknown_order_is_ae_naming_orc_2(box: Appliance, peer: MllpPeer) -> None:
    ack = Ack.parse(peer.exchange(orm("C1", control="CA", placer="PL404", accession="NOPE")))
    assert (ack.code, ack.errors) == ("AE", [("ORC^1^2", "204")])


def test_new_order_twice_is_ae_duplicate_key(box: Appliance, peer: MllpPeer) -> None:
    assert Ack.parse(peer.exchange(orm("C1"))).code == "AA"
    ack = Ack.parse(peer.exchange(orm("C2")))
    assert (ack.code, ack.errors) == ("AE", [("ORC^1^2", "205")])
    assert len(steps(box)) == 1


def test_duplicate_control_id_gets_the_first_ack_and_is_not_applied_twice(
    box: Appliance, peer: MllpPeer
) -> None:
    first = peer.exchange(orm("DUP1"))
    before = counts(box)
    again = peer.exchange(orm("DUP1"))
    assert again == first  # byte for byte, its own control ID and time stamp included
    assert counts(box) == before
    row = box.runtime.store.query("SELECT duplicates FROM hl7_messages WHERE control_id = 'DUP1'")
    assert row == [{"duplicates": 1}]
    # an error is answered the same way: the same AE, not a second attempt
    bad = peer.exchange(orm("DUP2", code="NOPE^Unknown^LOCAL", placer="PL2", accession="A2"))
    catalog.save(box.runtime.store, Procedure("NOPE", "LOCAL", "Now known", "CT"))
    assert (
        peer.exchange(orm("DUP2", code="NOPE^Unknown^LOCAL", placer="PL2", accession="A2")) == bad
    )
    assert Ack.parse(bad).code == "AE" and len(steps(box)) == 1
    assert box.health()["services"]["hl7"]["duplicates"] == 2


def test_duplicate_after_a_restart_is_still_recognised(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    first_box = start_appliance({"hl7": HL7}, data_dir=tmp_path / "d")
    add_catalog(first_box)
    with MllpPeer(first_box.listener("hl7").port) as p:
        first = p.exchange(orm("R1"))
    first_box.stop()
    second_box = start_appliance({"hl7": HL7}, data_dir=tmp_path / "d")
    with MllpPeer(second_box.listener("hl7").port) as p:
        assert p.exchange(orm("R1")) == first
    assert len(steps(second_box)) == 1


@pytest.mark.parametrize(
    ("over", "location", "code"),
    [
        ({"code": "XXXX^Unknown^LOCAL"}, "OBR^1^4", "103"),  # unknown procedure code
        ({"patient_id": ""}, "PID^1^3", "101"),  # missing PID-3
        ({"birth": "19701341"}, "PID^1^7", "102"),  # bad date
        ({"start": "2026-12-24"}, "TQ1^1^7", "102"),  # bad date-time
        ({"start": ""}, "TQ1^1^7", "101"),  # no start anywhere
        ({"modality": "US", "code": "MRBR^MR Brain^LOCAL"}, "OBR^1^24", "101"),  # no station for US
        ({"sex": "X"}, "PID^1^8", "103"),
        ({"control": "ZZ"}, "ORC^1^1", "103"),
        ({"zds": "not-a-uid"}, "ZDS^1^1", "102"),
        ({"priority": "Q"}, "TQ1^1^9", "103"),
    ],
)
def test_order_that_cannot_be_applied_is_ae_naming_the_field(
    box: Appliance, peer: MllpPeer, over: dict[str, str], location: str, code: str
) -> None:
    before = counts(box)
    ack = Ack.parse(peer.exchange(orm("E1", **over)))
    assert (ack.code, ack.control_id, ack.errors) == ("AE", "E1", [(location, code)]), ack.text
    assert counts(box) == before  # nothing applied, not even an audit row


def test_nothing_is_half_applied_when_the_second_order_fails(
    box: Appliance, peer: MllpPeer
) -> None:
    two = msg(
        msh("H1"),
        "PID|1||P3001^^^HOSP||Two^Orders||19700101|M",
        "ORC|NW|PL3001^RIS",
        "TQ1|1||||||202612240800",
        "OBR|1|PL3001^RIS||CTCH^CT Chest^LOCAL||||||||||||||ACC3001",
        "ORC|NW|PL3002^RIS",
        "TQ1|1||||||202612240900",
        "OBR|1|PL3002^RIS||XXXX^Unknown^LOCAL||||||||||||||ACC3002",
    )
    before = counts(box)
    ack = Ack.parse(peer.exchange(two))
    assert (ack.code, ack.errors) == ("AE", [("OBR^2^4", "103")])
    assert counts(box) == before


def test_two_orders_in_one_message_are_both_scheduled(box: Appliance, peer: MllpPeer) -> None:
    two = msg(
        msh("H2"),
        "PID|1||P3001^^^HOSP||Two^Orders||19700101|M",
        "ORC|NW|PL3001^RIS",
        "TQ1|1||||||202612240800",
        "OBR|1|PL3001^RIS||CTCH^CT Chest^LOCAL||||||||||||||ACC3001",
        "ORC|NW|PL3002^RIS",
        "TQ1|1||||||202612240900",
        "OBR|2|PL3002^RIS||MRBR^MR Brain^LOCAL||||||||||||||ACC3002",
    )
    assert Ack.parse(peer.exchange(two)).code == "AA"
    assert sorted((r["accession_number"], r["station_ae"]) for r in steps(box)) == [
        ("ACC3001", "CT1"),
        ("ACC3002", "MR1"),
    ]


@pytest.mark.parametrize(
    ("payload", "code", "location"),
    [
        (msg(msh("T1", kind="ADT^A01"), "PID|1||P1||Doe^John"), "AR", "MSH^1^9"),  # type
        (msg(msh("T2", kind="ORM^O02"), "PID|1||P1||Doe^John"), "AR", "MSH^1^9^1^2"),  # event
        (orm("T3").replace(b"RIS|HOSP", b"EVIL|HOSP"), "AR", "MSH^1^3"),  # sender not allowed
        (orm("T4").replace(b"RIS|HOSP", b"RIS|OTHER"), "AR", "MSH^1^3"),  # facility not allowed
        (orm(""), "AR", "MSH^1^10"),  # no control ID
        (msg(msh("T6"), "PID|1||P1||Doe^John"), "AE", "ORC^1"),  # malformed: no ORC
        (msg(msh("T7"), "ORC|NW|PL9^RIS", "OBR|1|PL9"), "AE", "PID^1"),  # malformed: no PID
    ],
)
def test_unsupported_or_malformed_messages(
    box: Appliance, peer: MllpPeer, payload: bytes, code: str, location: str
) -> None:
    ack = Ack.parse(peer.exchange(payload))
    assert (ack.code, ack.errors[0][0]) == (code, location), ack.text
    assert steps(box) == []


def test_sender_with_application_only_entry_is_accepted_from_any_facility(
    box: Appliance, peer: MllpPeer
) -> None:
    ack = Ack.parse(peer.exchange(orm("F1").replace(b"RIS|HOSP", b"OLDRIS|ANYWHERE")))
    assert ack.code == "AA", ack.text


def test_not_hl7_at_all_is_rejected_and_the_connection_keeps_working(
    box: Appliance, peer: MllpPeer
) -> None:
    ack = Ack.parse(peer.exchange(b"this is not an HL7 message"))
    assert (ack.code, ack.control_id) == ("AR", "")
    assert Ack.parse(peer.exchange(orm("G1"))).code == "AA"


def test_latin1_and_utf8_names(box: Appliance, peer: MllpPeer) -> None:
    latin = orm("L1", name="Müller^Jürgen", charset="8859/1", codec="latin-1")
    assert Ack.parse(peer.exchange(latin)).code == "AA"
    utf8 = orm("U1", name="Ødegård^Åse", patient_id="P2", placer="PL2", accession="A2",
               charset="UNICODE UTF-8", codec="utf-8")  # fmt: skip
    assert Ack.parse(peer.exchange(utf8)).code == "AA"
    names = sorted(r["patient_name"] for r in steps(box))
    assert names == ["Müller^Jürgen", "Ødegård^Åse"]


def test_bytes_the_charset_cannot_decode_are_ae_naming_msh_18(
    box: Appliance, peer: MllpPeer
) -> None:
    latin = orm("B1", name="Müller^Jürgen", codec="latin-1")  # MSH-18 empty: ASCII
    ack = Ack.parse(peer.exchange(latin))
    assert (ack.code, ack.errors) == ("AE", [("MSH^1^18", "102")])
    assert steps(box) == []


def test_a_100_kb_message_split_across_tcp_reads(box: Appliance, peer: MllpPeer) -> None:
    base = orm("BIG1").rstrip(b"\r")
    notes = b"".join(b"\rNTE|%d||%s" % (i, b"x" * 1000) for i in range(100))
    payload = base + notes + b"\r"
    assert len(payload) > 100_000
    framed = b"\x0b" + payload + b"\x1c\r"
    for i in range(0, len(framed), 4096):
        peer.send_raw(framed[i : i + 4096])
        time.sleep(0.002)  # pacing, so the listener reads the message in many pieces
    ack = Ack.parse(peer.receive())
    assert (ack.code, ack.control_id) == ("AA", "BIG1")
    assert len(steps(box)) == 1


def test_1000_orders_in_a_row_on_one_connection(box: Appliance, peer: MllpPeer) -> None:
    started = time.monotonic()
    for i in range(1000):
        order = orm(
            f"N{i}", placer=f"PL{i:05d}", accession=f"ACC{i:05d}", patient_id=f"P{i:05d}", sps_id=""
        )
        ack = Ack.parse(peer.exchange(order))
        assert (ack.code, ack.control_id) == ("AA", f"N{i}"), ack.text
    elapsed = time.monotonic() - started
    assert len(steps(box)) == 1000
    assert elapsed < 60, f"1000 orders took {elapsed:.1f} s"


def test_healthz_counts_messages_by_ack_code(box: Appliance, peer: MllpPeer) -> None:
    from appliance import statuskey
    from tests.integration.test_server import get_json

    peer.exchange(orm("H1"))
    peer.exchange(orm("H1"))
    peer.exchange(orm("H2", code="XXXX^x^LOCAL", placer="PLX", accession="AX"))
    code, report = get_json(box.web_port, "/healthz", token=statuskey.read(box.config.data_dir))
    hl7 = report["services"]["hl7"]
    assert (code, hl7["state"], hl7["port"]) == (200, "running", box.listener("hl7").port)
    assert (hl7["received"], hl7["AA"], hl7["AE"], hl7["duplicates"]) == (3, 2, 1, 1)


def test_cli_send_injects_the_messages_of_a_file(box: Appliance, tmp_path: Path) -> None:
    import subprocess
    import sys

    good = orm("CLI1").replace(b"\r", b"\n")  # as an editor saves it
    bad = orm("CLI2", code="XXXX^x^LOCAL", placer="PL9", accession="A9").replace(b"\r", b"\n")
    file = tmp_path / "orders.hl7"
    file.write_bytes(good)
    command = [
        sys.executable,
        "-m",
        "appliance",
        "hl7",
        "send",
        str(file),
        "--port",
        str(box.listener("hl7").port),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "MSA|AA|CLI1\n"), proc.stderr
    assert len(steps(box)) == 1
    file.write_bytes(good + bad)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "MSA|AA|CLI1"  # the duplicate: the first ACK again
    assert lines[1].startswith("MSA|AE|CLI2|") and lines[2].startswith("ERR||OBR^1^4|103^")
    assert len(steps(box)) == 1


def test_port_in_use_stops_the_start(start_appliance: Callable[..., Appliance]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            start_appliance({"hl7": HL7 | {"port": taken.getsockname()[1]}})


def test_old_messages_are_pruned(box: Appliance, peer: MllpPeer, monkeypatch: Any) -> None:
    from appliance.hl7 import inbox

    monkeypatch.setattr(inbox, "PRUNE_EVERY", 2)
    assert Ack.parse(peer.exchange(orm("OLD1"))).code == "AA"
    with box.runtime.store.write() as db:
        db.execute("UPDATE hl7_messages SET received_at = '2020-01-01T00:00:00.000Z'")
    peer.exchange(orm("NEW2", placer="PL2", accession="A2", patient_id="P2"))
    rows = box.runtime.store.query("SELECT control_id FROM hl7_messages")
    assert rows == [{"control_id": "NEW2"}]
    assert len(steps(box)) == 2  # the worklist is not touched


def test_station_from_the_one_device_of_that_modality(
    start_appliance: Callable[..., Appliance],
) -> None:
    devices = [{"ae_title": "US_ROOM1", "modality": "US"}, {"ae_title": "DX1", "modality": "DX"},
               {"ae_title": "DX2", "modality": "DX"}]  # fmt: skip
    app = start_appliance({"hl7": HL7, "devices": devices})
    catalog.save(app.runtime.store, Procedure("USAB", "LOCAL", "US Abdomen", "US"))
    catalog.save(app.runtime.store, Procedure("DXCH", "LOCAL", "DX Chest", "DX"))
    with MllpPeer(app.listener("hl7").port) as peer:
        ack = Ack.parse(peer.exchange(orm("S1", code="USAB^US^LOCAL", modality="")))
        assert ack.code == "AA", ack.text
        ambiguous = orm("S2", code="DXCH^DX^LOCAL", modality="", placer="PL2", accession="A2")
        assert Ack.parse(peer.exchange(ambiguous)).errors == [("OBR^1^24", "101")]
    assert [(r["station_ae"], r["modality"]) for r in steps(app)] == [("US_ROOM1", "US")]


@pytest.mark.parametrize(
    "payload",
    [
        b"MSH|^~\\&|RIS|HOSP|||||ORM|S1\r",  # MSH-9 without its event, MSH-11/12 missing
        b"MSH|^~\\&|RIS|HOSP\r",  # MSH cut short
        b"MSH|^~\\&|EVIL\r",  # cut short and not allowed
    ],
)
def test_a_short_msh_still_gets_an_answer(box: Appliance, peer: MllpPeer, payload: bytes) -> None:
    ack = Ack.parse(peer.exchange(payload))
    assert ack.code == "AR" and ack.errors, ack.text
    assert Ack.parse(peer.exchange(orm("AFTER"))).code == "AA"


def test_cli_lists_the_messages_received_with_their_ack(box: Appliance, peer: MllpPeer) -> None:
    import subprocess
    import sys

    peer.exchange(orm("M1"))
    peer.exchange(orm("M1"))
    peer.exchange(orm("M2", code="XXXX^x^LOCAL", placer="PL2", accession="A2"))
    base = [
        sys.executable,
        "-m",
        "appliance",
        "hl7",
        "messages",
        "--data-dir",
        str(box.config.data_dir),
    ]
    out = subprocess.run(base, capture_output=True, text=True, timeout=60)
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 2, out.stderr
    assert "  AE  ORM^O01  RIS^HOSP M2  OBR^1^4: procedure code 'XXXX'" not in lines[0]
    assert " AE " in lines[0] and "M2" in lines[0] and "not in the catalog" in lines[0]
    assert " AA " in lines[1] and "M1 (+1 repeats)" in lines[1]
    failed = subprocess.run([*base, "--failed"], capture_output=True, text=True, timeout=60)
    assert [" AE " in line for line in failed.stdout.splitlines()] == [True]
