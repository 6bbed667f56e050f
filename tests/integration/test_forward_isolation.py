"""One odd instance never stops a destination (issue 10): it is charged, the rest flow."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from appliance import status
from appliance.forward import queue
from appliance.forward.spool import Spool
from appliance.server import Appliance
from tests.forward_factories import make_ct, write_series
from tests.forward_helpers import FakePacs, forward_config, pacs_destination, send_files
from tests.helpers import require_peer, wait_for
from tests.orthanc import free_port

UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


def _rows(app: Appliance) -> list[dict]:
    return app.runtime.store.query(
        "SELECT q.*, i.sop_instance_uid, i.file FROM forward_queue q"
        " JOIN forward_instances i ON i.id = q.instance_id ORDER BY q.id"
    )


@pytest.mark.interop  # needs a peer program
def test_big_endian_instance_is_converted_for_a_little_endian_pacs(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    """Explicit VR Big Endian (made by DCMTK dcmconv +tb) ahead of ten ordinary images."""
    dcmconv = require_peer("dcmconv")
    pacs = fake_pacs(syntaxes=UNCOMPRESSED)
    app = start_appliance(forward_config([pacs_destination("pacs", pacs.ae_title, pacs.port)]))
    ds = make_ct(rows=33, columns=31, seed=7)
    original = ds.pixel_array.copy()
    le = tmp_path / "le.dcm"
    ds.save_as(le, enforce_file_format=True)
    be = tmp_path / "be.dcm"
    subprocess.run([dcmconv, "+tb", str(le), str(be)], check=True)
    assert dcmread(be).file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    good = write_series(tmp_path / "in", 10)
    assert send_files(app.dicom_port, [be, *good]) == [status.SUCCESS] * 11
    wait_for(lambda: len(pacs.stored_uids()) == 11, timeout=20)
    got = {d.SOPInstanceUID: (d, ts) for _, d, ts in pacs.received}
    converted, syntax = got[ds.SOPInstanceUID]
    assert syntax in UNCOMPRESSED
    assert np.array_equal(converted.pixel_array, original)
    assert not queue.dead_letters(app.runtime.store)


def test_one_unsendable_instance_ahead_of_fifty_is_charged_alone(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    """A spooled file that cannot be read (any exception while preparing it) is retried on its
    own and becomes a dead letter; the fifty behind it are delivered meanwhile."""
    port = free_port()
    dest = pacs_destination("pacs", "FAKEPACS", port)
    # The file per image spool: its file is damaged below.
    app = start_appliance(forward_config([dest], max_attempts=3, spool="files"))
    bad = make_ct(rows=64, columns=64, seed=3)
    bad.compress(RLELossless)  # must be decompressed for this PACS: the file is read
    bad_path = tmp_path / "rle.dcm"
    bad.save_as(bad_path, enforce_file_format=True)
    good = write_series(tmp_path / "in", 50)
    assert send_files(app.dicom_port, [bad_path, *good]) == [status.SUCCESS] * 51
    # The PACS is down while the images arrive; the RLE one's spooled file is then damaged.
    first = _rows(app)[0]
    assert first["sop_instance_uid"] == bad.SOPInstanceUID
    spooled = Spool(app.runtime.config.data_dir / "spool").path(first["file"])
    spooled.unlink()
    spooled.mkdir()  # exists, but any read fails (IsADirectoryError): not a known refusal
    pacs = fake_pacs(port=port, syntaxes=UNCOMPRESSED)
    queue.retry_now(app.runtime.store, "pacs")
    wait_for(lambda: len(pacs.stored_uids()) == 50, timeout=30)
    dead = wait_for(lambda: queue.dead_letters(app.runtime.store), timeout=15)
    assert len(dead) == 1
    assert bad.SOPInstanceUID not in pacs.stored_uids()
    row = _rows(app)[0]
    assert row["state"] == queue.DEAD and row["attempts"] == 3
    assert "gave up after 3 attempts" in row["last_error"]
    assert "cannot send this instance: IsADirectoryError" in row["last_error"]


def test_a_failure_status_for_one_instance_ahead_of_fifty_is_charged_alone(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    """The PACS answers the first instance with a failure status (C000 with a comment):
    that one is a dead letter with the PACS's reason, the fifty behind it arrive."""
    paths = write_series(tmp_path / "in", 51)
    first_uid = str(dcmread(paths[0]).SOPInstanceUID)
    pacs = fake_pacs(by_uid={first_uid: [(status.CANNOT_UNDERSTAND, "bad pixel module")]})
    app = start_appliance(forward_config([pacs_destination("pacs", pacs.ae_title, pacs.port)]))
    started = time.monotonic()
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 51
    wait_for(lambda: len(pacs.stored_uids()) == 50, timeout=20)
    assert time.monotonic() - started < 20
    [dead] = wait_for(lambda: queue.dead_letters(app.runtime.store), timeout=10)
    assert dead["sop_instance_uid"] == first_uid
    assert dead["reason"] == "cannot understand 0xC000: bad pixel module"
    assert dead["last_status"] == status.CANNOT_UNDERSTAND
    assert first_uid not in pacs.stored_uids()
