"""Report figure pieces computed by hand: curve bands, residual colour norms."""

from __future__ import annotations

import numpy as np
import pytest

from inr_fast.report.figures import curve_band, residual_norm, residual_ticks


def test_curve_band_hand_computed():
    h = np.array([[1.0, 2.0, np.nan, np.nan], [3.0, np.nan, np.nan, np.nan], [5.0, 4.0, 6.0, np.nan]])
    lo, med, hi = curve_band(h, (0.0, 0.5, 1.0))
    np.testing.assert_array_equal(med[:3], [3.0, 3.0, 6.0])
    np.testing.assert_array_equal(lo[:3], [1.0, 2.0, 6.0])
    np.testing.assert_array_equal(hi[:3], [5.0, 4.0, 6.0])
    assert np.isnan(med[3]) and np.isnan(lo[3])


def test_residual_norm_symmetric():
    res = np.array([[-2.0, 0.5], [8.0, 0.0]])
    ref = np.array([[0.0, 0.3], [1.0, 0.0]])
    norm = residual_norm(res, ref)
    assert (norm.vmin, norm.vmax) == (-8.0, 8.0)
    assert norm.linthresh == pytest.approx(0.3)
    assert float(norm(0.0)) == pytest.approx(0.5)
    assert residual_ticks(norm) == [-8.0, 0.0, 8.0]  # no whole decade above 10 x 0.3
    assert residual_ticks(residual_norm(res * 100, ref)) == [-100.0, -10.0, 0.0, 10.0, 100.0]
