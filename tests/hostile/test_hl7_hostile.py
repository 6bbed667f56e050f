"""Hostile and careless peers on the MLLP listener: after each, it still ACKs a good order."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable

import pytest

from appliance import catalog
from appliance.catalog import Procedure
from appliance.server import Appliance
from tests.helpers import wait_for
from tests.hl7peer import CR, FS, VT, Ack, MllpPeer, orm

HL7 = {
    "enabled": True,
    "host": "127.0.0.1",
    "port": 0,
    "allowed_senders": ["RIS^HOSP"],
    "stations": {"CT": "CT1"},
    "idle_timeout": 1.0,
    "max_message_kb": 64,
    "max_connections": 16,
}


@pytest.fixture
def box(start_appliance: Callable[..., Appliance]) -> Appliance:
    app = start_appliance({"hl7": HL7})
    catalog.save(app.runtime.store, Procedure("CTCH", "LOCAL", "CT Chest", "CT"))
    return app


def still_acks(box: Appliance, control_id: str = "GOOD") -> None:
    with MllpPeer(box.listener("hl7").port) as peer:
        ack = Ack.parse(peer.exchange(orm(control_id)))
    assert (ack.code, ack.control_id) == ("AA", control_id), ack.text


def counts(box: Appliance) -> dict[str, int]:
    return box.health()["services"]["hl7"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_bytes(box: Appliance, seed: int) -> None:
    rng = random.Random(seed)
    with MllpPeer(box.listener("hl7").port) as peer:
        try:
            peer.send_raw(bytes(rng.getrandbits(8) for _ in range(100_000)))
        except ConnectionError:
            pass  # closed while we were still sending: fine
        assert peer.wait_closed(timeout=5)
    still_acks(box)


def test_no_start_block_closes_the_connection(box: Appliance) -> None:
    with MllpPeer(box.listener("hl7").port) as peer:
        peer.send_raw(orm("NOVT") + FS + CR)
        assert peer.wait_closed(timeout=5)
    assert counts(box)["framing_errors"] == 1
    still_acks(box)


def test_message_without_end_block_is_closed_at_the_idle_timeout(box: Appliance) -> None:
    with MllpPeer(box.listener("hl7").port) as peer:
        peer.send_raw(VT + orm("NOEND"))
        started = time.monotonic()
        assert peer.wait_closed(timeout=5)
        assert time.monotonic() - started < 3
    assert counts(box)["idle_closed"] == 1
    assert box.runtime.store.query("SELECT count(*) AS n FROM steps")[0]["n"] == 0
    still_acks(box)


def test_a_trickling_message_is_bounded_by_the_idle_timeout(box: Appliance) -> None:
    with MllpPeer(box.listener("hl7").port) as peer:
        started = time.monotonic()
        closed = False
        for byte in VT + orm("SLOW"):
            try:
                peer.send_raw(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if time.monotonic() - started > 5:
                break
            time.sleep(0.05)  # a slow peer: one byte every 50 ms, never a whole message in 1 s
        assert closed or peer.wait_closed(timeout=2)
        assert time.monotonic() - started < 4
    still_acks(box)


def test_oversized_message_gets_ar_and_a_close(box: Appliance) -> None:
    big = orm("HUGE").rstrip(b"\r") + b"\rNTE|1||" + b"x" * 200_000 + b"\r"
    with MllpPeer(box.listener("hl7").port) as peer:
        try:
            peer.send(big)
        except ConnectionError:
            pass
        ack = Ack.parse(peer.receive())
        assert ack.code == "AR" and "larger than 64 KiB" in ack.text
        assert peer.wait_closed(timeout=5)
    assert counts(box)["oversized"] == 1
    still_acks(box)


def test_200_connections(box: Appliance) -> None:
    socks = [
        socket.create_connection(("127.0.0.1", box.listener("hl7").port), timeout=5)
        for _ in range(200)
    ]
    seen: list[int] = []

    def all_dealt_with() -> bool:  # at most 16 served at once, the others closed
        c = counts(box)
        seen.append(c["connections"])
        closed = ("connections_refused", "connections_evicted", "idle_closed")
        return sum(c.get(k, 0) for k in closed) == 200

    try:
        wait_for(all_dealt_with, timeout=20)
        assert max(seen) <= 16 and counts(box)["connections_refused"] >= 100
    finally:
        for s in socks:
            s.close()
    still_acks(box)


def test_a_ris_that_sent_orders_keeps_its_link_while_silent_peers_come_and_go(
    start_appliance: Callable[..., Appliance],
) -> None:
    box = start_appliance({"hl7": HL7 | {"idle_timeout": 30.0}})
    catalog.save(box.runtime.store, Procedure("CTCH", "LOCAL", "CT Chest", "CT"))
    with MllpPeer(box.listener("hl7").port) as ris:
        assert Ack.parse(ris.exchange(orm("KEEP1"))).code == "AA"
        first = [
            socket.create_connection(("127.0.0.1", box.listener("hl7").port)) for _ in range(15)
        ]
        wait_for(lambda: counts(box)["connections"] == 16, timeout=5)
        time.sleep(0.6)  # let them age past EVICT_AFTER, so the next ones make room
        second = [
            socket.create_connection(("127.0.0.1", box.listener("hl7").port)) for _ in range(5)
        ]
        wait_for(lambda: counts(box).get("connections_evicted", 0) == 5, timeout=5)
        ack = Ack.parse(ris.exchange(orm("KEEP2", placer="PL2", accession="A2", patient_id="P2")))
        assert ack.code == "AA"
        for s in first + second:
            s.close()
    assert counts(box).get("connections_refused", 0) == 0


def test_peer_closing_mid_message_leaves_nothing(box: Appliance) -> None:
    with MllpPeer(box.listener("hl7").port) as peer:
        peer.send_raw(VT + orm("HALF")[:80])
    wait_for(lambda: counts(box)["connections"] == 0, timeout=5)
    assert box.runtime.store.query("SELECT count(*) AS n FROM hl7_messages")[0]["n"] == 0
    still_acks(box)


def test_stop_is_prompt_with_connections_open(start_appliance: Callable[..., Appliance]) -> None:
    app = start_appliance({"hl7": HL7 | {"idle_timeout": 60.0}})
    peers = [MllpPeer(app.listener("hl7").port) for _ in range(5)]
    for p in peers:
        p.send_raw(VT + b"MSH|")
    wait_for(lambda: app.health()["services"]["hl7"]["connections"] == 5, timeout=5)
    started = time.monotonic()
    app.stop()
    assert time.monotonic() - started < 3
    assert all(p.wait_closed(timeout=2) for p in peers)
    for p in peers:
        p.close()
