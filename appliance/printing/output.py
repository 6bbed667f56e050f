"""Where finished documents go: a folder (PDF + PNG), an IPP Everywhere printer, a CUPS queue.

Each output answers three questions: what state is the printer in (for Printer N-GET,
as DICOM Printer Status / Printer Status Info, PS3.3 C.13.9), which paper does a film go
on, and deliver this document. A delivery that may succeed later raises
``DeliveryError(retry=True)``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError
from appliance.printing import ipp
from image import film as film_mod
from image import pdf as pdf_mod
from image import pwg

NORMAL, WARNING, FAILURE = "NORMAL", "WARNING", "FAILURE"

# IPP printer-state-reasons (RFC 8011 5.4.12, PWG 5100.9) -> DICOM Printer Status Info.
REASONS = {
    "media-empty": "SUPPLY EMPTY",
    "media-needed": "SUPPLY EMPTY",
    "media-low": "SUPPLY LOW",
    "media-jam": "FILM JAM",
    "door-open": "COVER OPEN",
    "cover-open": "COVER OPEN",
    "toner-empty": "SUPPLY EMPTY",
    "marker-supply-empty": "SUPPLY EMPTY",
    "toner-low": "SUPPLY LOW",
    "marker-supply-low": "SUPPLY LOW",
    "offline-report": "PRINTER OFFLINE",
    "paused": "PRINTER OFFLINE",
    "shutdown": "PRINTER DOWN",
}
# IPP Everywhere media names carry their size: iso_a4_210x297mm, na_letter_8.5x11in.
_MEDIA_SIZE = re.compile(r"_(\d+(?:\.\d+)?)x(\d+(?:\.\d+)?)(mm|in)$")


class DeliveryError(ApplianceError):
    """The document could not be delivered; ``retry`` when trying later may work."""

    def __init__(self, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass
class PrinterState:
    """A printer's state as DICOM Printer Status and Printer Status Info."""

    status: str = NORMAL
    info: str = "NORMAL"
    name: str = ""
    detail: str = ""


@dataclass
class Delivery:
    """One document to deliver."""

    job_uid: str
    pdf: Path
    previews: list[Path]
    copies: int = 1
    color: bool = False
    media: str = ""
    job_name: str = ""
    dpi: int = 300
    pages: int = 1


@dataclass
class Paper:
    """The paper chosen for a film: its size (None = the film's own) and IPP media name."""

    size_mm: tuple[float, float] | None
    media: str = ""


def media_size_mm(name: str) -> tuple[float, float] | None:
    """(width, height) in mm of an IPP self-describing media name, else None."""
    match = _MEDIA_SIZE.search(name)
    if not match:
        return None
    w, h = float(match.group(1)), float(match.group(2))
    if match.group(3) == "in":
        w, h = w * film_mod.MM_PER_INCH, h * film_mod.MM_PER_INCH
    return (w, h)


def choose_media(film_mm: tuple[float, float], media: list[str]) -> Paper:
    """The smallest medium that holds the film at true size, else the largest one."""
    fw, fh = sorted(film_mm)
    sized = [(m, media_size_mm(m)) for m in media]
    usable = [(m, s) for m, s in sized if s is not None]
    if not usable:
        return Paper(film_mod.PAPER_SIZES_MM["A4"], "iso_a4_210x297mm")
    fits = [(m, s) for m, s in usable if sorted(s)[0] >= fw - 0.5 and sorted(s)[1] >= fh - 0.5]
    pool = fits or usable
    key = (lambda ms: ms[1][0] * ms[1][1]) if fits else (lambda ms: -ms[1][0] * ms[1][1])
    name, size = min(pool, key=key)
    return Paper(size, name)


def named_paper(name: str) -> Paper:
    """A profile's named paper size with its IPP media name."""
    media = {
        "A4": "iso_a4_210x297mm",
        "A3": "iso_a3_297x420mm",
        "LETTER": "na_letter_8.5x11in",
        "LEGAL": "na_legal_8.5x14in",
        "TABLOID": "na_ledger_11x17in",
    }
    return Paper(film_mod.PAPER_SIZES_MM[name], media[name])


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:40]


