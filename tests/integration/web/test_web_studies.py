"""The Studies page against a live appliance: studies stored by C-STORE, listed and
searched over HTTP, their thumbnails rendered, and "Send to" a pynetdicom destination
and to a device that is DCMTK's storescp: the images arrive byte for byte, through the
forward queue (rows, audit, queue page)."""

from __future__ import annotations

import io
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

from appliance import accounts
from appliance.server import Appliance
from tests.forward_helpers import FakePacs
from tests.helpers import make_config, peer_env, require_peer, wait_for
from tests.orthanc import free_port
from tests.qr_helpers import JAPANESE, Held, qr_config, store_studies
from tests.webclient import PASSWORD, inline_code


class RawSCP:
    """A pynetdicom Storage SCP keeping each data set's bytes as received."""

    def __init__(self, ae_title: str = "PACS") -> None:
        self.received: dict[str, bytes] = {}
        self.lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )
        self.port = int(self.server.server_address[1])

    def _store(self, event: Any) -> int:
        # The appliance sets pynetdicom's STORE_RECV_CHUNKED_DATASET (one process here):
        # the data set is then in a file, written as received after a file meta group.
        path = getattr(event, "dataset_path", None)
        raw = dataset_bytes(Path(path)) if path else event.request.DataSet.getvalue()
        uid = str(event.request.AffectedSOPInstanceUID)
        with self.lock:
            self.received[uid] = raw
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


class StoreSCP:
    """DCMTK storescp as the device WS3D on a free loopback port (files as received)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        out.mkdir(parents=True)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [require_peer("storescp"), "-aet", "WS3D", "-od", str(out), "-B", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=peer_env(),
        )  # fmt: skip
        wait_for(self._listening, timeout=10)

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError("storescp exited")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def files(self) -> list[Path]:
        return sorted(self.out.iterdir())

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def dataset_bytes(path: Path) -> bytes:
    """A DICOM file's data set: the bytes after the preamble and the file meta group."""
    meta = read_file_meta_info(path)
    return path.read_bytes()[132 + 12 + int(meta.FileMetaInformationGroupLength) :]


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("studies")
    pacs = RawSCP()
    ws = StoreSCP(tmp / "ws")
    raw = qr_config()
    raw["devices"].append({"ae_title": "WS3D", "host": "127.0.0.1", "port": ws.port})
    # A viewer that is out of resources once (retried), then refuses one image for good.
    bad = FakePacs(ae_title="BADWS", statuses=[0xA700, (0xC000, "cannot understand")])
    raw["devices"].append({"ae_title": "BADWS", "host": "127.0.0.1", "port": bad.port})
    raw["forward"].update({"retry_initial": 0.2, "retry_max": 0.5})
    # Nothing is routed at ingest (no calling AE matches): every study waits to be sent.
    raw["destinations"] = [{"name": "PACS", "ae_title": "PACS", "host": "127.0.0.1",
                            "port": pacs.port, "from_ae": ["NOBODY"], "commitment": "delivery"}]  # fmt: skip
    app = Appliance(make_config(tmp / "data", raw)).start()
    try:
        held = store_studies(app.dicom_port, tmp / "images")
        store = app.runtime.store  # type: ignore[union-attr]
        accounts.create_user(store, "boss", PASSWORD, accounts.ADMIN)
        accounts.create_user(store, "tech", PASSWORD, accounts.FRONT_DESK)
        yield {
            "app": app,
            "held": held,
            "pacs": pacs,
            "ws": ws,
            "bad": bad,
            "root": f"https://127.0.0.1:{app.web_port}",
            "ca": str(app.config.data_dir / "tls" / "appliance.crt"),
        }
    finally:
        app.stop()
        pacs.stop()
        ws.stop()
        bad.close()


def _session(box: dict[str, Any]) -> requests.Session:
    """A session that verifies the box's own HTTPS certificate."""
    s = requests.Session()
    s.verify = box["ca"]
    s.trust_env = False  # else $REQUESTS_CA_BUNDLE would replace verify (requests#3829)
    return s


def signed_in(box: dict[str, Any]) -> requests.Session:
    s = _session(box)
    page = s.get(f"{box['root']}/login", timeout=10)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf
    form = {"csrf_token": csrf.group(1), "username": "tech", "password": PASSWORD}
    assert (
        s.post(f"{box['root']}/login", data=form, allow_redirects=False, timeout=10).status_code
        == 302
    )
    return s


