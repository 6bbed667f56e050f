"""A small lossless PDF writer: one page per image, Flate-compressed, streamed in strips.

Pillow's own PDF writer stores grey and colour pages as JPEG; films are diagnostic
pictures, so pages are kept lossless here, and compressed strip by strip so that no
second copy of a page is held in memory (PDF 1.4, ISO 32000-1 7.3.8, 8.9).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from PIL import Image

STRIP_ROWS = 256


class Strips(Protocol):
    """A page that hands out rows (image.page.PageBuffer)."""

    mode: str

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    def strip(self, top: int, bottom: int) -> Image.Image: ...


def _strip(im: Image.Image | Strips, top: int, bottom: int) -> Image.Image:
    if isinstance(im, Image.Image):
        return im.crop((0, top, im.width, bottom))
    return im.strip(top, bottom)


def _image_stream(out: BinaryIO, im: Image.Image | Strips, level: int) -> int:
    """Write the Flate-compressed samples of ``im``; returns the compressed length."""
    comp = zlib.compressobj(level)
    length = 0
    for top in range(0, im.height, STRIP_ROWS):
        strip = _strip(im, top, min(im.height, top + STRIP_ROWS)).tobytes()
        chunk = comp.compress(strip)
        out.write(chunk)
        length += len(chunk)
    tail = comp.flush()
    out.write(tail)
    return length + len(tail)


class PdfWriter:
    """Writes pages as they come, then the cross-reference table on close()."""

    def __init__(self, out: BinaryIO, level: int = 1) -> None:
        self.out = out
        self.level = level
        self.offsets: list[int] = []
        self.page_ids: list[int] = []
        out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        self._reserve()  # 1: catalog
        self._reserve()  # 2: pages

    def _reserve(self) -> int:
        self.offsets.append(0)
        return len(self.offsets)

    def _begin(self, num: int) -> None:
        self.offsets[num - 1] = self.out.tell()
        self.out.write(f"{num} 0 obj\n".encode())

    def add_page(self, im: Image.Image | Strips, dpi: int) -> None:
        """Append one page of the image's size at ``dpi``; grey ("L") or colour ("RGB")."""
        if isinstance(im, Image.Image) and im.mode not in ("L", "RGB"):
            im = im.convert("RGB")
        img_id, len_id, content_id, page_id = (self._reserve() for _ in range(4))
        colors = "/DeviceGray" if im.mode == "L" else "/DeviceRGB"
        self._begin(img_id)
        self.out.write(
            (
                f"<< /Type /XObject /Subtype /Image /Width {im.width} /Height {im.height} "
                f"/ColorSpace {colors} /BitsPerComponent 8 /Filter /FlateDecode "
                f"/Length {len_id} 0 R >>\nstream\n"
            ).encode()
        )
        length = _image_stream(self.out, im, self.level)
        self.out.write(b"\nendstream\nendobj\n")
        self._begin(len_id)
        self.out.write(f"{length}\nendobj\n".encode())
        w_pt, h_pt = im.width * 72.0 / dpi, im.height * 72.0 / dpi
        content = f"q {w_pt:.3f} 0 0 {h_pt:.3f} 0 0 cm /Im0 Do Q".encode()
        self._begin(content_id)
        self.out.write(f"<< /Length {len(content)} >>\nstream\n".encode())
        self.out.write(content + b"\nendstream\nendobj\n")
        self._begin(page_id)
        self.out.write(
            (
                f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w_pt:.3f} {h_pt:.3f}] "
                f"/Resources << /XObject << /Im0 {img_id} 0 R >> >> "
                f"/Contents {content_id} 0 R >>\nendobj\n"
            ).encode()
        )
        self.page_ids.append(page_id)

    def close(self) -> None:
        """Write the catalog, the page tree and the cross-reference table."""
        self._begin(1)
        self.out.write(b"<< /Type /Catalog /Pages 2 0 R >>\nendobj\n")
        kids = " ".join(f"{p} 0 R" for p in self.page_ids)
        self._begin(2)
        self.out.write(
            f"<< /Type /Pages /Kids [{kids}] /Count {len(self.page_ids)} >>\nendobj\n".encode()
        )
        xref = self.out.tell()
        lines = [f"xref\n0 {len(self.offsets) + 1}\n", "0000000000 65535 f \n"]
        lines += [f"{off:010d} 00000 n \n" for off in self.offsets]
        self.out.write("".join(lines).encode())
        self.out.write(
            f"trailer\n<< /Size {len(self.offsets) + 1} /Root 1 0 R >>\n"
            f"startxref\n{xref}\n%%EOF\n".encode()
        )


def write_pdf(out: BinaryIO, pages: Iterable[tuple[Image.Image, int]]) -> int:
    """Write every (page image, dpi) as one PDF; returns the number of pages."""
    writer = PdfWriter(out)
    for im, dpi in pages:
        writer.add_page(im, dpi)
    writer.close()
    return len(writer.page_ids)


_IMAGE = re.compile(
    rb"/Subtype /Image /Width (\d+) /Height (\d+) /ColorSpace /Device(Gray|RGB) "
    rb"/BitsPerComponent 8 /Filter /FlateDecode /Length \d+ 0 R >>\nstream\n"
)
_MEDIABOX = re.compile(rb"/MediaBox \[0 0 ([\d.]+) ([\d.]+)\]")


def read_pages(path: str | Path) -> Iterator[tuple[Image.Image, int]]:
    """The pages of a PDF written by ``write_pdf``, one at a time, with their dpi."""
    data = Path(path).read_bytes()
    boxes = [float(m.group(1)) for m in _MEDIABOX.finditer(data)]
    for i, m in enumerate(_IMAGE.finditer(data)):
        width, height = int(m.group(1)), int(m.group(2))
        mode = "L" if m.group(3) == b"Gray" else "RGB"
        raw = zlib.decompressobj().decompress(data[m.end() :])
        dpi = round(width * 72.0 / boxes[i]) if i < len(boxes) else 300
        yield Image.frombytes(mode, (width, height), raw), dpi
