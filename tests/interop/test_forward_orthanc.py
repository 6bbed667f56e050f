"""Modality -> appliance -> Orthanc over real wires: pynetdicom and DCMTK storescu as modalities."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from appliance import status
from appliance.forward import queue
from appliance.server import Appliance
from tests.forward_factories import make_ct, write_series
from tests.forward_helpers import FakePacs, forward_config, pacs_destination, send_files, senders
from tests.helpers import peer_env, require_peer, wait_for
from tests.orthanc import Orthanc


def _start(start_appliance: Callable[..., Appliance], pacs: Orthanc, **fwd) -> Appliance:
    dest = pacs_destination("pacs", pacs.aet, pacs.dicom_port)
    return start_appliance(forward_config([dest], devices=("MODALITY", "STORESCU"), **fwd))


def _assert_identical(pacs: Orthanc, paths: list[Path]) -> None:
    """Every sent instance is in Orthanc with the same data set and the same pixel bytes."""
    stored = pacs.instance_uids()
    for path in paths:
        sent = dcmread(path)
        assert sent.SOPInstanceUID in stored, f"{path.name} is missing from the PACS"
        got = dcmread(__import__("io").BytesIO(pacs.instance_file(stored[sent.SOPInstanceUID])))
        assert got.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
        assert got.PixelData == sent.PixelData
        assert got == sent  # every element of the data set, not only the pixels


def test_pynetdicom_to_orthanc_every_instance_identical(
    start_appliance: Callable[..., Appliance], orthanc: Orthanc, tmp_path: Path
) -> None:
    app = _start(start_appliance, orthanc)
    paths = write_series(tmp_path / "in", 12)
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 12
    wait_for(lambda: len(orthanc.instance_uids()) == 12, timeout=30)
    _assert_identical(orthanc, paths)
    # The queue records the deliveries once the batch's responses are in.
    wait_for(lambda: queue.summary(app.runtime.store)[0]["delivered"] == 12, timeout=10)
    assert queue.summary(app.runtime.store)[0]["waiting"] == 0
    assert senders(app, "pacs")[0].wire_stores == 12  # all through the sender's own wire


def test_dcmtk_storescu_to_orthanc(
    start_appliance: Callable[..., Appliance], orthanc: Orthanc, tmp_path: Path
) -> None:
    storescu = require_peer("storescu")
    app = _start(start_appliance, orthanc)
    paths = write_series(tmp_path / "in", 10)
    rle = make_ct(seed=99)
    rle.compress(RLELossless)
    rle_path = tmp_path / "rle" / "rle.dcm"
    rle_path.parent.mkdir()
    rle.save_as(rle_path, enforce_file_format=True)
    paths.append(rle_path)
    # storescu proposes uncompressed syntaxes by default, RLE Lossless with -xr.
    for extra, source in (([], tmp_path / "in"), (["-xr"], rle_path)):
        out = subprocess.run(
            [
                storescu,
                "-aet",
                "STORESCU",
                "-aec",
                "APPLIANCE",
                "+sd",
                *extra,
                "127.0.0.1",
                str(app.dicom_port),
                str(source),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=peer_env(),
        )
        assert out.returncode == 0, out.stdout + out.stderr
    wait_for(lambda: len(orthanc.instance_uids()) == 11, timeout=30)
    _assert_identical(orthanc, paths)
    wait_for(lambda: senders(app, "pacs")[0].wire_stores == 11, timeout=10)


def test_pacs_down_then_up(
    start_appliance: Callable[..., Appliance], orthanc: Orthanc, tmp_path: Path
) -> None:
    orthanc.kill()
    app = _start(start_appliance, orthanc)
    paths = write_series(tmp_path / "in", 5)
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 5
    store = app.runtime.store
    # The queue says why the items wait, and the sender keeps retrying with backoff.
    wait_for(lambda: "no association" in queue.summary(store)[0]["last_error"], timeout=10)
    first = store.query("SELECT MAX(next_attempt) AS t FROM forward_queue")[0]["t"]
    wait_for(
        lambda: store.query("SELECT MAX(next_attempt) AS t FROM forward_queue")[0]["t"] > first,
        timeout=10,
    )
    assert queue.summary(store)[0]["waiting"] == 5
    orthanc.start()
    wait_for(lambda: len(orthanc.instance_uids()) == 5, timeout=30)
    _assert_identical(orthanc, paths)
    wait_for(lambda: queue.summary(store)[0]["delivered"] == 5, timeout=10)
    pacs = app.health()["services"]["forward"]["destinations"]["pacs"]
    assert (pacs["waiting"], pacs["last_error"]) == (0, "")  # nothing waits, so no "why"
    assert "no association" in pacs["associations"][0]["last_error"]  # history kept


def test_jpeg2000_kept_for_orthanc_and_decompressed_for_an_uncompressed_pacs(
    start_appliance: Callable[..., Appliance], orthanc: Orthanc, tmp_path: Path
) -> None:
    """storescu -xv sends JPEG 2000 lossless; Orthanc gets those bytes, a PACS that takes
    only uncompressed data gets pixels decoded by the OpenJPEG plugin, equal to the source."""
    storescu = require_peer("storescu")
    plain = FakePacs(
        ae_title="PLAINPACS", syntaxes=[ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    )
    try:
        app = start_appliance(
            forward_config(
                [
                    pacs_destination("pacs", orthanc.aet, orthanc.dicom_port),
                    pacs_destination("plain", plain.ae_title, plain.port),
                ],
                devices=("STORESCU",),
            )
        )
        ds = make_ct(rows=64, columns=64, seed=7)
        pixels = ds.pixel_array.copy()
        ds.compress(JPEG2000Lossless)
        path = tmp_path / "j2k" / "j2k.dcm"
        path.parent.mkdir()
        ds.save_as(path, enforce_file_format=True)
        out = subprocess.run(
            [storescu, "-aet", "STORESCU", "-aec", "APPLIANCE", "-xv",
             "127.0.0.1", str(app.dicom_port), str(path)],
            capture_output=True, text=True, timeout=60, env=peer_env(),
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        wait_for(lambda: len(orthanc.instance_uids()) == 1, timeout=30)
        _assert_identical(orthanc, [path])
        wait_for(lambda: plain.stored_uids() == [ds.SOPInstanceUID], timeout=30)
        assert senders(app, "pacs")[0].wire_stores == 1  # JPEG 2000 as stored, on the wire
        assert senders(app, "plain")[0].wire_stores == 0  # decompressed: through pynetdicom
        _, got, syntax = plain.received[0]
        assert syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
        assert np.array_equal(got.pixel_array, pixels)
    finally:
        plain.close()
