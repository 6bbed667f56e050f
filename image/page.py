"""One film onto one page: layout, magnification, borders, trim, footer (PS3.4 H, PS3.3 C.13).

Memory-bounded: one page buffer (8-bit grey or RGB at the printer's resolution); each
image box is converted and scaled on its own, pasted, and dropped before the next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from image import film as film_mod
from image.density import density_value
from image.pixels import PresentationLUT, SourceImage, Tone, to_printer_image

MAGNIFICATIONS = {
    "REPLICATE": Image.Resampling.NEAREST,
    "BILINEAR": Image.Resampling.BILINEAR,
    "CUBIC": Image.Resampling.BICUBIC,
    "NONE": None,
}
DECIMATE_CROP = ("DECIMATE", "CROP", "FAIL")

# Warnings a render may raise; the DICOM edge maps them to B6xx statuses.
DEMAGNIFIED = "demagnified"
CROPPED = "cropped"
DECIMATED = "decimated"
EMPTY_PAGE = "empty-page"
FOOTER_MM = 6.0


class ImageTooLarge(ValueError):
    """Requested Image Size larger than its box with Decimate/Crop Behavior FAIL (C603)."""


@dataclass(frozen=True)
class PageSpec:
    """The paper: its size, resolution, whether the film is fitted to it, and a footer."""

    paper_mm: tuple[float, float] | None = None  # None: the page is the film's own size
    dpi: int = 300
    fit: bool = True  # False: true size, centred, cropped if the paper is smaller
    margin_mm: float = 5.0
    color: bool = False
    footer: str = ""


@dataclass(frozen=True)
class FilmSpec:
    """The Film Box attributes that shape the page (PS3.3 C.13.3)."""

    display_format: str = "STANDARD\\1,1"
    film_size_id: str = "8INX10IN"
    orientation: str = "PORTRAIT"
    magnification: str = "CUBIC"
    border_density: str = "BLACK"
    empty_image_density: str = "BLACK"
    trim: bool = False
    tone: Tone = field(default_factory=Tone)
    gap_mm: float = 1.0


@dataclass(frozen=True)
class BoxSpec:
    """One image box: its pixels and the Image Box attributes (PS3.3 C.13.5)."""

    position: int
    loader: Callable[[], SourceImage]  # pixels are read only when the box is drawn
    polarity: str = "NORMAL"
    magnification: str = ""  # "" = the film box's
    requested_size_mm: float = 0.0  # width of the image on film; 0 = fill the box
    decimate_crop: str = "DECIMATE"
    plut: PresentationLUT = field(default_factory=PresentationLUT)


class PageBuffer:
    """The page being drawn: one 8-bit band for grey, three for colour.

    Pillow keeps an "RGB" image at 4 bytes a pixel; three "L" bands keep it at 3, which
    saves a quarter of the largest buffer (a 14x17 in colour page at 300 dpi: 64 MB, not
    86 MB). Everything draws band by band.
    """

    def __init__(self, mode: str, size: tuple[int, int], fill: int) -> None:
        self.mode = mode
        self.size = size
        self.bands = [Image.new("L", size, fill) for _ in range(3 if mode == "RGB" else 1)]

    @property
    def width(self) -> int:
        """Width in pixels."""
        return self.size[0]

    @property
    def height(self) -> int:
        """Height in pixels."""
        return self.size[1]

    def fill(self, value: int, box: tuple[int, int, int, int]) -> None:
        """Fill a rectangle (left, top, right, bottom) with one grey level."""
        for band in self.bands:
            band.paste(value, box)

    def paste(self, im: Image.Image, xy: tuple[int, int]) -> None:
        """Paste a grey ("L") or colour ("RGB") image."""
        parts = im.split() if im.mode == "RGB" else (im,) * len(self.bands)
        if len(self.bands) == 1 and im.mode == "RGB":
            parts = (im.convert("L"),)
        for band, part in zip(self.bands, parts, strict=False):
            band.paste(part, xy)

    def rectangle(self, box: tuple[int, int, int, int], value: int) -> None:
        """Outline a rectangle in one grey level."""
        for band in self.bands:
            ImageDraw.Draw(band).rectangle(box, outline=value)

    def text(self, xy: tuple[int, int], text: str, font: Any, value: int) -> None:
        """Write a line of text, vertically centred on xy."""
        for band in self.bands:
            ImageDraw.Draw(band).text(xy, text, fill=value, font=font, anchor="lm")

    def strip(self, top: int, bottom: int) -> Image.Image:
        """Rows top..bottom as one image (what the PDF writer compresses)."""
        crops = [band.crop((0, top, self.width, bottom)) for band in self.bands]
        return crops[0] if len(crops) == 1 else Image.merge("RGB", crops)

    def image(self) -> Image.Image:
        """The whole page as one Pillow image (for small pages and tests)."""
        return self.strip(0, self.height)

    def reduce(self, factor: int) -> Image.Image:
        """A smaller copy, band by band."""
        small = [band.reduce(factor) for band in self.bands]
        return small[0] if len(small) == 1 else Image.merge("RGB", small)


@dataclass
class RenderResult:
    """The page and what had to be changed to print it."""

    page: PageBuffer
    warnings: set[str] = field(default_factory=set)

    @property
    def image(self) -> Image.Image:
        """The page as one Pillow image."""
        return self.page.image()


def page_geometry(film: FilmSpec, page: PageSpec) -> tuple[tuple[int, int], film_mod.Rect, float]:
    """(page size px, film area on the page, film mm -> page px scale)."""
    fw, fh = film_mod.film_size_mm(film.film_size_id, film.orientation)
    dpi = page.dpi
    if page.paper_mm is None:
        film_px = (film_mod.mm_to_px(fw, dpi), film_mod.mm_to_px(fh, dpi))
        band = film_mod.mm_to_px(FOOTER_MM, dpi) if page.footer else 0  # below the film
        size = (film_px[0], film_px[1] + band)
        return size, film_mod.Rect(0, 0, *film_px), dpi / film_mod.MM_PER_INCH
    pw, ph = page.paper_mm
    if (fw > fh) != (pw > ph) and pw != ph:
        pw, ph = ph, pw  # paper turned to the film's orientation
    size = (film_mod.mm_to_px(pw, dpi), film_mod.mm_to_px(ph, dpi))
    footer_mm = FOOTER_MM if page.footer else 0.0
    if page.fit:
        avail_w, avail_h = pw - 2 * page.margin_mm, ph - 2 * page.margin_mm - footer_mm
        mm_scale = min(avail_w / fw, avail_h / fh)
    else:
        mm_scale = 1.0
    scale = mm_scale * dpi / film_mod.MM_PER_INCH
    w, h = round(fw * scale), round(fh * scale)
    x = (size[0] - w) // 2
    y = (size[1] - film_mod.mm_to_px(footer_mm, dpi) - h) // 2
    return size, film_mod.Rect(x, y, w, h), scale


def _fit(src_w: int, src_h: int, box: film_mod.Rect) -> tuple[int, int]:
    """Largest size of the source's aspect ratio inside the box."""
    scale = min(box.w / src_w, box.h / src_h)
    return max(1, round(src_w * scale)), max(1, round(src_h * scale))


