"""The sender's own C-STORE wire judged by DCMTK storescp: what it writes, bit-preserving,
is byte for byte the data set the appliance spooled, for small and large PDUs and
several transfer syntaxes."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filereader import read_dataset, read_preamble
from pydicom.uid import ImplicitVRLittleEndian, JPEG2000Lossless, RLELossless
from pynetdicom.dsutils import split_dataset

from appliance import status
from appliance.forward import queue
from appliance.server import Appliance
from tests.forward_factories import make_ct, write_series
from tests.forward_helpers import forward_config, pacs_destination, send_files, senders
from tests.helpers import peer_env, require_peer, wait_for
from tests.orthanc import free_port

pytestmark = pytest.mark.interop


class Storescp:
    """DCMTK storescp on a free loopback port, writing what it receives as received."""

    def __init__(self, out: Path, max_pdu: int) -> None:
        self.out = out
        self.port = free_port()
        out.mkdir(parents=True)
        self.proc = subprocess.Popen(
            [require_peer("storescp"), "-aet", "STORESCP", "--max-pdu", str(max_pdu),
             "+xa", "--bit-preserving", "-od", str(out), str(self.port)],
            env=peer_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        wait_for(self._listening, timeout=10)

    def _listening(self) -> bool:
        import socket

        if self.proc.poll() is not None:
            raise AssertionError(f"storescp exited: {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def files(self) -> dict[str, Path]:
        """SOP Instance UID -> the file storescp wrote."""
        return {
            str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
            for p in self.out.iterdir()
            if p.is_file()
        }

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Callable[[int], Storescp]]:
    started: list[Storescp] = []

    def start(max_pdu: int) -> Storescp:
        scp = Storescp(tmp_path / f"storescp{len(started)}", max_pdu)
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop()


def _instances(directory: Path) -> list[Path]:
    """Explicit VR (one of 1.5 MB), implicit VR, RLE and JPEG 2000 files."""
    paths = write_series(directory / "explicit", 2)
    big = make_ct(rows=768, columns=1024, seed=11)
    implicit = make_ct(seed=12)
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    rle = make_ct(rows=64, columns=64, seed=13)
    rle.compress(RLELossless)
    j2k = make_ct(rows=64, columns=64, seed=14)
    j2k.compress(JPEG2000Lossless)
    for name, ds in (("big", big), ("implicit", implicit), ("rle", rle), ("j2k", j2k)):
        path = directory / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _dataset_bytes(path: Path | bytes) -> bytes:
    if isinstance(path, Path):
        return path.read_bytes()[split_dataset(path)[1] :]
    fp = BytesIO(path)  # what split_dataset does, on bytes
    read_preamble(fp, False)
    read_dataset(fp, is_implicit_VR=False, is_little_endian=True,
                 stop_when=lambda tag, vr, length: tag.group != 2)  # fmt: skip
    return path[fp.tell() :]


@pytest.mark.parametrize("max_pdu", [4096, 131072])
def test_storescp_writes_the_spooled_data_sets_byte_for_byte(
    start_appliance: Callable[..., Appliance],
    storescp: Callable[[int], Storescp],
    tmp_path: Path,
    max_pdu: int,
) -> None:
    scp = storescp(max_pdu)
    dest = pacs_destination("pacs", "STORESCP", scp.port)
    app = start_appliance(forward_config([dest], batch_size=10))
    paths = _instances(tmp_path / "in")
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * len(paths)
    wait_for(lambda: queue.summary(app.runtime.store)[0]["delivered"] == len(paths), 20)
    sender = senders(app, "pacs")[0]
    assert sender.wire_stores == len(paths)  # every one on the fast path
    received = scp.files()
    spooled = app.runtime.store.query(
        "SELECT sop_instance_uid, transfer_syntax, file FROM forward_instances"
    )
    assert sorted(received) == sorted(row["sop_instance_uid"] for row in spooled)
    for row in spooled:
        with sender.spool.open(row["file"]) as f:  # a journal record (or a file)
            spooled_bytes = f.read()
        got = received[row["sop_instance_uid"]]
        assert (
            dcmread(got, stop_before_pixels=True).file_meta.TransferSyntaxUID
            == (row["transfer_syntax"])
        )
        assert _dataset_bytes(got) == _dataset_bytes(spooled_bytes), row["sop_instance_uid"]
    by_uid = {str(dcmread(p).SOPInstanceUID): p for p in paths}
    for uid, got in received.items():
        assert dcmread(got) == dcmread(by_uid[uid])  # and the same as the modality's file
