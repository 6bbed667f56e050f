"""A printer's test page: a grey step wedge and ramp rendered as a film is, then sent
through the printer's own output (folder PDF, IPP Everywhere, CUPS) as a print job is.

The admin's Printers page prints it and shows what the output answered; the files stay
in ``prints/test/`` (the last few) so that a folder printer's page can be looked at.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import numpy as np

from appliance.config import PrinterSettings
from appliance.fsutil import fsync_path
from appliance.printing.output import Delivery, make_output
from image import film as film_mod
from image import page as page_mod
from image.pdf import PdfWriter
from image.pixels import SourceImage, Tone

TEST_DIR = "test"
KEEP = 5  # test pages kept in prints/test/
DPI = 150
JOB_TIMEOUT_S = 60.0  # a test page waits this long for the printer to finish it


def wedge(size: int = 512, steps: int = 16) -> np.ndarray:
    """A 12-bit MONOCHROME2 test image: a step wedge on top, a smooth ramp below."""
    img = np.zeros((size, size), dtype="<u2")
    half = size // 2
    step_w = size // steps
    for i in range(steps):
        img[:half, i * step_w : (i + 1) * step_w] = round(i * 4095 / (steps - 1))
    ramp = np.linspace(0, 4095, size).round().astype("<u2")
    img[half:, :] = ramp[np.newaxis, :]
    return img


def render(out_dir: Path, printer: PrinterSettings, paper: tuple[float, float] | None) -> Path:
    """document.pdf and page-1.png of the test page in ``out_dir``; returns the PDF."""
    film = page_mod.FilmSpec(
        display_format="STANDARD\\1,1",
        film_size_id="8INX10IN",
        border_density="WHITE",
        empty_image_density="WHITE",
        tone=Tone(reflected_ambient=0.0),
    )
    box = page_mod.BoxSpec(position=1, loader=lambda: SourceImage(wedge(), "MONOCHROME2", 12))
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    footer = f"DICOM Appliance test page - printer {printer.name} ({printer.uri}) - {when}"
    spec = page_mod.PageSpec(paper_mm=paper, dpi=DPI, footer=footer)
    result = page_mod.render_film(film, [box], spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    pdf = out_dir / "document.pdf"
    tmp = pdf.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        writer = PdfWriter(f)
        writer.add_page(result.page, DPI)
        writer.close()
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, pdf)
    page_mod.preview(result.page).save(out_dir / "page-1.png")
    fsync_path(out_dir)
    return pdf


def print_test_page(printer: PrinterSettings, prints_dir: Path, data_dir: Path, uid: str) -> str:
    """Render and deliver one test page; returns what the output answered. Raises
    ``DeliveryError`` (with what went wrong) when the printer did not take it."""
    output = make_output(printer.name, printer.uri, data_dir)
    if hasattr(output, "job_timeout"):
        output.job_timeout = JOB_TIMEOUT_S
    film_mm = film_mod.film_size_mm("8INX10IN", "PORTRAIT")
    paper = output.paper(film_mm, "auto")
    root = prints_dir / TEST_DIR
    out_dir = root / uid
    pdf = render(out_dir, printer, paper.size_mm)
    _prune(root)
    delivery = Delivery(
        job_uid=uid,
        pdf=pdf,
        previews=[out_dir / "page-1.png"],
        media=paper.media,
        job_name=f"test page {printer.name}",
        dpi=DPI,
        pages=1,
    )
    return output.deliver(delivery)


def _prune(root: Path) -> None:
    """Keep the newest ``KEEP`` test pages."""
    dirs = sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
    for old in dirs[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