def _target_size(
    spec: BoxSpec, src_w: int, src_h: int, box: film_mod.Rect, scale: float, mag: str
) -> tuple[tuple[int, int], set[str]]:
    """Size of the image on the page and the warnings its request raises."""
    warnings: set[str] = set()
    if spec.requested_size_mm > 0:
        w = max(1, round(spec.requested_size_mm * scale))
        size = (w, max(1, round(src_h * w / src_w)))
    elif mag == "NONE":
        size = (src_w, src_h)
    else:
        return _fit(src_w, src_h, box), warnings
    if size[0] <= box.w and size[1] <= box.h:
        return size, warnings
    if spec.decimate_crop == "FAIL":
        raise ImageTooLarge(f"image box {spec.position}: requested image is larger than its box")
    if spec.decimate_crop == "CROP":
        warnings.add(CROPPED)
        return size, warnings
    warnings.add(DECIMATED if spec.requested_size_mm > 0 else DEMAGNIFIED)
    return _fit(src_w, src_h, box), warnings


def _draw_box(
    page_im: PageBuffer, spec: BoxSpec, box: film_mod.Rect, film: FilmSpec, scale: float
) -> set[str]:
    src = spec.loader()
    mag = (spec.magnification or film.magnification).upper()
    if mag not in MAGNIFICATIONS:
        mag = film.magnification
    rows = max(1, round(src.rows * src.aspect))  # non-square pixels keep their shape
    (w, h), warnings = _target_size(spec, src.columns, rows, box, scale, mag)
    im = to_printer_image(src, spec.polarity, spec.plut, film.tone)
    del src
    if (w, h) != im.size:
        resample = MAGNIFICATIONS[mag]
        if resample is None:
            resample = Image.Resampling.BICUBIC if (w, h) < im.size else Image.Resampling.NEAREST
        im = im.resize((w, h), resample)
    x, y = box.x + (box.w - w) // 2, box.y + (box.h - h) // 2
    if w > box.w or h > box.h:  # CROP: keep the centre of the image inside the box
        left, top = max(0, box.x - x), max(0, box.y - y)
        im = im.crop((left, top, left + min(w, box.w), top + min(h, box.h)))
        x, y = max(x, box.x), max(y, box.y)
    page_im.paste(im, (x, y))
    return warnings


