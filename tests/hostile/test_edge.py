"""Hostile and careless peers at the DICOM listener's edge, on loopback, bounded in time.

Each test plays the peer over a real socket with hand-built PDUs (tests/rawpeer.py) and
then checks the listener still answers a C-ECHO within a second. The last test checks
that, after everything, memory and threads are back where they started.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appliance.server import Appliance
from tests.helpers import make_config, wait_for
from tests.rawpeer import (
    IMPLICIT,
    VERIFICATION,
    associate_rq,
    closed_within,
    connect,
    echo_seconds,
    item,
    pdu,
    read_pdu,
    rss_bytes,
)

TIMEOUTS = {"associate_timeout": 1.0, "pdu_timeout": 1.5, "network_timeout": 3.0}
CAP = 32  # dicom.max_associations here (default 64): 34 trickling peers must exceed it
A_ABORT, A_ASSOCIATE_RJ, A_ASSOCIATE_AC = 0x07, 0x03, 0x02
# pynetdicom's reader and reactor threads must survive whatever the peer sends.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    cfg = make_config(
        tmp_path_factory.mktemp("edge") / "data", {"dicom": {**TIMEOUTS, "max_associations": CAP}}
    )
    appliance = Appliance(cfg, only=("dicom",)).start()
    echo_seconds(appliance.dicom_port)  # warm: imports, first association
    yield appliance
    appliance.stop()


@pytest.fixture(scope="module")
def baseline(app: Appliance) -> dict[str, int]:
    time.sleep(0.2)
    return {"rss": rss_bytes(), "threads": threading.active_count()}


def _abort_reason(answer: tuple[int, bytes] | None) -> tuple[int, int]:
    assert answer is not None, "the connection closed without an A-ABORT"
    pdu_type, body = answer
    assert pdu_type == A_ABORT, f"PDU type 0x{pdu_type:02X}, not A-ABORT"
    return body[2], body[3]  # source, reason/diagnostic (PS3.8 9.3.8)


def _serves(app: Appliance) -> None:
    assert echo_seconds(app.dicom_port) < 1.0


def test_baseline_is_taken_first(baseline: dict[str, int]) -> None:
    assert baseline["threads"] > 0


def test_two_thousand_junk_connections_leave_echo_working(app: Appliance) -> None:
    port = app.dicom_port
    for n in range(2000):
        sock = connect(port, source=f"127.0.{n % 8}.{1 + n % 200}")
        if n % 3 == 0:
            sock.sendall(os.urandom(n % 50))
        sock.close()
        if n % 500 == 499:
            _serves(app)
    _serves(app)


def test_forty_silent_sockets_do_not_keep_a_modality_out(app: Appliance) -> None:
    silent = [connect(app.dicom_port, source=f"127.0.1.{1 + n % 3}") for n in range(40)]
    try:
        # No pause: however fresh, the one waiting longest makes room for a real peer.
        # From the same addresses and from a new one, while the 40 are still open.
        assert echo_seconds(app.dicom_port, source="127.0.1.1") < 1.0
        assert echo_seconds(app.dicom_port, source="127.0.2.1") < 1.0
    finally:
        for sock in silent:
            sock.close()


def test_a_silent_socket_is_closed_after_the_associate_timeout(app: Appliance) -> None:
    sock = connect(app.dicom_port)
    took = closed_within(sock, 5)
    assert took is not None and took < TIMEOUTS["associate_timeout"] + 1.0
    sock.close()


def test_a_trickled_associate_request_is_cut_at_the_associate_timeout(app: Appliance) -> None:
    sock = connect(app.dicom_port)
    rq = associate_rq()
    start = time.monotonic()
    closed = False
    for byte in rq:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            closed = True
            break
        if closed_within(sock, 0.1) is not None:
            closed = True
            break
    took = time.monotonic() - start
    sock.close()
    assert closed and took < TIMEOUTS["associate_timeout"] + 1.0
    _serves(app)


def test_a_trickled_pdu_after_association_is_cut_at_the_pdu_timeout(app: Appliance) -> None:
    sock = connect(app.dicom_port)
    sock.sendall(associate_rq())
    answer = read_pdu(sock)
    assert answer is not None and answer[0] == A_ASSOCIATE_AC
    sock.sendall(struct.pack(">BBL", 0x04, 0, 1000))  # a P-DATA-TF of 1000 bytes...
    start = time.monotonic()
    closed = None
    while time.monotonic() - start < 6:
        try:
            sock.sendall(b"\0")  # ...one byte every 0.2 s: never idle, never complete
        except OSError:
            closed = time.monotonic() - start
            break
        closed = closed_within(sock, 0.2)
        if closed is not None:
            closed = time.monotonic() - start
            break
    sock.close()
    assert closed is not None, "a trickling peer was never dropped"
    assert closed < TIMEOUTS["pdu_timeout"] + 1.0
    _serves(app)


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        (pdu(0x02, bytes(68)), 0x02),  # A-ASSOCIATE-AC: unexpected PDU
        (pdu(0x03, bytes(4)), 0x02),
        (pdu(0x04, item(0, b"\x01\x03")), 0x02),  # P-DATA-TF before association
        (pdu(0x05, bytes(4)), 0x02),
        (pdu(0x06, bytes(4)), 0x02),
        (pdu(0x07, bytes(4)), 0x02),
        (pdu(0x55, b"junk"), 0x01),  # unrecognized PDU type
        (struct.pack(">BBL", 0x01, 0, 0xFFFFFFFF), 0x06),  # 4 GiB declared
        (struct.pack(">BBL", 0x01, 0, 65 * 1024), 0x06),  # above the 64 KiB cap
        (pdu(0x01, bytes(10)), 0x06),  # shorter than its fixed fields
    ],
    ids=[
        "AC",
        "RJ",
        "P-DATA",
        "RELEASE-RQ",
        "RELEASE-RP",
        "ABORT",
        "0x55",
        "4GiB",
        "65KiB",
        "short",
    ],
)
def test_anything_but_a_sound_associate_request_first_gets_an_abort(
    app: Appliance, first: bytes, reason: int
) -> None:
    sock = connect(app.dicom_port)
    sock.sendall(first)
    assert _abort_reason(read_pdu(sock)) == (0x02, reason)
    assert closed_within(sock, 2) is not None
    sock.close()
    _serves(app)


def test_declared_huge_pdus_do_not_grow_memory(app: Appliance) -> None:
    before = rss_bytes()
    socks = [connect(app.dicom_port, source=f"127.0.3.{n + 1}") for n in range(4)]
    for sock in socks:
        sock.sendall(struct.pack(">BBL", 0x01, 0, 0xFFFFFFFF) + os.urandom(60000))
    for sock in socks:
        read_pdu(sock)
        sock.close()
    # After association too: a P-DATA-TF declaring 4 GiB is refused, not buffered.
    sock = connect(app.dicom_port)
    sock.sendall(associate_rq())
    assert read_pdu(sock)[0] == A_ASSOCIATE_AC  # type: ignore[index]
    sock.sendall(struct.pack(">BBL", 0x04, 0, 0xFFFFFFFF) + os.urandom(60000))
    assert closed_within(sock, 3) is not None
    sock.close()
    assert rss_bytes() - before < 20 * 1024 * 1024
    _serves(app)


@pytest.mark.parametrize("cx_id", [2, 0, 254])
def test_an_even_presentation_context_id_gets_an_abort(app: Appliance, cx_id: int) -> None:
    sock = connect(app.dicom_port)
    contexts = [(1, VERIFICATION, [IMPLICIT]), (cx_id, VERIFICATION, [IMPLICIT])]
    sock.sendall(associate_rq(contexts=contexts))
    assert _abort_reason(read_pdu(sock)) == (0x02, 0x06)
    assert closed_within(sock, 2) is not None
    sock.close()
    _serves(app)


def test_two_hundred_presentation_contexts_get_an_abort(app: Appliance) -> None:
    contexts = [((2 * n + 1) % 256, VERIFICATION, [IMPLICIT]) for n in range(200)]
    sock = connect(app.dicom_port)
    sock.sendall(associate_rq(contexts=contexts))
    assert _abort_reason(read_pdu(sock)) == (0x02, 0x06)  # IDs repeat after 255
    sock.close()
    _serves(app)


def test_a_hundred_and_twenty_eight_contexts_are_negotiated(app: Appliance) -> None:
    contexts = [(2 * n + 1, VERIFICATION, [IMPLICIT]) for n in range(128)]
    sock = connect(app.dicom_port)
    sock.sendall(associate_rq(contexts=contexts))
    answer = read_pdu(sock)
    assert answer is not None and answer[0] == A_ASSOCIATE_AC
    sock.sendall(pdu(0x05, bytes(4)))  # A-RELEASE-RQ
    assert read_pdu(sock)[0] == 0x06  # type: ignore[index]
    sock.close()


@pytest.mark.parametrize(
    ("calling", "called", "reason"),
    [
        (b"BAD\nTITLE", b"APPLIANCE", 3),
        (b"\x00\x00\x00", b"APPLIANCE", 3),
        (b"A\\B", b"APPLIANCE", 3),
        (b"\x1b[31mRED", b"APPLIANCE", 3),
        (b"           ", b"APPLIANCE", 3),
        (b"HOSTILE", b"APP\x07LIANCE", 7),
    ],
)
def test_unusable_ae_titles_get_a_permanent_reject(
    app: Appliance, calling: bytes, called: bytes, reason: int, caplog: pytest.LogCaptureFixture
) -> None:
    sock = connect(app.dicom_port)
    sock.sendall(associate_rq(called=called, calling=calling))
    answer = read_pdu(sock)
    assert answer is not None and answer[0] == A_ASSOCIATE_RJ
    assert tuple(answer[1][1:4]) == (1, 1, reason)  # permanent, service-user, reason
    sock.close()
    assert not any("\n" in r.getMessage() or "\x1b" in r.getMessage() for r in caplog.records)
    _serves(app)


def test_a_path_like_ae_title_is_only_a_name(app: Appliance, tmp_path: Path) -> None:
    """'/' and '.' are legal AE characters: it associates (verify-only) and nothing
    outside the data directory appears."""
    outside = Path(app.config.data_dir).parent
    before = set(outside.rglob("*"))
    sock = connect(app.dicom_port)
    sock.sendall(associate_rq(calling=b"../../../etc/x"))
    answer = read_pdu(sock)
    assert answer is not None and answer[0] == A_ASSOCIATE_AC
    sock.sendall(pdu(0x05, bytes(4)))
    read_pdu(sock)
    sock.close()
    after = {p for p in outside.rglob("*") if not str(p).startswith(str(app.config.data_dir))}
    assert after <= before


@pytest.mark.parametrize(
    "second",
    [
        associate_rq(),  # A-ASSOCIATE-RQ again
        pdu(0x02, bytes(68)),  # A-ASSOCIATE-AC from the requestor
        pdu(0x03, bytes(4)),
        pdu(0x06, bytes(4)),  # A-RELEASE-RP without a request
        pdu(0x55, b"junk"),
        pdu(0x04, item(0, b"\x02\x03")),  # a PDV item with a broken length
        pdu(0x04, struct.pack(">L", 3) + b"\x02\x03\x00"),  # a PDV on an even context ID
        pdu(0x04, struct.pack(">L", 4) + b"\x03\x03\x00\x00"),  # a context not negotiated
        pdu(0x04, struct.pack(">L", 10) + b"\x01\x03" + bytes(8)),  # no Command Field
        pdu(0x04, struct.pack(">L", 6) + b"\x01\x02" + bytes(4)),  # data, no command
    ],
    ids=["RQ", "AC", "RJ", "RELEASE-RP", "0x55", "bad-PDV", "even-PDV", "cx-3", "no-field", "data"],
)
def test_out_of_order_pdus_after_association_end_it(app: Appliance, second: bytes) -> None:
    sock = connect(app.dicom_port)
    sock.sendall(associate_rq())
    assert read_pdu(sock)[0] == A_ASSOCIATE_AC  # type: ignore[index]
    sock.sendall(second)
    answer = read_pdu(sock, timeout=3)
    assert answer is None or answer[0] == A_ABORT
    assert closed_within(sock, 3) is not None
    sock.close()
    _serves(app)


def test_random_bytes_and_truncated_pdus(app: Appliance) -> None:
    rng = random.Random(11)
    rq = associate_rq()
    for n in range(120):
        sock = connect(app.dicom_port, source=f"127.0.4.{1 + n % 100}")
        kind = n % 4
        if kind == 0:
            payload = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 3000)))
        elif kind == 1:
            payload = rq[: rng.randint(1, len(rq) - 1)]  # truncated, then closed
        elif kind == 2:  # a sound header, a body of random bytes
            body = bytes(rng.getrandbits(8) for _ in range(rng.randint(68, 600)))
            payload = struct.pack(">BBL", 1, 0, len(body)) + body
        else:  # a sound request with random bytes flipped
            flipped = bytearray(rq)
            for _ in range(3):
                flipped[rng.randrange(6, len(flipped))] = rng.getrandbits(8)
            payload = bytes(flipped)
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            closed_within(sock, 2)
        except OSError:
            pass
        sock.close()
    _serves(app)


def test_thirty_four_trickling_peers_do_not_stop_echo(app: Appliance) -> None:
    """Before association they make room for a real peer; inside a P-DATA they hold
    association slots only until the PDU timeout."""
    rq = associate_rq()
    before = [connect(app.dicom_port, source=f"127.0.5.{n + 1}") for n in range(34)]
    for sock in before:
        sock.sendall(rq[:3])
    time.sleep(0.6)
    assert echo_seconds(app.dicom_port) < 1.0
    for sock in before:
        sock.close()
    inside = []
    for n in range(34):
        sock = connect(app.dicom_port, source=f"127.0.6.{n + 1}")
        sock.sendall(rq)
        answer = read_pdu(sock)
        if answer is not None and answer[0] == A_ASSOCIATE_AC:
            sock.sendall(struct.pack(">BBL", 0x04, 0, 1000) + b"\0")
            inside.append(sock)
        else:
            sock.close()
    assert len(inside) == CAP  # dicom.max_associations; the others were rejected
    start = time.monotonic()
    deadline = start + TIMEOUTS["pdu_timeout"] + 3
    while time.monotonic() < deadline:
        for sock in inside:
            with contextlib.suppress(OSError):
                sock.sendall(b"\0")
        try:
            echo_seconds(app.dicom_port)
            break
        except AssertionError:
            time.sleep(0.1)
    took = time.monotonic() - start
    for sock in inside:
        sock.close()
    assert took < TIMEOUTS["pdu_timeout"] + 1.5, f"C-ECHO refused for {took:.1f} s"
    _serves(app)


def test_connections_per_address_are_limited(start_appliance: Callable[..., Appliance]) -> None:
    other = start_appliance({"dicom": {"max_per_address": 3, **TIMEOUTS}})
    held = []
    for _ in range(3):
        sock = connect(other.dicom_port)
        sock.sendall(associate_rq())
        assert read_pdu(sock)[0] == A_ASSOCIATE_AC  # type: ignore[index]
        held.append(sock)
    try:
        sock = connect(other.dicom_port)
        assert closed_within(sock, 2) is not None  # the fourth from 127.0.0.1: closed
        sock.close()
        assert echo_seconds(other.dicom_port, source="127.0.7.1") < 1.0
    finally:
        for sock in held:
            sock.close()

    def echoes() -> bool:
        try:
            return echo_seconds(other.dicom_port) < 1.0
        except AssertionError:  # refused while the held ones are still being closed
            return False

    wait_for(echoes, timeout=5)


def test_afterwards_memory_and_threads_are_back(app: Appliance, baseline: dict[str, int]) -> None:
    _serves(app)
    wait_for(lambda: threading.active_count() <= baseline["threads"], timeout=10)
    assert rss_bytes() - baseline["rss"] < 20 * 1024 * 1024
    assert echo_seconds(app.dicom_port) < 1.0