@dataclass
class FolderOutput:
    """folder:PATH: the PDF and a PNG preview per page, written atomically."""

    name: str
    path: Path

    def state(self) -> PrinterState:
        """NORMAL while the folder is writable, else FAILURE (nothing can be printed)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            writable = os.access(self.path, os.W_OK)
        except OSError:
            writable = False
        if not writable:
            return PrinterState(FAILURE, "PRINTER DOWN", self.name, f"{self.path} is not writable")
        return PrinterState(NORMAL, "NORMAL", self.name)

    def paper(self, film_mm: tuple[float, float], named: str) -> Paper:
        """A folder keeps the film's own size unless the profile names a paper."""
        return named_paper(named) if named in film_mod.PAPER_SIZES_MM else Paper(None)

    def deliver(self, d: Delivery) -> str:
        """Copy the document and previews into the folder."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            stem = (
                f"{time.strftime('%Y%m%d-%H%M%S')}-{_safe(d.job_name) or 'film'}-{d.job_uid[-8:]}"
            )
            files = [(d.pdf, self.path / f"{stem}.pdf")]
            files += [(p, self.path / f"{stem}-{i}.png") for i, p in enumerate(d.previews, 1)]
            for src, dst in files:
                tmp = dst.with_suffix(dst.suffix + ".tmp")
                shutil.copyfile(src, tmp)
                os.replace(tmp, dst)
        except OSError as exc:
            raise DeliveryError(f"cannot write to {self.path}: {exc.strerror}", retry=True) from exc
        return str(self.path / f"{stem}.pdf")


@dataclass
class IppOutput:
    """ipp://HOST:PORT/PATH: an IPP Everywhere printer (PWG 5100.14)."""

    name: str
    uri: str
    poll_interval: float = 0.2
    job_timeout: float = 300.0
    cache_seconds: float = 5.0
    _cache: tuple[float, dict[str, list[Any]]] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def attributes(self) -> dict[str, list[Any]]:
        """The printer's attributes, cached for ``cache_seconds``."""
        with self._lock:
            if self._cache and time.monotonic() - self._cache[0] < self.cache_seconds:
                return self._cache[1]
        attrs = ipp.get_printer_attributes(self.uri)
        with self._lock:
            self._cache = (time.monotonic(), attrs)
        return attrs

    def state(self) -> PrinterState:
        """printer-state and printer-state-reasons as DICOM Printer Status (Info)."""
        try:
            attrs = self.attributes()
        except ipp.IppError as exc:
            # Jobs wait in the queue until the printer is back: a warning, not a failure.
            return PrinterState(WARNING, "PRINTER OFFLINE", self.name, str(exc))
        reasons = [str(r) for r in attrs.get("printer-state-reasons", ["none"])]
        state = ipp.PRINTER_STATES.get(attrs.get("printer-state", [3])[0], "idle")
        infos = []
        for reason in reasons:
            base = re.sub(r"-(report|warning|error)$", "", reason)
            if base in REASONS:
                infos.append(REASONS[base])
        if not infos and state == "stopped":
            infos.append("PRINTER DOWN")
        if not infos:
            return PrinterState(NORMAL, "NORMAL", self.name, ",".join(reasons))
        return PrinterState(WARNING, infos[0], self.name, ",".join(reasons))

    def paper(self, film_mm: tuple[float, float], named: str) -> Paper:
        """The named paper, else the best of the printer's media-supported."""
        if named in film_mod.PAPER_SIZES_MM:
            return named_paper(named)
        try:
            media = [str(m) for m in self.attributes().get("media-supported", [])]
        except ipp.IppError:
            media = []
        return choose_media(film_mm, media)

    def _format(self) -> str:
        formats = [str(f) for f in self.attributes().get("document-format-supported", [])]
        for wanted in ("application/pdf", "image/pwg-raster", "image/jpeg"):
            if wanted in formats:
                return wanted
        raise DeliveryError(f"printer {self.name} takes none of PDF, PWG raster, JPEG")

    def _job_attrs(self, d: Delivery) -> list[tuple[int, str, Any]]:
        attrs = self.attributes()
        out: list[tuple[int, str, Any]] = [(ipp.INTEGER, "copies", d.copies)]
        modes = [str(m) for m in attrs.get("print-color-mode-supported", [])]
        mode = "color" if d.color and "color" in modes else "monochrome"
        if mode in modes:
            out.append((ipp.KEYWORD, "print-color-mode", mode))
        if d.media and d.media in [str(m) for m in attrs.get("media-supported", [])]:
            out.append((ipp.KEYWORD, "media", d.media))
        if "none" in [str(s) for s in attrs.get("print-scaling-supported", [])]:
            out.append((ipp.KEYWORD, "print-scaling", "none"))
        return out

    def deliver(self, d: Delivery) -> str:
        """Print-Job with PDF (else PWG raster, else JPEG per page); follow it to the end."""
        try:
            fmt = self._format()
            job_attrs = self._job_attrs(d)
            if fmt == "image/jpeg":
                ids = [self._send_jpeg(d, job_attrs, i) for i in range(d.pages)]
            elif fmt == "image/pwg-raster":
                ids = [self._send_pwg(d, job_attrs)]
            else:
                with open(d.pdf, "rb") as f:
                    ids = [ipp.print_job(self.uri, f, fmt, d.job_name, job_attrs)]
            for job_id in ids:
                self._follow(job_id)
        except ipp.IppError as exc:
            retry = exc.busy or exc.status is None
            raise DeliveryError(str(exc), retry=retry) from exc
        return f"{self.uri} job {','.join(map(str, ids))} ({fmt})"

    def _send_pwg(self, d: Delivery, job_attrs: list[tuple[int, str, Any]]) -> int:
        with tempfile.TemporaryFile() as tmp:
            pwg.write_pwg(tmp, pdf_mod.read_pages(d.pdf), d.pages, d.media)
            tmp.seek(0)
            return ipp.print_job(self.uri, tmp, "image/pwg-raster", d.job_name, job_attrs)

    def _send_jpeg(self, d: Delivery, job_attrs: list[tuple[int, str, Any]], index: int) -> int:
        for i, (im, dpi) in enumerate(pdf_mod.read_pages(d.pdf)):
            if i == index:
                with tempfile.TemporaryFile() as tmp:
                    im.save(tmp, "JPEG", quality=95, dpi=(dpi, dpi))
                    tmp.seek(0)
                    name = f"{d.job_name} {index + 1}/{d.pages}"
                    return ipp.print_job(self.uri, tmp, "image/jpeg", name, job_attrs)
        raise DeliveryError(f"page {index + 1} missing from {d.pdf}")

    def _follow(self, job_id: int) -> None:
        """Poll job-state until completed; aborted or canceled is a failure."""
        deadline = time.monotonic() + self.job_timeout
        while True:
            attrs = ipp.get_job_attributes(self.uri, job_id)
            state = ipp.JOB_STATES.get(attrs.get("job-state", [0])[0], "unknown")
            if state == "completed":
                return
            if state in ("aborted", "canceled"):
                reasons = ",".join(map(str, attrs.get("job-state-reasons", [])))
                raise DeliveryError(f"printer job {job_id} {state} ({reasons})")
            if time.monotonic() > deadline:
                raise DeliveryError(f"printer job {job_id} still {state}", retry=False)
            time.sleep(self.poll_interval)