def csrf(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m
    return m.group(1)


def study_rows(html: str) -> list[str]:
    return re.findall(r'<tr class="study" data-study="([0-9.]+)"', html)


def spooled(box: dict[str, Any], sop_instance: str) -> Path:
    store = box["app"].runtime.store
    row = store.query(
        "SELECT file FROM forward_instances WHERE sop_instance_uid = ?", (sop_instance,)
    )
    return box["app"].config.data_dir / "spool" / row[0]["file"]


def test_the_list_is_newest_first_with_counts_and_a_menu_link(box: dict[str, Any]) -> None:
    s = signed_in(box)
    r = s.get(box["root"] + "/studies", timeout=10)
    assert r.status_code == 200
    held: Held = box["held"]
    studies = list(held.studies)
    # STUDIES dates: 20261201, 20261115, 20261202, 20261203 -> newest first
    assert study_rows(r.text) == [studies[3], studies[2], studies[0], studies[1]]
    assert 'href="/studies"' in r.text
    assert inline_code(r.text) == []  # the CSP allows none
    row = r.text[r.text.index(f'data-study="{studies[0]}"') :]
    assert re.search(r'class="counts">2 / 5<', row)
    assert "not routed" in row.split("</tr>")[0]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"name": "山田"}, [3]),
        ({"name": "やまだ"}, [3]),
        ({"name": "doe"}, [0, 1]),
        ({"patient_id": "P2"}, [2]),
        ({"accession": "ACC2"}, [1]),
        ({"date": "2026-12-01"}, [0]),
        ({"modality": "mr"}, [0]),
        ({"name": "nobody"}, []),
    ],
)
def test_search(box: dict[str, Any], query: dict[str, str], expected: list[int]) -> None:
    s = signed_in(box)
    r = s.get(box["root"] + "/studies", params=query, timeout=10)
    assert r.status_code == 200
    studies = list(box["held"].studies)
    assert set(study_rows(r.text)) == {studies[i] for i in expected}


def test_keyset_pages_hold_every_study_once(box: dict[str, Any]) -> None:
    s = signed_in(box)
    seen: list[str] = []
    url = f"{box['root']}/studies?size=1"
    while url:
        r = s.get(url, timeout=10)
        assert r.status_code == 200
        seen += study_rows(r.text)
        m = re.search(r'id="page-next" href="([^"]+)"', r.text)
        url = f"{box['root']}{m.group(1).replace('&amp;', '&')}" if m else ""
    assert sorted(seen) == sorted(box["held"].studies) and len(seen) == 4


