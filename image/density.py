"""Optical density on paper: P-values to density (PS3.14) and density to printer grey.

Pure numpy. Tables are float32 with 4096 entries at most; nothing is page-sized.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

P_STEPS = 4096  # P-values are handled at 12-bit precision

# PS3.14 7.1: log10 L(j) as a rational function of ln(j), j in 1..1023.
_A, _B, _C, _D, _E = -1.3011877, -2.5840191e-2, 8.0242636e-2, -1.0320229e-1, 1.3646699e-1
_F, _G, _H, _K, _M = 2.8745620e-2, -2.5468404e-2, -3.1978977e-3, 1.2992634e-4, 1.3635334e-3
# PS3.14 7.1: j(L) as a polynomial of log10 L.
_INV = (
    71.498068,
    94.593053,
    41.912053,
    9.8247004,
    0.28175407,
    -1.1878455,
    -0.18014349,
    0.14710899,
    -0.017046845,
)


def gsdf_luminance(j: ArrayLike) -> np.ndarray:
    """Luminance (cd/m2) of JND index j (PS3.14 equation 1)."""
    x = np.log(np.asarray(j, dtype=np.float64))
    num = _A + _C * x + _E * x**2 + _G * x**3 + _M * x**4
    den = 1 + _B * x + _D * x**2 + _F * x**3 + _H * x**4 + _K * x**5
    return np.power(10.0, num / den)


def gsdf_index(luminance: float) -> float:
    """JND index of a luminance (PS3.14 equation 2)."""
    lg = np.log10(luminance)
    return float(sum(c * lg**i for i, c in enumerate(_INV)))


def luminance_of_density(density: ArrayLike, illumination: float, ambient: float) -> np.ndarray:
    """Reflected luminance of a density: L = La + L0 * 10^-D (PS3.14 7.2)."""
    return ambient + illumination * np.power(10.0, -np.asarray(density, dtype=np.float64))


def pvalue_density_table(
    dmin: float, dmax: float, illumination: float = 2000.0, ambient: float = 10.0
) -> np.ndarray:
    """Density of each of P_STEPS P-values, perceptually equal steps from dmax to dmin (PS3.14)."""
    lmax = float(luminance_of_density(np.float64(dmin), illumination, ambient))
    lmin = float(luminance_of_density(np.float64(dmax), illumination, ambient))
    jmin, jmax = gsdf_index(max(lmin, 0.05)), gsdf_index(min(lmax, 4000.0))
    j = np.linspace(jmin, jmax, P_STEPS)
    lum = gsdf_luminance(np.clip(j, 1.0, 1023.0))
    reflect = np.clip((lum - ambient) / illumination, 10.0**-dmax, 10.0**-dmin)
    return (-np.log10(reflect)).astype(np.float32)


def srgb_encode(linear: ArrayLike) -> np.ndarray:
    """Linear light (0..1) to the sRGB transfer curve (0..1) (IEC 61966-2-1)."""
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)


def density_to_grey(
    density: ArrayLike, paper_dmin: float = 0.05, paper_dmax: float = 2.0
) -> np.ndarray:
    """Printer grey level (uint8, sRGB-encoded) that prints ``density`` on paper.

    The paper reflects 10^-paper_dmin at grey 255 and 10^-paper_dmax at grey 0; between,
    the printer is assumed to follow the sRGB curve in reflectance. Densities outside the
    paper's range are clipped to it.
    """
    floor = 10.0 ** -(paper_dmax - paper_dmin)
    rel = np.power(10.0, -(np.asarray(density, dtype=np.float64) - paper_dmin))
    linear = (np.clip(rel, floor, 1.0) - floor) / (1.0 - floor)
    return np.round(srgb_encode(linear) * 255.0).astype(np.uint8)


def density_value(value: str | int | float, default: float) -> float:
    """Border/Empty Image Density as OD: BLACK, WHITE or hundredths of OD (PS3.3 C.13.5)."""
    if isinstance(value, str):
        text = value.strip().upper()
        if text == "":
            return default
        if text == "BLACK":
            return 9.99
        if text == "WHITE":
            return 0.0
        return int(text) / 100.0
    return float(value) / 100.0
