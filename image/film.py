"""Film geometry: film sizes, Image Display Format layouts, boxes on a page (PS3.3 C.13.3).

Pure: no pixels, no I/O. Positions are 1-based and row-major, as Image Box Position is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MM_PER_INCH = 25.4

# Film Size ID (2010,0050) -> (width, height) in mm, portrait (PS3.3 C.13.3).
FILM_SIZES_MM: dict[str, tuple[float, float]] = {
    "8INX10IN": (203.2, 254.0),
    "8_5INX11IN": (215.9, 279.4),
    "10INX12IN": (254.0, 304.8),
    "10INX14IN": (254.0, 355.6),
    "11INX14IN": (279.4, 355.6),
    "11INX17IN": (279.4, 431.8),
    "14INX14IN": (355.6, 355.6),
    "14INX17IN": (355.6, 431.8),
    "24CMX24CM": (240.0, 240.0),
    "24CMX30CM": (240.0, 300.0),
    "A4": (210.0, 297.0),
    "A3": (297.0, 420.0),
}

# Paper sizes a printer profile may name (IPP media names use the same sizes).
PAPER_SIZES_MM: dict[str, tuple[float, float]] = {
    "A4": (210.0, 297.0),
    "A3": (297.0, 420.0),
    "LETTER": (215.9, 279.4),
    "LEGAL": (215.9, 355.6),
    "TABLOID": (279.4, 431.8),
}

ORIENTATIONS = ("PORTRAIT", "LANDSCAPE")
MAGNIFICATIONS = ("REPLICATE", "BILINEAR", "CUBIC", "NONE")
MAX_BOXES = 100


class LayoutError(ValueError):
    """An Image Display Format, Film Size ID or orientation that cannot be laid out."""


@dataclass(frozen=True)
class Rect:
    """A box on the page in device pixels."""

    x: int
    y: int
    w: int
    h: int


def film_size_mm(film_size_id: str, orientation: str = "PORTRAIT") -> tuple[float, float]:
    """(width, height) in mm of a film in its orientation."""
    try:
        w, h = FILM_SIZES_MM[film_size_id]
    except KeyError:
        raise LayoutError(f"unknown Film Size ID {film_size_id!r}") from None
    if orientation not in ORIENTATIONS:
        raise LayoutError(f"unknown Film Orientation {orientation!r}")
    return (h, w) if orientation == "LANDSCAPE" else (w, h)


def _counts(text: str, what: str) -> list[int]:
    if not re.fullmatch(r"\d{1,3}(,\d{1,3})*", text):
        raise LayoutError(f"{what} needs numbers separated by commas, got {text!r}")
    counts = [int(n) for n in text.split(",")]
    if any(n < 1 for n in counts):
        raise LayoutError(f"{what} counts must be at least 1")
    return counts


def parse_display_format(fmt: str) -> tuple[str, list[int]]:
    """Split an Image Display Format into (kind, counts).

    STANDARD\\C,R -> ("STANDARD", [C, R]); ROW\\n1,n2 -> ("ROW", [n1, n2]) (images per
    row, top to bottom); COL\\n1,n2 -> ("COL", [n1, n2]) (images per column, left to right).
    """
    kind, sep, rest = fmt.strip().partition("\\")
    kind = kind.strip().upper()
    if kind not in ("STANDARD", "ROW", "COL") or not sep:
        raise LayoutError(f"unsupported Image Display Format {fmt!r}")
    counts = _counts(rest.strip(), kind)
    if kind == "STANDARD" and len(counts) != 2:
        raise LayoutError("STANDARD needs columns and rows: STANDARD\\C,R")
    if box_count_of(kind, counts) > MAX_BOXES:
        raise LayoutError(f"{fmt!r} has more than {MAX_BOXES} image boxes")
    return kind, counts


def box_count_of(kind: str, counts: list[int]) -> int:
    """How many image boxes a parsed layout has."""
    return counts[0] * counts[1] if kind == "STANDARD" else sum(counts)


def box_count(fmt: str) -> int:
    """How many image boxes an Image Display Format has."""
    return box_count_of(*parse_display_format(fmt))


def _split(start: int, length: int, n: int, gap: int) -> list[tuple[int, int]]:
    """Split [start, start+length) into n cells separated by gap pixels: (offset, size)."""
    usable = max(length - gap * (n - 1), n)
    edges = [start + (usable * i) // n for i in range(n + 1)]
    return [(edges[i] + gap * i, edges[i + 1] - edges[i]) for i in range(n)]


def layout_boxes(fmt: str, area: Rect, gap: int = 0) -> list[Rect]:
    """The image boxes of a layout inside ``area``, indexed by position - 1 (row-major)."""
    kind, counts = parse_display_format(fmt)
    boxes: list[Rect] = []
    if kind == "STANDARD":
        cols, rows = counts
        xs = _split(area.x, area.w, cols, gap)
        for y, h in _split(area.y, area.h, rows, gap):
            boxes.extend(Rect(x, y, w, h) for x, w in xs)
    elif kind == "ROW":
        for (y, h), n in zip(_split(area.y, area.h, len(counts), gap), counts, strict=True):
            boxes.extend(Rect(x, y, w, h) for x, w in _split(area.x, area.w, n, gap))
    else:
        # COL: positions run down each column, then to the next column (PS3.3 C.13.5.1).
        for (x, w), n in zip(_split(area.x, area.w, len(counts), gap), counts, strict=True):
            boxes.extend(Rect(x, y, w, h) for y, h in _split(area.y, area.h, n, gap))
    return boxes


def mm_to_px(mm: float, dpi: int) -> int:
    """Millimetres to device pixels at ``dpi``."""
    return round(mm * dpi / MM_PER_INCH)
