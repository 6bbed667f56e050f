"""Hostile peers on the DICOM TLS port: junk instead of a ClientHello, handshakes cut
short, TLS 1.1, silence. Each is dropped within the associate timeout; afterwards a
C-ECHO over TLS answers within a second."""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from appliance.server import Appliance
from tests.helpers import make_config
from tests.rawpeer import closed_within, connect

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    cfg = make_config(
        tmp_path_factory.mktemp("tls") / "data", {"dicom": {"associate_timeout": 1.0}}
    )
    appliance = Appliance(cfg, only=("dicom",)).start()
    yield appliance
    appliance.stop()


def _tls_echo_seconds(app: Appliance) -> float:
    ctx = ssl.create_default_context(
        cafile=str(Path(app.config.data_dir) / "tls" / "appliance.crt")
    )
    ae = AE(ae_title="TLSSCU")
    ae.add_requested_context(Verification)
    start = time.monotonic()
    assoc = ae.associate(
        "127.0.0.1", app.dicom_tls_port, ae_title="APPLIANCE", tls_args=(ctx, "localhost")
    )
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    return time.monotonic() - start


def test_junk_truncated_and_silent_peers_are_dropped(app: Appliance) -> None:
    hello = _client_hello(app)
    peers = []
    for n in range(60):
        sock = connect(app.dicom_tls_port, source=f"127.0.8.{1 + n % 50}")
        kind = n % 3
        if kind == 0:
            sock.sendall(os.urandom(200 + n))
        elif kind == 1:
            sock.sendall(hello[: len(hello) // 2])  # a ClientHello cut in half
        peers.append(sock)
    time.sleep(0.6)  # older than the edge's stale mark: they make room for a real peer
    assert _tls_echo_seconds(app) < 1.0  # while they are all open
    for sock in peers:
        assert closed_within(sock, 3) is not None
        sock.close()
    assert _tls_echo_seconds(app) < 1.0


def test_tls_1_1_is_refused(app: Appliance) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with socket.create_connection(("127.0.0.1", app.dicom_tls_port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, OSError)):
            ctx.wrap_socket(raw, server_hostname="localhost")
    assert _tls_echo_seconds(app) < 1.0


def _client_hello(app: Appliance) -> bytes:
    """The first bytes a real TLS client sends (captured through a socket pair)."""
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
