"""Stored pixels to a picture for screens: rescale, VOI window, polarity, fit, encode
(PS3.18 8.3.5.1 rendered media types, PS3.3 C.11.2). Pure: arrays in, bytes out."""

from __future__ import annotations

from io import BytesIO

import numpy as np
from PIL import Image

MEDIA_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}


class RenderError(ValueError):
    """Pixels or parameters that cannot be rendered as asked."""


def window(
    pixels: np.ndarray,
    photometric: str,
    center: float | None = None,
    width: float | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
) -> Image.Image:
    """One frame as an 8-bit picture: grey frames through the VOI window (the whole
    range when none is given), MONOCHROME1 inverted; RGB kept (PS3.3 C.11.2.1.2)."""
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422") and pixels.ndim == 3:
        if pixels.dtype != np.uint8:
            pixels = np.clip(pixels, 0, 255).astype(np.uint8)
        return Image.fromarray(pixels, "RGB")
    if pixels.ndim != 2:
        raise RenderError(f"{photometric} frames of shape {pixels.shape} cannot be rendered")
    values = pixels.astype(np.float64) * slope + intercept
    if center is None or width is None or width < 1:
        lo, hi = float(values.min()), float(values.max())
    else:
        lo, hi = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    span = max(hi - lo, 1e-9)
    grey = np.clip((values - lo) / span * 255.0, 0, 255).astype(np.uint8)
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return Image.fromarray(grey, "L")


def fit(im: Image.Image, width: int, height: int) -> Image.Image:
    """Scaled to fit within width x height, keeping its aspect ratio (never enlarged)."""
    out = im.copy()
    out.thumbnail((max(1, width), max(1, height)), Image.Resampling.LANCZOS)
    return out


def encode(im: Image.Image, media_type: str, quality: int = 90) -> bytes:
    """The picture as ``media_type`` (image/jpeg or image/png)."""
    fmt = MEDIA_TYPES.get(media_type)
    if fmt is None:
        raise RenderError(f"{media_type} is not a rendered media type offered")
    buf = BytesIO()
    if fmt == "JPEG":
        im.save(buf, fmt, quality=max(1, min(100, quality)))
    else:
        im.save(buf, fmt)
    return buf.getvalue()
