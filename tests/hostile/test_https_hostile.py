"""Hostile clients on the HTTPS port and the plain-HTTP redirect (issue 13): junk instead of
a ClientHello, a ClientHello cut short, plain HTTP, slowloris headers after a good
handshake, many idle sockets, too many from one address, an oversized body. Each is
dropped within the header timeout, and a real request still answers quickly."""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.server import Appliance
from tests.helpers import make_config, wait_for
from tests.rawpeer import closed_within, connect
from tests.webclient import SocketClient, https_context

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

HEADER_TIMEOUT = 1.0
PER_ADDRESS = 8


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    cfg = make_config(
        tmp_path_factory.mktemp("https") / "data",
        {"web": {"header_timeout": HEADER_TIMEOUT, "threads": 4, "max_per_address": PER_ADDRESS}},
    )
    appliance = Appliance(cfg, only=("web",)).start()
    yield appliance
    appliance.stop()


def _seconds_for_a_page(app: Appliance, source: str = "127.0.0.1") -> float:
    ca = Path(app.config.data_dir) / "tls" / "appliance.crt"
    start = time.monotonic()
    reply = SocketClient(app.web_port, source=source, ca=ca).get("/login")
    assert reply.status in (200, 302), reply.status
    return time.monotonic() - start


def _tls(app: Appliance, source: str) -> ssl.SSLSocket:
    """A finished handshake from ``source``: the peer may now send (or not) its request."""
    raw = connect(app.web_port, source=source)
    return https_context().wrap_socket(raw, server_hostname="127.0.0.1")


def _client_hello() -> bytes:
    ctx = ssl.create_default_context()
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        tls = ctx.wrap_socket(a, server_hostname="localhost", do_handshake_on_connect=False)
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return b.recv(65536)
    finally:
        a.close()
        b.close()


def _open_connections(app: Appliance) -> int:
    assert app._web_server is not None
    return int(app._web_server.health()["connections"])


def test_junk_half_hellos_plain_http_and_silence_are_dropped(app: Appliance) -> None:
    hello = _client_hello()
    peers = []
    for n in range(40):  # 5 per address: under the per-address cap
        sock = connect(app.web_port, source=f"127.0.9.{1 + n // 5}")
        kind = n % 4
        if kind == 0:
            sock.sendall(os.urandom(300 + n))
        elif kind == 1:
            sock.sendall(hello[: len(hello) // 2])  # a ClientHello cut in half
        elif kind == 2:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: box\r\n\r\n")  # plain HTTP on the TLS port
        peers.append(sock)  # kind 3: silent
    assert _seconds_for_a_page(app) < 1.0  # while they are all open
    for sock in peers:
        assert closed_within(sock, HEADER_TIMEOUT + 2) is not None
        sock.close()
    assert _seconds_for_a_page(app) < 1.0
    wait_for(lambda: _open_connections(app) == 0, timeout=3)


def test_slowloris_headers_are_cut_at_the_header_timeout(app: Appliance) -> None:
    """More trickling peers than worker threads: each is closed at the deadline however
    steadily it trickles, so a real request waits at most that long."""
    slow = [_tls(app, f"127.0.10.{n + 1}") for n in range(6)]  # threads = 4
    start = time.monotonic()
    request = b"GET /login HTTP/1.1\r\nHost: box\r\nX-Pad: " + b"a" * 40
    closed: dict[int, float] = {}
    sent = 0
    while len(closed) < len(slow) and time.monotonic() - start < HEADER_TIMEOUT + 4:
        for i, sock in enumerate(slow):
            if i in closed:
                continue
            try:
                sock.sendall(request[sent % len(request) : sent % len(request) + 1])
            except OSError:
                closed[i] = time.monotonic() - start
        sent += 1
        time.sleep(0.1)
    assert len(closed) == len(slow), f"{len(slow) - len(closed)} slow peers still open"
    assert max(closed.values()) < HEADER_TIMEOUT + 2.5
    for sock in slow:
        sock.close()
    assert _seconds_for_a_page(app) < 1.0


def test_a_few_slowloris_peers_leave_the_page_fast(app: Appliance) -> None:
    slow = [_tls(app, "127.0.11.1") for _ in range(2)]  # fewer than the worker threads
    for sock in slow:
        sock.sendall(b"GET / HTTP/1.1\r\nHost:")
    assert _seconds_for_a_page(app) < 1.0
    for sock in slow:
        assert closed_within(sock, HEADER_TIMEOUT + 2) is not None
        sock.close()


def test_many_idle_sockets_hold_no_worker(app: Appliance) -> None:
    idle = [connect(app.web_port, source=f"127.0.12.{1 + n // 6}") for n in range(120)]
    idle += [connect(app.web_http_port, source=f"127.0.13.{1 + n // 6}") for n in range(30)]
    times = [_seconds_for_a_page(app) for _ in range(3)]
    assert max(times) < 1.0, times
    for sock in idle:
        assert closed_within(sock, HEADER_TIMEOUT + 2) is not None
        sock.close()


def test_one_address_cannot_take_every_connection(app: Appliance) -> None:
    mine = [connect(app.web_port, source="127.0.14.1") for _ in range(PER_ADDRESS)]
    extra = connect(app.web_port, source="127.0.14.1")
    assert closed_within(extra, 0.8) is not None  # over the cap: closed at once
    extra.close()
    assert _seconds_for_a_page(app, source="127.0.14.2") < 1.0  # another address is served
    for sock in mine:
        sock.close()


def test_oversized_body_and_headers_are_refused(app: Appliance) -> None:
    client = SocketClient(app.web_port)
    big = client.request(
        "POST", "/login", headers={"Content-Length": str(64 * 1024 * 1024)}
    )  # the header alone: the body never comes
    assert big.status == 413
    huge = client.get("/login", **{"X-Junk": "x" * (80 * 1024)})
    assert huge.status in (413, 431, 400)
    assert _seconds_for_a_page(app) < 1.0


def test_the_redirect_port_cuts_slow_headers_and_keeps_answering(app: Appliance) -> None:
    assert app.web_http_port
    slow = [connect(app.web_http_port, source=f"127.0.15.{n + 1}") for n in range(6)]
    for sock in slow:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: box\r\nX-Pad: aaa")  # and never the end
    for sock in slow:
        assert closed_within(sock, HEADER_TIMEOUT + 2.5) is not None
        sock.close()
    plain = connect(app.web_http_port)
    start = time.monotonic()
    plain.sendall(b"GET /board HTTP/1.1\r\nHost: box.example\r\nConnection: close\r\n\r\n")
    answer = b""
    while chunk := plain.recv(4096):
        answer += chunk
    plain.close()
    assert time.monotonic() - start < 1.0
    assert answer.startswith(b"HTTP/1.1 301 ")
    assert f"Location: https://box.example:{app.web_port}/board".encode() in answer
