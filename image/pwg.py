"""PWG Raster (PWG 5102.4): the page format every IPP Everywhere printer accepts.

One 1796-byte header per page, then rows compressed with the PackBits-like run-length
scheme of the format (line repeat count, then runs of repeated or literal pixels).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import numpy as np
from PIL import Image

SYNC = b"RaS2"
HEADER_SIZE = 1796
SGRAY, SRGB = 18, 19


def _str64(text: str) -> bytes:
    return text.encode("ascii")[:63].ljust(64, b"\0")


def page_header(
    width: int, height: int, dpi: int, color: bool, total_pages: int, media: str = ""
) -> bytes:
    """The 1796-byte page header (PWG 5102.4 4.3)."""
    bpp = 24 if color else 8
    head = bytearray(HEADER_SIZE)
    head[0:64] = _str64("PwgRaster")
    head[1732:1796] = _str64(media)
    w_pt, h_pt = round(width * 72 / dpi), round(height * 72 / dpi)
    struct.pack_into(">II", head, 276, dpi, dpi)  # HWResolution
    struct.pack_into(">I", head, 340, 1)  # NumCopies (copies are a job attribute)
    struct.pack_into(">II", head, 352, w_pt, h_pt)  # PageSize
    struct.pack_into(">II", head, 372, width, height)  # cupsWidth, cupsHeight
    struct.pack_into(">III", head, 384, 8, bpp, width * bpp // 8)  # bits/colour, bits/pixel, B/line
    struct.pack_into(">II", head, 396, 0, SRGB if color else SGRAY)  # chunky, colour space
    struct.pack_into(">I", head, 420, 3 if color else 1)  # cupsNumColors
    struct.pack_into(">I", head, 452, total_pages)  # TotalPageCount
    struct.pack_into(">ii", head, 456, 1, 1)  # CrossFeedTransform, FeedTransform
    return bytes(head)


def _encode_row(row: np.ndarray, bpp: int) -> bytes:
    """One row in chunks of up to 128 pixels: a uniform chunk as one run (control byte
    n-1 and the pixel), any other chunk as literal pixels (control byte 257-n)."""
    pixels = row.reshape(-1, bpp)
    out = bytearray()
    for a in range(0, len(pixels), 128):
        chunk = pixels[a : a + 128]
        n = len(chunk)
        if n == 1 or not (chunk != chunk[0]).any():
            out.append(n - 1)
            out += chunk[0].tobytes()
        else:
            out.append(257 - n)
            out += chunk.tobytes()
    return bytes(out)


def _rows(im: Image.Image, bpp: int) -> Iterator[bytes]:
    """Compressed rows with their line repeat counts, strip by strip."""
    prev: np.ndarray | None = None
    repeat = 0
    for top in range(0, im.height, 256):
        strip = np.asarray(im.crop((0, top, im.width, min(im.height, top + 256))))
        for row in strip.reshape(strip.shape[0], -1):
            if prev is not None and repeat < 255 and np.array_equal(row, prev):
                repeat += 1
                continue
            if prev is not None:
                yield bytes([repeat]) + _encode_row(prev, bpp)
            prev, repeat = row.copy(), 0
    if prev is not None:
        yield bytes([repeat]) + _encode_row(prev, bpp)


def write_pwg(
    out: BinaryIO, pages: Iterable[tuple[Image.Image, int]], total: int, media: str = ""
) -> int:
    """Write pages as one PWG Raster stream; returns the page count."""
    out.write(SYNC)
    count = 0
    for im, dpi in pages:
        color = im.mode == "RGB"
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB")
            color = True
        out.write(page_header(im.width, im.height, dpi, color, total, media))
        for chunk in _rows(im, 3 if color else 1):
            out.write(chunk)
        count += 1
    return count


def read_pwg_headers(data: bytes) -> list[dict[str, int]]:
    """Width, height, dpi and bits per pixel of each page of a PWG Raster stream (for tests)."""
    if not data.startswith(SYNC):
        raise ValueError("not a PWG Raster stream")
    pages = []
    pos = 4
    while pos + HEADER_SIZE <= len(data):
        head = data[pos : pos + HEADER_SIZE]
        dpi = struct.unpack_from(">I", head, 276)[0]
        width, height = struct.unpack_from(">II", head, 372)
        bpp = struct.unpack_from(">I", head, 388)[0]
        pages.append({"width": width, "height": height, "dpi": dpi, "bpp": bpp})
        pos += HEADER_SIZE
        bpp_bytes = bpp // 8
        rows = 0
        while rows < height:  # skip the compressed rows of this page
            repeat = data[pos] + 1
            pos += 1
            done = 0
            while done < width:
                ctl = data[pos]
                pos += 1
                if ctl == 128:
                    done = width
                elif ctl < 128:
                    pos += bpp_bytes
                    done += ctl + 1
                else:
                    n = 257 - ctl
                    pos += n * bpp_bytes
                    done += n
            rows += repeat
    return pages


def decode_pwg_page(data: bytes, index: int = 0) -> Image.Image:
    """Decode one page back to an image (tests check the encoder round-trips)."""
    pos = 4
    for i in range(index + 1):
        head = data[pos : pos + HEADER_SIZE]
        width, height = struct.unpack_from(">II", head, 372)
        bpp = struct.unpack_from(">I", head, 388)[0] // 8
        pos += HEADER_SIZE
        canvas = np.zeros((height, width, bpp), dtype=np.uint8)
        y = 0
        while y < height:
            repeat = data[pos] + 1
            pos += 1
            row = np.zeros((width, bpp), dtype=np.uint8)
            x = 0
            while x < width:
                ctl = data[pos]
                pos += 1
                if ctl < 128:
                    row[x : x + ctl + 1] = np.frombuffer(data[pos : pos + bpp], dtype=np.uint8)
                    pos += bpp
                    x += ctl + 1
                elif ctl == 128:
                    row[x:] = 255
                    x = width
                else:
                    n = 257 - ctl
                    lit = np.frombuffer(data[pos : pos + n * bpp], dtype=np.uint8)
                    row[x : x + n] = lit.reshape(n, bpp)
                    pos += n * bpp
                    x += n
            canvas[y : y + repeat] = row
            y += repeat
        if i == index:
            arr = canvas[..., 0] if bpp == 1 else canvas
            return Image.fromarray(arr, "L" if bpp == 1 else "RGB")
    raise IndexError(index)
