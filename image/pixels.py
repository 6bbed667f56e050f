"""Image box pixels to printer grey: polarity, Presentation LUT, P-values, density (PS3.4 H).

The whole grayscale chain is folded into one lookup table indexed by the stored pixel
value (at most 65536 entries), so a page costs one table lookup per source pixel.
Order of operations: photometric interpretation -> polarity -> Presentation LUT ->
P-values -> optical density (PS3.14) -> printer grey.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from image import density as dens

PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2", "RGB")
POLARITIES = ("NORMAL", "REVERSE")
LUT_SHAPES = ("IDENTITY", "LIN OD")


class PixelError(ValueError):
    """Pixel data or a Presentation LUT that cannot be printed as described."""


@dataclass(frozen=True)
class PresentationLUT:
    """IDENTITY, LIN OD, or an explicit LUT (descriptor and data) (PS3.3 C.11.4)."""

    shape: str = "IDENTITY"
    first_mapped: int = 0
    output_bits: int = 0
    data: tuple[int, ...] = ()

    @property
    def explicit(self) -> bool:
        """True for a LUT given as data rather than a shape."""
        return bool(self.data)


@dataclass(frozen=True)
class Tone:
    """How densities are reproduced: film box densities and the paper's own range."""

    min_density: float = 0.10
    max_density: float = 2.00
    illumination: float = 2000.0
    reflected_ambient: float = 10.0
    paper_dmin: float = 0.05
    paper_dmax: float = 2.00

    def clipped(self) -> tuple[float, float]:
        """Min/max density limited to what the paper can show."""
        lo = max(self.min_density, self.paper_dmin)
        hi = min(self.max_density, self.paper_dmax)
        return lo, max(hi, lo + 0.01)

    def grey(self, density: float) -> int:
        """Printer grey of one density (borders, empty boxes)."""
        return int(dens.density_to_grey(np.float64(density), self.paper_dmin, self.paper_dmax))


@dataclass(frozen=True)
class SourceImage:
    """The pixels of one image box as received (Basic Grayscale/Color Image Sequence)."""

    array: np.ndarray  # (rows, columns) uint8/uint16, or (rows, columns, 3) uint8 for RGB
    photometric: str = "MONOCHROME2"
    bits_stored: int = 8
    aspect: float = 1.0  # Pixel Aspect Ratio: pixel height / pixel width

    @property
    def rows(self) -> int:
        """Height in pixels."""
        return int(self.array.shape[0])

    @property
    def columns(self) -> int:
        """Width in pixels."""
        return int(self.array.shape[1])


def _p_index(values: np.ndarray, vmax: int, plut: PresentationLUT) -> np.ndarray:
    """Input values (MONOCHROME2 sense, 0..vmax) to P-value indices 0..P_STEPS-1."""
    if plut.explicit:
        data = np.asarray(plut.data, dtype=np.float64)
        n = len(data)
        idx = values.astype(np.float64) - plut.first_mapped
        if n != vmax + 1:
            idx = idx * (n - 1) / vmax
        out = data[np.clip(np.round(idx), 0, n - 1).astype(np.int64)]
        scale = (1 << plut.output_bits) - 1 if plut.output_bits else max(out.max(), 1)
        p = out / scale
    else:
        p = values.astype(np.float64) / vmax
    return np.clip(np.round(p * (dens.P_STEPS - 1)), 0, dens.P_STEPS - 1).astype(np.int64)


def grey_table(
    bits_stored: int,
    photometric: str,
    polarity: str,
    plut: PresentationLUT,
    tone: Tone,
) -> np.ndarray:
    """uint8 printer grey for each stored value 0..2^bits-1 of a grayscale image."""
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise PixelError(f"{photometric} is not a grayscale Photometric Interpretation")
    if polarity not in POLARITIES:
        raise PixelError(f"unknown Polarity {polarity!r}")
    if not plut.explicit and plut.shape not in LUT_SHAPES:
        raise PixelError(f"unsupported Presentation LUT Shape {plut.shape!r}")
    vmax = (1 << bits_stored) - 1
    values = np.arange(vmax + 1, dtype=np.int64)
    if photometric == "MONOCHROME1":
        values = vmax - values
    if polarity == "REVERSE":
        values = vmax - values
    dmin, dmax = tone.clipped()
    if not plut.explicit and plut.shape == "LIN OD":
        # Output linear in optical density: 0 -> Max Density, vmax -> Min Density.
        density = dmax - (values / vmax) * (dmax - dmin)
    else:
        table = dens.pvalue_density_table(dmin, dmax, tone.illumination, tone.reflected_ambient)
        density = table[_p_index(values, vmax, plut)]
    return dens.density_to_grey(density, tone.paper_dmin, tone.paper_dmax)


def to_printer_image(
    src: SourceImage, polarity: str, plut: PresentationLUT, tone: Tone
) -> Image.Image:
    """The box's pixels as a Pillow image in printer grey ("L") or colour ("RGB")."""
    if src.photometric == "RGB":
        arr = src.array
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise PixelError("RGB pixels must be 8 bits per sample, three samples")
        return Image.fromarray(np.ascontiguousarray(arr), "RGB")
    if src.bits_stored not in (8, 12, 16) or src.array.ndim != 2:
        raise PixelError(f"grayscale pixels of {src.bits_stored} bits are not printable")
    table = grey_table(src.bits_stored, src.photometric, polarity, plut, tone)
    mask = (1 << src.bits_stored) - 1
    stored = src.array
    if stored.dtype != np.uint8:
        stored = np.bitwise_and(stored, mask)
    return Image.fromarray(table[stored], "L")