@dataclass
class CupsOutput:
    """cups:QUEUE: the site's CUPS, through lp and lpstat."""

    name: str
    queue: str

    def state(self) -> PrinterState:
        """lpstat -p QUEUE: idle/printing is NORMAL, disabled is a warning."""
        try:
            out = subprocess.run(
                ["lpstat", "-p", self.queue], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return PrinterState(WARNING, "PRINTER OFFLINE", self.name, str(exc))
        if out.returncode != 0:
            return PrinterState(WARNING, "PRINTER OFFLINE", self.name, out.stderr.strip()[:64])
        if "disabled" in out.stdout:
            return PrinterState(WARNING, "PRINTER OFFLINE", self.name, out.stdout.strip()[:64])
        return PrinterState(NORMAL, "NORMAL", self.name)

    def paper(self, film_mm: tuple[float, float], named: str) -> Paper:
        """The named paper, else A4."""
        return named_paper(named if named in film_mod.PAPER_SIZES_MM else "A4")

    def deliver(self, d: Delivery) -> str:
        """lp -d QUEUE -n COPIES -o media=... FILE."""
        cmd = ["lp", "-d", self.queue, "-n", str(d.copies), "-t", d.job_name or "film"]
        if d.media:
            cmd += ["-o", f"media={d.media}"]
        cmd += ["-o", "print-scaling=none", str(d.pdf)]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DeliveryError(f"lp failed: {exc}", retry=True) from exc
        if out.returncode != 0:
            raise DeliveryError(f"lp failed: {out.stderr.strip()[:200]}", retry=True)
        return out.stdout.strip()


Output = FolderOutput | IppOutput | CupsOutput


def make_output(name: str, uri: str, data_dir: Path) -> Output:
    """The output for a [[printers]] URI; relative folders are inside the data directory."""
    scheme, _, rest = uri.partition(":")
    if scheme == "folder":
        path = Path(rest).expanduser()
        return FolderOutput(name, path if path.is_absolute() else data_dir / path)
    if scheme in ("ipp", "ipps"):
        return IppOutput(name, uri)
    if scheme == "cups":
        return CupsOutput(name, rest)
    raise DeliveryError(f"unknown printer URI {uri!r}")
