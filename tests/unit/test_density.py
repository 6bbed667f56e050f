"""PS3.14 Grayscale Standard Display Function and the density-to-paper mapping."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from image import density as dens
from image.pixels import PresentationLUT, Tone, grey_table


def test_gsdf_end_points_match_ps3_14() -> None:
    # PS3.14 Table B-1: j=1 -> 0.0500 cd/m2, j=1023 -> 3993.4 cd/m2.
    assert abs(dens.gsdf_luminance(np.array([1.0]))[0] - 0.0500) < 0.0005
    assert abs(dens.gsdf_luminance(np.array([1023.0]))[0] - 3993.4) < 1.0
    assert abs(dens.gsdf_index(0.05) - 1.0) < 0.5
    assert abs(dens.gsdf_index(3993.4) - 1023.0) < 0.5


@given(st.floats(0.0, 1.0), st.floats(1.2, 3.5))
def test_pvalue_table_runs_from_max_to_min_density(dmin: float, dmax: float) -> None:
    table = dens.pvalue_density_table(dmin, dmax)
    assert abs(table[0] - dmax) < 0.02 and abs(table[-1] - dmin) < 0.02
    assert np.all(np.diff(table) <= 1e-6)


def test_pvalues_are_perceptually_spaced_not_linear_in_density() -> None:
    table = dens.pvalue_density_table(0.2, 3.0)
    mid = table[len(table) // 2]
    assert not abs(mid - 1.6) < 0.05  # equal JND steps are not equal density steps


def test_density_to_grey_is_monotonic_and_clipped_to_paper() -> None:
    d = np.linspace(0, 4, 200)
    g = dens.density_to_grey(d, 0.05, 2.0).astype(int)
    assert np.all(np.diff(g) <= 0)
    assert g[0] == 255 and g[-1] == 0


@given(
    st.sampled_from([8, 12]),
    st.sampled_from(["MONOCHROME1", "MONOCHROME2"]),
    st.sampled_from(["NORMAL", "REVERSE"]),
    st.sampled_from(["IDENTITY", "LIN OD"]),
)
def test_grey_tables_are_monotonic(bits: int, photometric: str, polarity: str, shape: str) -> None:
    table = grey_table(bits, photometric, polarity, PresentationLUT(shape), Tone()).astype(int)
    assert len(table) == 1 << bits
    rising = (photometric == "MONOCHROME2") == (polarity == "NORMAL")
    steps = np.diff(table)
    assert np.all(steps >= 0) if rising else np.all(steps <= 0)
    assert abs(int(table.max()) - int(table.min())) > 200


def test_density_values() -> None:
    assert dens.density_value("WHITE", 1.0) == 0.0
    assert dens.density_value("BLACK", 1.0) > 3
    assert dens.density_value("150", 1.0) == 1.5
    assert dens.density_value("", 1.0) == 1.0
