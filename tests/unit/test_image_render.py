"""Film rendering against golden images: every layout kind, polarity, LUT, colour, sizes."""

from __future__ import annotations

import io
import re
import subprocess
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from image import film as film_mod
from image.page import (
    CROPPED,
    DECIMATED,
    EMPTY_PAGE,
    BoxSpec,
    FilmSpec,
    ImageTooLarge,
    PageSpec,
    render_film,
)
from image.pdf import write_pdf
from image.pixels import PresentationLUT, SourceImage, Tone
from tests.helpers import require_peer
from tests.imaging import assert_image_similar, make_gray, make_rgb

DPI = 24  # small pages keep the golden images a few kilobytes


def boxes_with_levels(n: int, **kw: object) -> list[BoxSpec]:
    """n boxes whose images differ in brightness, so a misplaced box changes the page."""
    return [
        BoxSpec(i, (lambda lv=0.35 + 0.65 * i / n: make_gray(level=lv)), **kw)  # type: ignore[arg-type]
        for i in range(1, n + 1)
    ]


def render(film: FilmSpec, boxes: list[BoxSpec], **page: object) -> Image.Image:
    return render_film(film, boxes, PageSpec(dpi=DPI, **page)).image  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "fmt", "positions"),
    [
        ("standard_2x3", "STANDARD\\2,3", [1, 2, 3, 4, 5, 6]),
        ("standard_3x2_partial", "STANDARD\\3,2", [1, 5, 6]),
        ("row_1_3", "ROW\\1,3", [1, 2, 3, 4]),
        ("row_2_1_partial", "ROW\\2,1", [2, 3]),
        ("col_2_1", "COL\\2,1", [1, 2, 3]),
        ("col_1_3_partial", "COL\\1,3", [1, 4]),
    ],
)
def test_layouts(name: str, fmt: str, positions: list[int]) -> None:
    all_boxes = boxes_with_levels(film_mod.box_count(fmt))
    boxes = [b for b in all_boxes if b.position in positions]
    film = FilmSpec(fmt, "8INX10IN", empty_image_density="WHITE")
    assert_image_similar(render(film, boxes), name)


def test_landscape_14x17_with_white_border_and_trim() -> None:
    film = FilmSpec("STANDARD\\3,1", "14INX17IN", "LANDSCAPE", border_density="WHITE", trim=True)
    im = render(film, boxes_with_levels(3))
    assert im.width > im.height
    assert_image_similar(im, "landscape_trim")


@pytest.mark.parametrize(
    ("name", "polarity", "photometric"),
    [
        ("mono2_normal", "NORMAL", "MONOCHROME2"),
        ("mono2_reverse", "REVERSE", "MONOCHROME2"),
        ("mono1_normal", "NORMAL", "MONOCHROME1"),
    ],
)
def test_polarity_and_photometric(name: str, polarity: str, photometric: str) -> None:
    box = BoxSpec(1, lambda: make_gray(photometric=photometric), polarity=polarity)
    assert_image_similar(render(FilmSpec("STANDARD\\1,1"), [box]), name)


def test_mono1_is_mono2_reversed() -> None:
    film = FilmSpec("STANDARD\\1,1")
    a = render(film, [BoxSpec(1, lambda: make_gray(photometric="MONOCHROME1"))])
    b = render(film, [BoxSpec(1, lambda: make_gray(), polarity="REVERSE")])
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_8_and_12_bit_images_print_alike() -> None:
    film = FilmSpec("STANDARD\\1,1", border_density="WHITE")
    a = np.asarray(render(film, [BoxSpec(1, lambda: make_gray(bits=8))]), dtype=int)
    b = np.asarray(render(film, [BoxSpec(1, lambda: make_gray(bits=12))]), dtype=int)
    assert np.abs(a - b).max() <= 3


