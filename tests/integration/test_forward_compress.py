"""destination.transfer_syntax: uncompressed images are compressed losslessly on the way
to a PACS behind a slow link; pixels arrive identical, the bytes saved are shown."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
)

from appliance import accounts, status
from appliance.forward import queue
from appliance.server import Appliance
from tests.forward_factories import write_series
from tests.forward_helpers import FakePacs, forward_config, pacs_destination, send_files
from tests.helpers import wait_for
from tests.webclient import PASSWORD, SocketClient

UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


@pytest.mark.parametrize(
    ("setting", "syntax"),
    [("jpeg-ls-lossless", JPEGLSLossless), ("jpeg2000-lossless", JPEG2000Lossless)],
)
def test_uncompressed_images_go_compressed_losslessly(
    start_appliance: Callable[..., Appliance],
    fake_pacs: Callable[..., FakePacs],
    tmp_path: Path,
    setting: str,
    syntax: str,
) -> None:
    pacs = fake_pacs(syntaxes=[syntax, *UNCOMPRESSED])
    dest = pacs_destination("far", pacs.ae_title, pacs.port, transfer_syntax=setting)
    app = start_appliance(forward_config([dest]))
    paths = write_series(tmp_path / "in", 3, rows=128, columns=128)
    assert send_files(app.dicom_port, paths) == [status.SUCCESS] * 3
    wait_for(lambda: len(pacs.stored_uids()) == 3, timeout=15)
    by_uid = {str(ds.SOPInstanceUID): (ds, ts) for _, ds, ts in pacs.received}
    for path in paths:
        sent = dcmread(path)
        got, ts = by_uid[str(sent.SOPInstanceUID)]
        assert ts == syntax
        got.file_meta.TransferSyntaxUID = ts
        assert np.array_equal(got.pixel_array, sent.pixel_array)  # lossless
    saved = queue.bytes_saved(app.runtime.store)["far"]
    assert saved > 0
    accounts.create_user(app.runtime.store, "admin", PASSWORD, accounts.ADMIN)
    client = SocketClient(app.web_port)
    client.sign_in("admin")
    page = client.get("/admin/destinations").text
    assert "MB saved by compression" in page.split('id="dest-far"')[1].split("</tr>")[0]


def test_a_pacs_that_refuses_the_compressed_syntax_gets_the_stored_one(
    start_appliance: Callable[..., Appliance], fake_pacs: Callable[..., FakePacs], tmp_path: Path
) -> None:
    pacs = fake_pacs(syntaxes=UNCOMPRESSED)
    dest = pacs_destination("far", pacs.ae_title, pacs.port, transfer_syntax="jpeg-ls-lossless")
    app = start_appliance(forward_config([dest]))
    assert send_files(app.dicom_port, write_series(tmp_path / "in", 2)) == [status.SUCCESS] * 2
    wait_for(lambda: len(pacs.stored_uids()) == 2, timeout=15)
    assert {ts for _, _, ts in pacs.received} <= set(UNCOMPRESSED)
    assert queue.bytes_saved(app.runtime.store).get("far", 0) == 0