def _footer(page_im: PageBuffer, text: str, dpi: int) -> None:
    size = max(8, film_mod.mm_to_px(3.0, dpi))
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        font = ImageFont.load_default()
    y = page_im.height - film_mod.mm_to_px(FOOTER_MM / 2, dpi)
    page_im.text((film_mod.mm_to_px(5.0, dpi), y), text, font, 0)


def render_film(film: FilmSpec, boxes: list[BoxSpec], page: PageSpec) -> RenderResult:
    """Draw one film box onto one page."""
    size, area, scale = page_geometry(film, page)
    mode = "RGB" if page.color else "L"
    tone = film.tone
    dmax = tone.clipped()[1]
    border = tone.grey(density_value(film.border_density, dmax))
    empty = tone.grey(density_value(film.empty_image_density, dmax))
    white = tone.grey(0.0)
    page_im = PageBuffer(mode, size, white)
    page_im.fill(border, (area.x, area.y, area.x + area.w, area.y + area.h))
    gap = max(0, round(film.gap_mm * scale))
    rects = film_mod.layout_boxes(film.display_format, area, gap)
    by_position = {b.position: b for b in boxes}
    result = RenderResult(page_im)
    for pos, rect in enumerate(rects, start=1):
        spec = by_position.get(pos)
        if spec is None:
            page_im.fill(empty, (rect.x, rect.y, rect.x + rect.w, rect.y + rect.h))
        else:
            result.warnings |= _draw_box(page_im, spec, rect, film, scale)
        if film.trim:
            page_im.rectangle(
                (rect.x, rect.y, rect.x + rect.w - 1, rect.y + rect.h - 1), 255 - border
            )
    if not boxes:
        result.warnings.add(EMPTY_PAGE)
    if page.footer:
        _footer(page_im, page.footer, page.dpi)
    return result


def preview(page_im: PageBuffer | Image.Image, max_side: int = 1200) -> Image.Image:
    """A smaller copy of a page for the web UI (same content, reduced resolution)."""
    factor = max(1, -(-max(page_im.size) // max_side))
    if isinstance(page_im, PageBuffer):
        return page_im.reduce(factor)
    return page_im.reduce(factor) if factor > 1 else page_im.copy()