@pytest.mark.parametrize("shape", ["IDENTITY", "LIN OD"])
def test_presentation_lut_shapes(shape: str) -> None:
    box = BoxSpec(1, lambda: make_gray(bits=8), plut=PresentationLUT(shape))
    name = "plut_" + shape.replace(" ", "_").lower()
    assert_image_similar(render(FilmSpec("STANDARD\\1,1"), [box]), name)


def test_explicit_presentation_lut_inverting_equals_reverse_polarity() -> None:
    lut = PresentationLUT("", 0, 12, tuple(round((255 - i) * 4095 / 255) for i in range(256)))
    film = FilmSpec("STANDARD\\1,1")
    a = render(film, [BoxSpec(1, lambda: make_gray(bits=8), plut=lut)])
    b = render(film, [BoxSpec(1, lambda: make_gray(bits=8), polarity="REVERSE")])
    assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1
    assert_image_similar(a, "plut_explicit_inverse")


def test_min_max_density_narrow_the_grey_range() -> None:
    tone = Tone(min_density=0.5, max_density=1.2)
    im = render(FilmSpec("STANDARD\\1,1", tone=tone), [BoxSpec(1, lambda: make_gray())])
    full = render(FilmSpec("STANDARD\\1,1"), [BoxSpec(1, lambda: make_gray())])
    centre = (im.width // 4, im.height // 4, 3 * im.width // 4, 3 * im.height // 4)
    lo, hi = im.crop(centre).getextrema()
    flo, fhi = full.crop(centre).getextrema()
    assert lo > flo and hi < fhi
    assert_image_similar(im, "density_50_120")


def test_rgb_on_a_colour_page() -> None:
    film = FilmSpec("STANDARD\\2,1", "8INX10IN", "LANDSCAPE")
    boxes = [BoxSpec(1, make_rgb), BoxSpec(2, lambda: make_gray())]
    im = render(film, boxes, color=True)
    assert im.mode == "RGB"
    assert_image_similar(im, "rgb_color")


def test_aspect_ratio_is_preserved_and_image_centred() -> None:
    tall = lambda: SourceImage(np.full((200, 50), 255, dtype=np.uint8), "MONOCHROME2", 8)  # noqa: E731
    film = FilmSpec("STANDARD\\1,1", "14INX14IN", border_density="BLACK")
    im = np.asarray(render(film, [BoxSpec(1, tall)]))
    ys, xs = np.nonzero(im > 128)
    width, height = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    assert abs(height / width - 4.0) < 0.1
    assert abs((xs.min() + xs.max()) / 2 - im.shape[1] / 2) <= 2


@pytest.mark.parametrize("film_size", sorted(film_mod.FILM_SIZES_MM))
def test_every_film_size_gives_its_page_size(film_size: str) -> None:
    w_mm, h_mm = film_mod.FILM_SIZES_MM[film_size]
    im = render(FilmSpec("STANDARD\\1,1", film_size), [])
    assert im.size == (film_mod.mm_to_px(w_mm, DPI), film_mod.mm_to_px(h_mm, DPI))


def test_requested_image_size_and_decimate_crop_behaviour() -> None:
    film = FilmSpec(
        "STANDARD\\2,1", "8INX10IN", border_density="WHITE", empty_image_density="WHITE"
    )
    small = BoxSpec(1, lambda: make_gray(), requested_size_mm=40.0)
    im = np.asarray(render(film, [small]))
    cols = np.nonzero((im < 250).any(axis=0))[0]
    assert abs((cols.max() - cols.min() + 1) - film_mod.mm_to_px(40.0, DPI)) <= 1
    big = dict(requested_size_mm=500.0)
    res = render_film(film, [BoxSpec(1, lambda: make_gray(), **big)], PageSpec(dpi=DPI))
    assert res.warnings == {DECIMATED}
    res = render_film(
        film, [BoxSpec(1, lambda: make_gray(), decimate_crop="CROP", **big)], PageSpec(dpi=DPI)
    )
    assert res.warnings == {CROPPED}
    with pytest.raises(ImageTooLarge):
        render_film(
            film, [BoxSpec(1, lambda: make_gray(), decimate_crop="FAIL", **big)], PageSpec(dpi=DPI)
        )


def test_replicate_magnification_keeps_hard_edges() -> None:
    checker = np.kron(np.indices((4, 4)).sum(axis=0) % 2, np.ones((1, 1))) * 255
    src = lambda: SourceImage(checker.astype(np.uint8), "MONOCHROME2", 8)  # noqa: E731
    film = FilmSpec("STANDARD\\1,1", "14INX14IN", magnification="REPLICATE")
    im = np.asarray(render(film, [BoxSpec(1, src)]))
    centre = im[im.shape[0] // 4 : 3 * im.shape[0] // 4, im.shape[1] // 4 : 3 * im.shape[1] // 4]
    assert set(np.unique(centre)) <= {im.min(), im.max()}


def test_empty_film_warns_and_uses_empty_density() -> None:
    res = render_film(FilmSpec("STANDARD\\1,1", empty_image_density="100"), [], PageSpec(dpi=DPI))
    assert res.warnings == {EMPTY_PAGE}
    lo, hi = res.image.getextrema()
    assert 0 < lo < 255


def test_fit_to_paper_and_true_size() -> None:
    film = FilmSpec("STANDARD\\1,1", "14INX17IN")
    fit = render(film, [], paper_mm=film_mod.PAPER_SIZES_MM["A4"])
    assert fit.size == (film_mod.mm_to_px(210, DPI), film_mod.mm_to_px(297, DPI))
    true = render(film, [], paper_mm=film_mod.PAPER_SIZES_MM["A4"], fit=False)
    assert np.asarray(true).max() == np.asarray(true).min()  # the film covers the paper
    assert np.asarray(fit).max() != np.asarray(fit).min()  # a white margin around the film


def test_footer_is_drawn_below_the_film() -> None:
    film = FilmSpec("STANDARD\\1,1", "8INX10IN", border_density="WHITE")
    page = PageSpec(dpi=100, paper_mm=(210.0, 297.0), footer="CHEST 2026-11-27 page 1 of 2")
    with_footer = np.asarray(render_film(film, [], page).image)
    without = np.asarray(render_film(film, [], PageSpec(dpi=100, paper_mm=(210.0, 297.0))).image)
    bottom = slice(with_footer.shape[0] - film_mod.mm_to_px(8, 100), None)
    assert (with_footer[bottom] < 128).any()
    assert not (without[bottom] < 128).any()


def _pdf_image_streams(data: bytes) -> list[bytes]:
    out = []
    for head in re.finditer(rb"/Subtype /Image.*?/Length (\d+) 0 R >>\nstream\n", data):
        comp = zlib.decompressobj()
        out.append(comp.decompress(data[head.end() :]))
    return out


@pytest.mark.interop  # needs a peer program
def test_pdf_is_lossless_and_has_the_paper_size(tmp_path) -> None:
    pdftoppm = require_peer("pdftoppm")
    film = FilmSpec("STANDARD\\2,1", "8INX10IN")
    page = render(film, [BoxSpec(1, make_rgb), BoxSpec(2, lambda: make_gray())], color=True)
    grey = page.convert("L")
    buf = io.BytesIO()
    assert write_pdf(buf, [(page, DPI), (grey, DPI)]) == 2
    data = buf.getvalue()
    assert _pdf_image_streams(data) == [page.tobytes(), grey.tobytes()]
    pdf = tmp_path / "film.pdf"
    pdf.write_bytes(data)
    subprocess.run(
        [pdftoppm, "-r", str(DPI), "-png", str(pdf), str(tmp_path / "p")], check=True, timeout=30
    )
    got = Image.open(tmp_path / "p-1.png").convert("RGB")
    assert got.size == page.size  # 8x10 in at 24 dpi: 192 x 240
    # poppler resamples the image even at 1:1, so edges soften a little.
    diff = np.abs(np.asarray(got, dtype=int) - np.asarray(page, dtype=int)).mean()
    assert diff < 3.0
    assert Image.open(tmp_path / "p-2.png").size == grey.size


def test_layout_positions_are_row_major_and_column_major() -> None:
    area = film_mod.Rect(0, 0, 300, 200)
    std = film_mod.layout_boxes("STANDARD\\3,2", area)
    assert [(b.x, b.y) for b in std] == [
        (0, 0),
        (100, 0),
        (200, 0),
        (0, 100),
        (100, 100),
        (200, 100),
    ]
    row = film_mod.layout_boxes("ROW\\1,2", area)
    assert [(b.x, b.y, b.w, b.h) for b in row] == [
        (0, 0, 300, 100),
        (0, 100, 150, 100),
        (150, 100, 150, 100),
    ]
    col = film_mod.layout_boxes("COL\\2,1", area)
    assert [(b.x, b.y, b.w, b.h) for b in col] == [
        (0, 0, 150, 100),
        (0, 100, 150, 100),
        (150, 0, 150, 200),
    ]


@pytest.mark.parametrize(
    "bad", ["SLIDE", "STANDARD\\2", "STANDARD\\0,1", "ROW\\", "CUSTOM\\1", "STANDARD\\11,10"]
)
def test_bad_display_formats_are_refused(bad: str) -> None:
    with pytest.raises(film_mod.LayoutError):
        film_mod.box_count(bad)


def test_non_square_pixels_keep_their_shape() -> None:
    def wide_pixels() -> SourceImage:  # 100 x 100 pixels, each twice as tall as wide
        return SourceImage(np.full((100, 100), 255, dtype=np.uint8), "MONOCHROME2", 8, aspect=2.0)

    film = FilmSpec("STANDARD\\1,1", "14INX14IN", border_density="BLACK")
    im = np.asarray(render(film, [BoxSpec(1, wide_pixels)]))
    ys, xs = np.nonzero(im > 128)
    assert abs((ys.max() - ys.min() + 1) / (xs.max() - xs.min() + 1) - 2.0) < 0.05


def test_footer_on_a_film_sized_page_gets_its_own_band() -> None:
    film = FilmSpec("STANDARD\\1,1", "8INX10IN", border_density="BLACK")
    plain = render_film(film, [], PageSpec(dpi=100)).image
    noted = render_film(film, [], PageSpec(dpi=100, footer="R")).image
    band = film_mod.mm_to_px(6.0, 100)
    assert noted.size == (plain.width, plain.height + band)
    assert np.array_equal(np.asarray(noted)[: plain.height], np.asarray(plain))
    assert (np.asarray(noted)[plain.height :] < 128).any()  # the text


@given(
    st.sampled_from(["STANDARD", "ROW", "COL"]),
    st.lists(st.integers(1, 6), min_size=1, max_size=5),
    st.integers(50, 3000),
    st.integers(50, 3000),
    st.integers(0, 5),
)
def test_layout_boxes_tile_the_area_without_overlap(
    kind: str, counts: list[int], w: int, h: int, gap: int
) -> None:
    if kind == "STANDARD":
        counts = (counts * 2)[:2]
    fmt = f"{kind}\\{','.join(map(str, counts))}"
    area = film_mod.Rect(10, 20, w, h)
    boxes = film_mod.layout_boxes(fmt, area, gap)
    assert len(boxes) == film_mod.box_count(fmt)
    for b in boxes:
        assert b.w >= 1 and b.h >= 1
        assert area.x <= b.x and b.x + b.w <= area.x + area.w
        assert area.y <= b.y and b.y + b.h <= area.y + area.h
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a.x + a.w <= b.x or b.x + b.w <= a.x or a.y + a.h <= b.y or b.y + b.h <= a.y
