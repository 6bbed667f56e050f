"""DCMTK getscu against the Query/Retrieve SCP on the journal spool: the C-STORE
sub-operations of a C-GET carry the data sets byte for byte as they were received,
streamed from the journal records (store_wire on the requesting association), even
where decoding and encoding them again would change them."""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.dsutils import split_dataset

from appliance import status
from appliance.forward import journal
from appliance.server import Appliance
from tests.forward_factories import make_ct
from tests.helpers import peer_env, require_peer
from tests.qr_helpers import MODALITY, QR_SCU, qr_config

pytestmark = pytest.mark.interop


def _trailing_private(path: Path) -> None:
    """Append a private element after Pixel Data: out of tag order, as some modalities
    write. pydicom (and DCMTK) put it back in order when they encode the data set again,
    so only a byte-exact path gives it back as it came."""
    creator = b"ACME 1.0"
    element = struct.pack("<HH", 0x0009, 0x0010) + b"LO" + struct.pack("<H", len(creator))
    path.write_bytes(path.read_bytes() + element + creator)


def _instances(directory: Path, series: str) -> list[Path]:
    """Three explicit VR little endian CT images (getscu takes that syntax; an instance
    held in another is converted, not streamed), the first with a trailing element."""
    directory.mkdir(parents=True)
    paths = []
    for i in range(3):
        ds = make_ct(rows=64, columns=64, seed=40 + i)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        path = directory / f"{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    _trailing_private(paths[0])
    return paths


def _store_as_files(port: int, paths: list[Path]) -> list[int]:
    """C-STORE each file's own bytes (pynetdicom streams a path's data set unchanged
    once the appliance configured it so: same process)."""
    ae = AE(ae_title=MODALITY)
    metas = [dcmread(p, stop_before_pixels=True) for p in paths]
    for pair in {(m.SOPClassUID, m.file_meta.TransferSyntaxUID) for m in metas}:
        ae.add_requested_context(pair[0], [pair[1]])
    assoc = ae.associate("127.0.0.1", port, ae_title="APPLIANCE")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(p).Status) for p in paths]
    finally:
        assoc.release()


def _dataset_bytes(path: Path) -> bytes:
    return path.read_bytes()[split_dataset(path)[1] :]


def _qr(app: Appliance) -> Any:
    return next(s for s in app.services if s.name == "qr")


def test_getscu_receives_the_journal_records_byte_for_byte(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    raw = qr_config()
    raw["forward"] = {**raw["forward"], "spool": "journal", "journal_segment_mb": 4}
    app = start_appliance(raw)
    series = generate_uid()
    paths = _instances(tmp_path / "in", series)
    sent = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in paths}
    assert _store_as_files(app.dicom_port, paths) == [status.SUCCESS] * 3
    rows = app.runtime.store.query("SELECT sop_instance_uid, file FROM forward_instances")
    assert len(rows) == 3 and all(journal.is_ref(r["file"]) for r in rows)
    out = tmp_path / "got"
    out.mkdir()
    proc = subprocess.run(
        [require_peer("getscu"), "-S", "-aet", QR_SCU, "-aec", "APPLIANCE", "+B",
         "-od", str(out), "-k", "QueryRetrieveLevel=SERIES", "-k",
         f"SeriesInstanceUID={series}", "127.0.0.1", str(app.dicom_port)],
        capture_output=True, text=True, timeout=60, env=peer_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in out.iterdir()}
    assert sorted(got) == sorted(sent)
    for uid, path in sent.items():
        assert _dataset_bytes(got[uid]) == _dataset_bytes(path), uid
    assert _qr(app).health()["streamed"] == 3  # every one through store_wire
