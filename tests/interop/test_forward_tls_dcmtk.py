"""TLS toward a destination (issue 13), judged by DCMTK storescp +tls with its default
BCP 195 non-downgrading profile and --require-peer-cert: the box verifies the PACS's
certificate against the destination's tls_ca and presents its own. A PACS whose
certificate no CA of ours signed, or whose certificate has expired, or that refuses the box's own certificate, gets nothing: the
rows are held with the reason, the destination is backed off, one log line each try."""

from __future__ import annotations

import logging
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from appliance import accounts, status
from appliance.forward import queue
from appliance.server import Appliance
from tests import tlscerts
from tests.forward_factories import write_series
from tests.forward_helpers import forward_config, pacs_destination, send_files, senders
from tests.helpers import peer_env, require_peer, wait_for
from tests.orthanc import free_port
from tests.webclient import PASSWORD, SocketClient

pytestmark = pytest.mark.interop


class TlsStorescp:
    """storescp +tls on a free port: its pair, and the CA file it trusts for clients."""

    def __init__(self, out: Path, pair: tlscerts.Pair, trusted: Path) -> None:
        self.out, self.port = out, free_port()
        out.mkdir(parents=True)
        self.proc = subprocess.Popen(
            [require_peer("storescp"), "-aet", "TLSPACS", "+tls", str(pair.key), str(pair.cert),
             "+cf", str(trusted), "-od", str(out), str(self.port)],
            env=peer_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        wait_for(self._listening, timeout=10)

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"storescp exited: {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def uids(self) -> set[str]:
        return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in self.out.iterdir()}

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, tlscerts.Pair]:
    """A clinic CA with the PACS's and the box's certificates; another CA; an expired one."""
    ca, ca_key, ca_cert = tlscerts.make_ca(tmp_path / "pki", "Clinic CA")
    other, _, _ = tlscerts.make_ca(tmp_path / "pki", "Other CA")
    return {
        "ca": ca,
        "other": other,
        "pacs": tlscerts.issue(tmp_path / "pki", "pacs", ca_key, ca_cert),
        "expired": tlscerts.issue(tmp_path / "pki", "old-pacs", ca_key, ca_cert, expired=True),
        "box": tlscerts.issue(tmp_path / "pki", "box", ca_key, ca_cert),
    }


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Callable[..., TlsStorescp]]:
    started: list[TlsStorescp] = []

    def start(pair: tlscerts.Pair, trusted: Path) -> TlsStorescp:
        scp = TlsStorescp(tmp_path / f"scp{len(started)}", pair, trusted)
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop()


def _box(
    start: Callable[..., Appliance], pki: dict[str, tlscerts.Pair], port: int, ca: Path
) -> Appliance:
    dest = pacs_destination("tlspacs", "TLSPACS", port, tls=True, tls_ca=str(ca))
    raw = forward_config([dest])
    raw["dicom"] = {"tls_cert": str(pki["box"].cert), "tls_key": str(pki["box"].key)}
    return start(raw)


def _rows(app: Appliance) -> list[dict]:
    return app.runtime.store.query("SELECT state, last_error FROM forward_queue ORDER BY id")


def test_forwards_over_tls_to_storescp(
    start_appliance: Callable[..., Appliance], storescp: Callable[..., TlsStorescp],
    pki: dict[str, tlscerts.Pair], tmp_path: Path,
) -> None:  # fmt: skip
    pacs = storescp(pki["pacs"], trusted=pki["ca"].cert)
    app = _box(start_appliance, pki, pacs.port, pki["ca"].cert)
    files = write_series(tmp_path / "in", 3)
    assert send_files(app.dicom_port, files) == [status.SUCCESS] * 3
    sent = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    wait_for(lambda: pacs.uids() == sent, timeout=30)
    wait_for(lambda: {r["state"] for r in _rows(app)} == {queue.DELIVERED}, timeout=10)
    # The sender's own C-STORE wire (appliance/forward/store_wire.py) wrote them through TLS.
    assert sum(s.wire_stores for s in senders(app, "tlspacs")) == 3


@pytest.mark.parametrize("case", ["unknown CA", "expired", "our certificate refused"])
def test_a_pacs_certificate_we_cannot_trust_holds_the_rows(
    case: str, start_appliance: Callable[..., Appliance], storescp: Callable[..., TlsStorescp],
    pki: dict[str, tlscerts.Pair], tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    if case == "unknown CA":
        pacs = storescp(pki["pacs"], trusted=pki["ca"].cert)
        app = _box(start_appliance, pki, pacs.port, pki["other"].cert)
        expected = "self-signed certificate in certificate chain"  # a CA we do not know
    elif case == "expired":
        pacs = storescp(pki["expired"], trusted=pki["ca"].cert)
        app = _box(start_appliance, pki, pacs.port, pki["ca"].cert)
        expected = "certificate has expired"
    else:  # the PACS trusts another CA than the one that signed the box's certificate
        pacs = storescp(pki["pacs"], trusted=pki["other"].cert)
        app = _box(start_appliance, pki, pacs.port, pki["ca"].cert)
        expected = "the peer refused our certificate"
    prefix = "TLS: the peer refused" if case.startswith("our") else "TLS: certificate refused"
    caplog.set_level(logging.WARNING)
    assert send_files(app.dicom_port, write_series(tmp_path / "in", 2)) == [status.SUCCESS] * 2
    (sender,) = senders(app, "tlspacs")
    wait_for(lambda: sender.last_error, timeout=20)
    assert expected in sender.last_error and "TLSPACS@127.0.0.1" in sender.last_error
    rows = wait_for(lambda: [r for r in _rows(app) if r["last_error"]] or None, timeout=10)
    assert all(r["state"] == queue.WAITING for r in rows)
    assert all(prefix in r["last_error"] for r in rows)
    assert expected in rows[0]["last_error"]
    lines = [r for r in caplog.records if prefix in r.getMessage()]
    assert 1 <= len(lines) <= sender.failures  # one line a try
    assert not [r for r in caplog.records if r.name.startswith("pynetdicom")]
    assert pacs.uids() == set()
    # The queue page says why the rows wait.
    accounts.create_user(app.runtime.store, "admin", PASSWORD, accounts.ADMIN)
    admin = SocketClient(app.web_port)
    assert admin.sign_in("admin").status == 302
    page = admin.get("/admin/destinations/tlspacs/waiting")
    assert page.status == 200 and expected in page.text
