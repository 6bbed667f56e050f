"""Test factories for pixels, and the golden-image comparison (after Pillow's Tests/helper.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageStat

from image.pixels import SourceImage

GOLDEN = Path(__file__).resolve().parent / "golden"
ACTUAL = GOLDEN / "_actual"


def make_gray(
    rows: int = 64,
    cols: int = 48,
    bits: int = 12,
    level: float = 1.0,
    photometric: str = "MONOCHROME2",
) -> SourceImage:
    """A horizontal ramp scaled by ``level``, with a bright marker in the top-left corner."""
    vmax = (1 << bits) - 1
    ramp = np.linspace(0, vmax * level, cols)
    arr = np.tile(ramp, (rows, 1))
    arr[: rows // 6, : cols // 6] = vmax
    dtype = np.uint8 if bits == 8 else np.uint16
    return SourceImage(arr.round().astype(dtype), photometric, bits)


def make_rgb(rows: int = 48, cols: int = 64) -> SourceImage:
    """Red ramp left to right, green top to bottom, blue constant; white top-left marker."""
    arr = np.zeros((rows, cols, 3), dtype=np.uint8)
    arr[..., 0] = np.linspace(0, 255, cols)[None, :]
    arr[..., 1] = np.linspace(0, 255, rows)[:, None]
    arr[..., 2] = 96
    arr[: rows // 6, : cols // 6] = 255
    return SourceImage(arr, "RGB", 8)


def assert_image_similar(actual: Image.Image, name: str, epsilon: float = 1.0) -> None:
    """Compare with tests/golden/NAME.png (mean absolute difference per channel <= epsilon).

    With UPDATE_GOLDEN=1 the golden image is (re)written instead. On a failure the actual
    image is saved in tests/golden/_actual/ to look at.
    """
    path = GOLDEN / f"{name}.png"
    if os.environ.get("UPDATE_GOLDEN"):
        actual.save(path, optimize=True)
        return
    assert path.exists(), f"no golden image {path}; run with UPDATE_GOLDEN=1 and review it"
    expected = Image.open(path)
    ok = expected.mode == actual.mode and expected.size == actual.size
    diff = 0.0
    if ok:
        diff = max(ImageStat.Stat(ImageChops.difference(actual, expected)).mean)
        ok = diff <= epsilon
    if not ok:
        ACTUAL.mkdir(exist_ok=True)
        actual.save(ACTUAL / f"{name}.png")
        raise AssertionError(
            f"{name}: {actual.mode} {actual.size} differs from golden {expected.mode} "
            f"{expected.size} (mean difference {diff:.2f} > {epsilon}); "
            f"actual saved in {ACTUAL}"
        )
