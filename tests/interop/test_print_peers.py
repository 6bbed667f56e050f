"""Independent peers judge the Print SCP: DCMTK dcmprscu as the modality, CUPS's
ippeveprinter as the network printer."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from appliance.server import Appliance
from image import film as film_mod
from image.pdf import read_pages
from image.pwg import decode_pwg_page, read_pwg_headers
from tests.helpers import peer_env, require_peer, wait_for
from tests.ippeve import run_ippeveprinter
from tests.printscu import PrintSCU

pytestmark = pytest.mark.interop

DPI = 60
LEVELS = (0.4, 0.55, 0.7, 0.85)


def write_images(folder: Path) -> list[Path]:
    """Four 12-bit MONOCHROME2 Secondary Capture images, brighter one after another."""
    paths = []
    for i, level in enumerate(LEVELS, 1):
        ds = Dataset()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PatientName, ds.PatientID, ds.Modality = "Print^Test", "P1", "OT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = 128, 96
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = np.tile(np.linspace(0, 4095 * level, 96), (128, 1)).astype("<u2").tobytes()
        path = folder / f"img{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def dcmpstat_cfg(folder: Path, port: int) -> Path:
    """A dcmpstat.cfg naming the appliance as the printer APPLIANCE (DCMTK dcmpstat)."""
    for sub in ("spool", "database", "lut"):
        (folder / sub).mkdir(exist_ok=True)
    cfg = folder / "dcmpstat.cfg"
    cfg.write_text(
        f"""[[GENERAL]]
