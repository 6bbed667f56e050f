"""CUPS's ippeveprinter judges the Printers page: a printer added on the page, then its
test page, printed through the same IPP output as films (PDF, else PWG raster), over
real sockets from the web request to the printer."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from appliance import accounts
from appliance.server import Appliance
from image.pdf import read_pages
from image.pwg import decode_pwg_page, read_pwg_headers
from tests.ippeve import run_ippeveprinter
from tests.webclient import PASSWORD, SocketClient, csrf_of

pytestmark = pytest.mark.interop


def _flash(text: str) -> str:
    found = re.search(r'<p class="flash [a-z]*" role="status">([^<]*)</p>', text)
    assert found, text
    return html.unescape(found.group(1))


def _wedge_rises_in_density(grey: np.ndarray) -> None:
    """The step wedge (top half of the image) goes from black to light, left to right
    (MONOCHROME2: the lowest value is the darkest)."""
    rows, cols = grey.shape
    ink = np.where(grey < 250)  # the image area, without the white paper and border
    top, bottom = ink[0].min(), ink[0].max()
    left, right = ink[1].min(), ink[1].max()
    band = grey[top + (bottom - top) // 8, left:right]
    means = [band[int(i * len(band) / 16) + 2 : int((i + 1) * len(band) / 16) - 2].mean()
             for i in range(16)]  # fmt: skip
    assert all(a <= b for a, b in zip(means, means[1:], strict=False)), means
    assert means[0] < 30 and means[-1] - means[0] > 150, means


@pytest.mark.parametrize("formats", ["application/pdf", "image/pwg-raster"])
def test_test_page_comes_out_of_ippeveprinter(
    start_appliance: Callable[..., Appliance], tmp_path: Path, formats: str
) -> None:
    with run_ippeveprinter(tmp_path / "printer", formats, color=False) as printer:
        app = start_appliance({})
        assert app.runtime is not None
        accounts.create_user(app.runtime.store, "admin", PASSWORD, accounts.ADMIN)
        admin = SocketClient(app.web_port)
        assert admin.sign_in("admin").status == 302
        token = csrf_of(admin.get("/printers/new").text)
        added = admin.post("/printers/new", {"csrf_token": token, "name": "office",
                                             "uri": printer.uri})  # fmt: skip
        assert added.status == 302
        listed = admin.get("/printers").text
        assert 'id="printer-office" class="status-normal"' in listed
        sent = admin.post("/printers/office/test", {"csrf_token": token})
        assert sent.status == 302
        message = _flash(admin.get("/printers").text)
        assert re.fullmatch(
            rf"Test page sent to office: {re.escape(printer.uri)} job \d+ \({re.escape(formats)}\)",
            message,
        ), message
        jobs = printer.jobs()
        assert len(jobs) == 1 and jobs[0]["job-name"] == "test page office"
        [spooled] = printer.files()
        assert spooled.suffix == {"application/pdf": ".pdf", "image/pwg-raster": ".pwg"}[formats]
        if formats == "application/pdf":
            [(page, _dpi)] = list(read_pages(spooled))
            grey = np.asarray(page.convert("L"))
        else:
            data = spooled.read_bytes()
            assert len(read_pwg_headers(data)) == 1
            grey = np.asarray(decode_pwg_page(data).convert("L"))
        _wedge_rises_in_density(grey)
