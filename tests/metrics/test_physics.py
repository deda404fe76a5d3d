"""Physics observables on hand-computed jets: a few pixels whose pT and mass are worked out on paper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inr_fast.data.grid import physical_centres
from inr_fast.errors import DataError
from inr_fast.layout import PITCH
from inr_fast.metrics.physics import (
    ALL_CHANNELS,
    channel_sum_rel_err,
    channel_sums,
    jet_four_momentum,
    jet_mass,
    jet_mass_rel_err,
    jet_pt,
    jet_pt_rel_err,
    nonzero_counts,
    nonzero_kept,
    off_support,
    physics_metrics,
)

SIZE = 125
C = 62  # centre pixel index: (125 - 1) / 2


def empty(n: int = 1) -> np.ndarray:
    return np.zeros((n, SIZE, SIZE, 3))


def test_pixel_centres():
    eta = phi = physical_centres(SIZE)
    assert eta[C] == 0 and phi[C] == 0
    np.testing.assert_allclose(eta[0].item(), -62 * 0.0174, rtol=1e-15)
    np.testing.assert_allclose(phi[124].item(), 62 * 0.0174, rtol=1e-15)
    np.testing.assert_allclose(np.diff(eta), PITCH, rtol=1e-12)


def test_single_pixel_is_massless():
    x = empty()
    x[0, C + 7, C - 20, 0] = 42.0  # anywhere: pT is the value, mass 0
    assert jet_pt(x)[0] == pytest.approx(42.0, rel=1e-14)
    assert jet_mass(x)[0] == pytest.approx(0.0, abs=1e-5)  # sqrt of a rounding-level m^2
    e, px, py, pz = jet_four_momentum(x)[0]
    eta, phi = 7 * PITCH, -20 * PITCH
    np.testing.assert_allclose(
        [e, px, py, pz],
        [42 * math.cosh(eta), 42 * math.cos(phi), 42 * math.sin(phi), 42 * math.sinh(eta)],
        rtol=1e-14,
    )


def test_two_pixels_symmetric_in_phi():
    """p at (0, +k d) and p at (0, -k d): py cancels, px = 2p cos(k d), E = 2p, pz = 0, so
    pT = 2p cos(k d) and m = sqrt(4p^2 - 4p^2 cos^2(k d)) = 2p sin(k d)."""
    p, k = 25.0, 10
    x = empty()
    x[0, C, C + k, 0] = p
    x[0, C, C - k, 1] = p  # the other one in HCAL: the default channel set sums ECAL + HCAL
    d = k * PITCH
    assert jet_pt(x)[0] == pytest.approx(2 * p * math.cos(d), rel=1e-13)
    assert jet_mass(x)[0] == pytest.approx(2 * p * math.sin(d), rel=1e-10)


def test_two_pixels_symmetric_in_eta():
    """p at (+k d, 0) and p at (-k d, 0): px = 2p, pz cancels, E = 2p cosh(k d), so
    pT = 2p and m = 2p sqrt(cosh^2 - 1) = 2p sinh(k d)."""
    p, k = 13.0, 30
    x = empty()
    x[0, C + k, C, 0] = p
    x[0, C - k, C, 0] = p
    d = k * PITCH
    assert jet_pt(x)[0] == pytest.approx(2 * p, rel=1e-13)
    assert jet_mass(x)[0] == pytest.approx(2 * p * math.sinh(d), rel=1e-10)


def test_two_massless_particles_general():
    """m^2 = 2 pT1 pT2 (cosh(d eta) - cos(d phi)); pT^2 = pT1^2 + pT2^2 + 2 pT1 pT2 cos(d phi)."""
    p1, p2 = 40.0, 7.5
    (r1, c1), (r2, c2) = (C - 12, C + 3), (C + 25, C - 31)
    x = empty()
    x[0, r1, c1, 0] = p1
    x[0, r2, c2, 1] = p2
    deta, dphi = (r1 - r2) * PITCH, (c1 - c2) * PITCH
    m = math.sqrt(2 * p1 * p2 * (math.cosh(deta) - math.cos(dphi)))
    pt = math.sqrt(p1**2 + p2**2 + 2 * p1 * p2 * math.cos(dphi))
    assert jet_mass(x)[0] == pytest.approx(m, rel=1e-10)
    assert jet_pt(x)[0] == pytest.approx(pt, rel=1e-13)


def test_mass_and_pt_do_not_depend_on_the_frame():
    """Shifting the whole jet in eta (a longitudinal boost) and phi (a rotation) keeps pT and mass."""
    rng = np.random.default_rng(0)
    x = empty()
    x[0, 40:80, 45:85, :2] = rng.exponential(1.0, (40, 40, 2)) * (rng.random((40, 40, 2)) < 0.1)
    shifted = np.roll(x, (9, -14), axis=(1, 2))
    assert jet_pt(shifted)[0] == pytest.approx(jet_pt(x)[0], rel=1e-12)
    assert jet_mass(shifted)[0] == pytest.approx(jet_mass(x)[0], rel=1e-10)


def test_channel_selection():
    x = empty()
    x[0, C, C + 5, 0] = 10.0
    x[0, C, C - 5, 2] = 10.0  # a track: ignored by default (double counting), included on request
    assert jet_mass(x)[0] == pytest.approx(0.0, abs=1e-5)  # sqrt of a rounding-level m^2
    d = 5 * PITCH
    assert jet_mass(x, channels=ALL_CHANNELS)[0] == pytest.approx(20 * math.sin(d), rel=1e-10)
    assert jet_pt(x, channels=(2,))[0] == pytest.approx(10.0, rel=1e-14)
    with pytest.raises(DataError, match="do not index"):
        jet_pt(x, channels=(3,))


def test_relative_errors_and_sums():
    rng = np.random.default_rng(1)
    x = empty(2)
    x[:, 50:75, 50:75] = rng.exponential(1.0, (2, 25, 25, 3)) * (rng.random((2, 25, 25, 3)) < 0.2)
    np.testing.assert_allclose(channel_sums(x), x.sum(axis=(1, 2)), rtol=1e-14)
    # pT and mass are linear in a global scale; channel sums follow per channel
    np.testing.assert_allclose(jet_pt_rel_err(1.02 * x, x), 0.02, rtol=1e-10)
    np.testing.assert_allclose(jet_mass_rel_err(0.9 * x, x), -0.1, rtol=1e-10)
    x_hat = x * np.array([1.0, 1.05, 0.5])
    np.testing.assert_allclose(channel_sum_rel_err(x_hat, x), [[0.0, 0.05, -0.5]] * 2, atol=1e-14)


def test_nonzero_counts_by_hand():
    x = empty()
    x_hat = empty()
    x[0, 10, 10, 0], x_hat[0, 10, 10, 0] = 5.0, 4.0  # kept
    x[0, 20, 20, 1], x_hat[0, 20, 20, 1] = 0.3, 0.0005  # below the 1 MeV threshold: lost
    x[0, 30, 30, 2], x_hat[0, 30, 30, 2] = 2.0, -1.0  # negative: lost
    x[0, 40, 40, 0], x_hat[0, 40, 40, 0] = 1.0, 1.0  # kept
    x_hat[0, 50, 50, 1] = 0.2  # spurious
    x_hat[0, 60, 60, 0] = 0.0009  # below threshold: not spurious
    x_hat[0, 70, 70, 2] = -0.5  # negative: not spurious
    n_nonzero, n_kept, n_spurious = nonzero_counts(x_hat, x)
    assert (n_nonzero[0], n_kept[0], n_spurious[0]) == (4, 2, 1)
    assert nonzero_kept(x_hat, x)[0] == 0.5
    assert nonzero_counts(x_hat, x, threshold=0.0001)[1][0] == 3
    assert np.isnan(nonzero_kept(x_hat, empty())[0])


def test_off_support_by_hand():
    x = empty()
    x[0, 10, 10, 0], x[0, 20, 20, 1], x[0, 30, 30, 2] = 6.0, 4.0, 5.0  # calorimeter total 10 GeV
    x_hat = x.copy()
    x_hat[0, 10, 10, 0] = 7.0  # on the support: not counted
    x_hat[0, 50, 50, 0], x_hat[0, 60, 60, 1] = 0.3, -0.1  # off the support, ECAL and HCAL
    x_hat[0, 70, 70, 2] = 9.0  # Tracks: not a calorimeter channel by default
    signed, absolute = off_support(x_hat, x)
    assert signed[0] == pytest.approx(0.02) and absolute[0] == pytest.approx(0.04)
    signed, absolute = off_support(x_hat, x, channels=(0, 1, 2))  # total 15 GeV
    assert signed[0] == pytest.approx(9.2 / 15) and absolute[0] == pytest.approx(9.4 / 15)
    assert off_support(x, x)[1][0] == 0.0
    out = physics_metrics(x_hat, x)
    assert out["off_support"][0] == pytest.approx(0.02) and out["off_support_abs"][0] == pytest.approx(0.04)


def test_physics_metrics_dict_and_torch_inputs():
    x = empty(2)
    x[:, C, C + 4, 0] = 8.0
    x[:, C + 6, C, 1] = 3.0
    x[:, C, C, 2] = 1.0
    x_hat = 1.1 * x
    out = physics_metrics(x_hat, x)
    np.testing.assert_allclose(out["jet_pt_rel_err"], 0.1, rtol=1e-10)
    np.testing.assert_allclose(out["jet_mass_rel_err"], 0.1, rtol=1e-10)
    for name in ("ecal", "hcal", "tracks"):
        np.testing.assert_allclose(out[f"sum_rel_err_{name}"], 0.1, rtol=1e-10)
    np.testing.assert_array_equal(out["n_nonzero"], [3, 3])
    np.testing.assert_array_equal(out["nonzero_kept"], [1.0, 1.0])
    # torch in -> torch float64 out, same values as numpy
    t = jet_mass(torch.from_numpy(x).float())
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
    np.testing.assert_allclose(t.numpy(), out["jet_mass"], rtol=1e-6)