[PRINT]
Directory = {folder / "spool"}
DetailedLog = false
BinaryLog = false
DeletePrintJobs = false
[DATABASE]
Directory = {folder / "database"}
[LUT]
Directory = {folder / "lut"}
[NETWORK]
aetitle = CT1
[[COMMUNICATION]]
[APPLIANCE]
Aetitle = APPLIANCE
Description = DICOM Appliance
Hostname = 127.0.0.1
Port = {port}
Type = PRINTER
MaxPDU = 32768
ImplicitOnly = false
DisableNewVRs = false
DisplayFormat = 1,1\\2,2\\4,5
FilmSizeID = 8INX10IN\\14INX17IN
MagnificationType = REPLICATE\\BILINEAR\\CUBIC\\NONE
MaxDensity = 320
MinDensity = 20
MediumType = PAPER
Supports12Bit = true
SupportsPresentationLUT = true
SupportsImageSize = true
SupportsDecimateCrop = true
SupportsTrim = true
PresentationLUTinFilmSession = false
PresentationLUTMatchRequired = false
OmitSOPClassUIDFromCreateResponse = false
"""
    )
    return cfg


def dcmtk_print(
    folder: Path, port: int, *extra: str, prscu: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """dcmpsprt makes a Stored Print of four images on a 2x2 film; dcmprscu prints it."""
    dcmpsprt, dcmprscu = require_peer("dcmpsprt"), require_peer("dcmprscu")
    cfg = dcmpstat_cfg(folder, port)
    images = write_images(folder)
    made = subprocess.run(
        [dcmpsprt, "-c", str(cfg), "-p", "APPLIANCE", "--layout", "2", "2",
         "--filmsize", "8INX10IN", *extra, *map(str, images)],
        capture_output=True, text=True, timeout=60, cwd=folder, env=peer_env(),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    stored = sorted((folder / "database").glob("SP_*.dcm"))
    assert len(stored) == 1
    return subprocess.run(
        [dcmprscu, "-v", "-c", str(cfg), "-p", "APPLIANCE", *(prscu or []), str(stored[0])],
        capture_output=True, text=True, timeout=60, cwd=folder, env=peer_env(),
    )  # fmt: skip


def config(printer_uri: str, **profile: Any) -> dict[str, Any]:
    return {
        "devices": [{"ae_title": "CT1"}],
        "printers": [{"name": "ward", "uri": printer_uri}],
        "print_profiles": [{"dpi": DPI, **profile}],
    }


def finished_jobs(app: Appliance) -> list[dict[str, Any]]:
    return app.runtime.store.query(
        "SELECT * FROM print_jobs WHERE state IN ('DONE', 'FAILURE') ORDER BY created_at"
    )


def box_means(page: Any) -> list[float]:
    """Mean grey of the centre of each box of a 2x2 page, row-major."""
    arr = np.asarray(page.convert("L"), dtype=float)
    h, w = arr.shape
    return [
        arr[int(h * (r + 0.35) / 2) : int(h * (r + 0.65) / 2),
            int(w * (c + 0.35) / 2) : int(w * (c + 0.65) / 2)].mean()
        for r in range(2) for c in range(2)
    ]  # fmt: skip


def test_dcmprscu_prints_a_stored_print_job(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    app = start_appliance(config(f"folder:{tmp_path / 'out'}"))
    out = dcmtk_print(tmp_path, app.dicom_port)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "spooler: printer communication failed" not in out.stderr
    wait_for(lambda: finished_jobs(app))
    job = finished_jobs(app)[0]
    assert (job["state"], job["calling_ae"], job["pages"]) == ("DONE", "CT1", 1)
    pages = list(read_pages(app.runtime.config.data_dir / "prints" / job["document"]))
    page, dpi = pages[0]
    assert (page.size, dpi) == ((film_mod.mm_to_px(203.2, DPI), film_mod.mm_to_px(254, DPI)), DPI)
    means = box_means(page)
    assert means == sorted(means), "images are not in their positions"
    assert len(list((tmp_path / "out").glob("*.pdf"))) == 1


def test_pynetdicom_film_comes_out_of_ippeveprinter(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    with run_ippeveprinter(
        tmp_path / "printer", "application/pdf,image/jpeg,image/pwg-raster"
    ) as printer:
        app = start_appliance(config(printer.uri))
        scu = PrintSCU(app.dicom_port)
        try:
            st, ds = scu.get("1.2.840.10008.5.1.1.16", "1.2.840.10008.5.1.1.17")
            assert (st, ds.PrinterStatus, ds.PrinterStatusInfo) == (0, "NORMAL", "NORMAL")
            st, session, _ = scu.session(FilmSessionLabel="CHEST", NumberOfCopies=2)
            for _ in range(2):  # two films, one page each
                st, _box, reply = scu.film_box(session, "STANDARD\\2,2", FilmSizeID="14INX17IN")
                boxes = [i.ReferencedSOPInstanceUID for i in reply.ReferencedImageBoxSequence]
                for pos, uid in enumerate(boxes, 1):
                    assert scu.image(uid, pos)[0] == 0
            assert scu.action("1.2.840.10008.5.1.1.1", session)[0] == 0
        finally:
            scu.release()
        wait_for(lambda: finished_jobs(app), timeout=30)
        job = finished_jobs(app)[0]
        assert job["state"] == "DONE", job["error"]
        got = printer.jobs()
        assert len(got) == 1
        # A 14x17 in film fits none of the printer's media at true size: the largest, legal.
        assert got[0]["media"] == "na_legal_8.5x14in" == job["media"]
        assert got[0]["copies"] == 2
        assert "CHEST" in got[0]["job-name"]
        files = printer.files()
        assert len(files) == 1 and files[0].suffix == ".pdf"
        info = subprocess.run(
            [require_peer("pdfinfo"), str(files[0])], capture_output=True, text=True, timeout=30
        ).stdout
        assert "Pages:           2" in info
        assert "612 x 1008 pts" in info  # legal paper, portrait


def test_dcmprscu_film_comes_out_of_a_pwg_raster_printer(
    start_appliance: Callable[..., Appliance], tmp_path: Path
) -> None:
    with run_ippeveprinter(tmp_path / "printer", "image/pwg-raster", color=False) as printer:
        app = start_appliance(config(printer.uri, paper="A4"))
        out = dcmtk_print(tmp_path, app.dicom_port)
        assert out.returncode == 0, out.stdout + out.stderr
        wait_for(lambda: finished_jobs(app), timeout=30)
        job = finished_jobs(app)[0]
        assert job["state"] == "DONE", job["error"]
        got = printer.jobs()
        assert len(got) == 1 and got[0]["media"] == "iso_a4_210x297mm"
        assert got[0].get("print-color-mode", "monochrome") == "monochrome"
        files = printer.files()
        assert len(files) == 1
        data = files[0].read_bytes()
        pages = read_pwg_headers(data)
        assert pages == [
            {"width": film_mod.mm_to_px(210, DPI), "height": film_mod.mm_to_px(297, DPI),
             "dpi": DPI, "bpp": 8}
        ]  # fmt: skip
        page = decode_pwg_page(data)
        sent = next(read_pages(app.runtime.config.data_dir / "prints" / job["document"]))[0]
        assert np.array_equal(np.asarray(page), np.asarray(sent))


@pytest.mark.parametrize(
    ("dcmpsprt_options", "dcmprscu_options"),
    [
        (["--img-polarity", "REVERSE", "--trim"], ["--session-print"]),
        (["--landscape", "--max-density", "250"], ["--monochrome1", "+d"]),
    ],
)
def test_dcmprscu_options_reach_the_page(
    start_appliance: Callable[..., Appliance],
    tmp_path: Path,
    dcmpsprt_options: list[str],
    dcmprscu_options: list[str],
) -> None:
    """Polarity, trim, orientation, Max Density beyond the paper (B605), MONOCHROME1 pixels
    and a film session N-ACTION, as DCMTK sends them."""
    app = start_appliance(config(f"folder:{tmp_path / 'out'}"))
    out = dcmtk_print(tmp_path, app.dicom_port, *dcmpsprt_options, prscu=dcmprscu_options)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "printer communication failed" not in out.stderr
    wait_for(lambda: finished_jobs(app))
    job = finished_jobs(app)[0]
    assert job["state"] == "DONE", job["error"]
    page = next(read_pages(app.runtime.config.data_dir / "prints" / job["document"]))[0]
    means = box_means(page)
    if "--landscape" in dcmpsprt_options:
        assert page.width > page.height
        assert "0xb605: Image box warning - Min/Max density" in out.stderr  # from the +d dump
    if "REVERSE" in dcmpsprt_options:
        assert job["spec"].count('"Polarity": "REVERSE"') == 4
        assert job["spec"].count('"Trim": "YES"') == 1
        assert means == sorted(means, reverse=True), "reversed images darken one after another"
    else:
        assert means == sorted(means)