def test_thumbnail_is_a_picture_with_caching_headers(box: dict[str, Any]) -> None:
    s = signed_in(box)
    study = next(iter(box["held"].studies))
    r = s.get(box["root"] + f"/studies/{study}/thumbnail.png", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    assert "max-age" in r.headers["Cache-Control"] and r.headers["ETag"]
    im = Image.open(io.BytesIO(r.content))
    assert max(im.size) <= 160 and im.getextrema() != (0, 0)
    again = s.get(box["root"] + f"/studies/{study}/thumbnail.png",
                  headers={"If-None-Match": r.headers["ETag"]}, timeout=10)  # fmt: skip
    assert again.status_code == 304 and not again.content


def test_send_to_a_destination_arrives_byte_for_byte_and_again(box: dict[str, Any]) -> None:
    s = signed_in(box)
    held: Held = box["held"]
    study = list(held.studies)[0]
    page = s.get(box["root"] + "/studies", timeout=10).text
    r = s.post(box["root"] + f"/studies/{study}/send",
               data={"csrf_token": csrf(page), "to": "PACS"}, timeout=10)  # fmt: skip
    assert r.status_code == 200 and "5 of 5 images queued to PACS" in r.text
    pacs: RawSCP = box["pacs"]
    wanted = held.instances(study)
    wait_for(lambda: set(wanted) <= set(pacs.received), timeout=20)
    for uid in wanted:
        assert pacs.received[uid] == dataset_bytes(spooled(box, uid))
    store = box["app"].runtime.store
    wait_for(lambda: "5 delivered" in s.get(box["root"] + "/studies", timeout=10).text, timeout=10)
    audit = store.query("SELECT actor, object, detail FROM audit WHERE action = 'forward-send'")
    assert {"actor": "tech", "object": f"study {study}",
            "detail": "to PACS: 5 of 5 instances queued"} in audit  # fmt: skip
    # Sent again: the delivered rows wait again and go again.
    pacs.received.clear()
    r = s.post(box["root"] + f"/studies/{study}/send",
               data={"csrf_token": csrf(page), "to": "PACS"}, timeout=10)  # fmt: skip
    assert "5 of 5 images queued to PACS" in r.text
    wait_for(lambda: set(wanted) <= set(pacs.received), timeout=20)


def test_send_to_a_device_reaches_storescp_byte_for_byte(box: dict[str, Any]) -> None:
    s = signed_in(box)
    held: Held = box["held"]
    study = list(held.studies)[3]  # the Japanese name, ISO 2022 IR 87
    page = s.get(box["root"] + "/studies", timeout=10).text
    assert 'value="device:WS3D"' in page
    r = s.post(box["root"] + f"/studies/{study}/send",
               data={"csrf_token": csrf(page), "to": "device:WS3D"}, timeout=10)  # fmt: skip
    assert r.status_code == 200 and "1 of 1 images queued to WS3D" in r.text
    ws: StoreSCP = box["ws"]
    [uid] = held.instances(study)
    wait_for(lambda: ws.files(), timeout=20)
    [got] = ws.files()
    assert dataset_bytes(got) == dataset_bytes(spooled(box, uid))
    store = box["app"].runtime.store
    wait_for(lambda: store.query(
        "SELECT state FROM forward_queue WHERE destination = 'device:WS3D'"
    ) == [{"state": "delivered"}], timeout=10)  # fmt: skip
    assert (
        JAPANESE.split("=")[1].split("^")[0]
        in s.get(box["root"] + "/studies", params={"name": "山田"}, timeout=10).text
    )


def test_a_device_row_is_on_the_queue_page(box: dict[str, Any]) -> None:
    store = box["app"].runtime.store
    wait_for(lambda: store.query(
        "SELECT 1 FROM forward_queue WHERE destination = 'device:WS3D' AND state = 'delivered'"
    ), timeout=30)  # fmt: skip
    s = _session(box)
    page = s.get(f"{box['root']}/login", timeout=10)
    form = {"csrf_token": csrf(page.text), "username": "boss", "password": PASSWORD}
    s.post(f"{box['root']}/login", data=form, timeout=10)
    r = s.get(f"{box['root']}/admin/destinations", timeout=10)
    assert r.status_code == 200 and "device:WS3D" in r.text
    health = s.get(box["root"] + "/healthz", timeout=10).json()
    ws = health["services"]["forward"]["destinations"]["device:WS3D"]
    assert ws["delivered"] == 1 and ws["waiting"] == 0


def test_a_device_that_refuses_gets_retries_then_a_dead_letter(box: dict[str, Any]) -> None:
    s = signed_in(box)
    held: Held = box["held"]
    study = list(held.studies)[2]  # two images
    page = s.get(box["root"] + "/studies", timeout=10).text
    r = s.post(box["root"] + f"/studies/{study}/send",
               data={"csrf_token": csrf(page), "to": "device:BADWS"}, timeout=10)  # fmt: skip
    assert "2 of 2 images queued to BADWS" in r.text
    store = box["app"].runtime.store

    def states() -> list[str]:
        rows = store.query("SELECT state FROM forward_queue WHERE destination = 'device:BADWS' "
                           "ORDER BY state")  # fmt: skip
        return [row["state"] for row in rows]

    wait_for(lambda: states() == ["dead", "delivered"], timeout=20)
    assert len(box["bad"].received) == 3  # A700, then retried: C000 for good, Success
    dead = store.query("SELECT attempts, last_error FROM forward_queue WHERE state = 'dead'")
    assert "cannot understand" in dead[0]["last_error"]
    html = s.get(box["root"] + "/studies", params={"patient_id": "P2"}, timeout=10).text
    assert "device:BADWS: " in html and "1 delivered" in html and "1 refused" in html
