"""compute_all against the single metrics; the quality levels by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inr_fast.metrics.image import (
    psnr,
    psnr_gain,
    psnr_zero,
    rel_l2,
    rel_l2_per_channel,
    ssim,
)
from inr_fast.metrics.levels import Q2_REL_L2, compute_all, quality_levels
from tests.helpers import image_pairs


def _q_jet():
    x = np.zeros((125, 125, 3))
    x[60, 60] = [10.0, 4.0, 6.0]
    x[60, 70] = [5.0, 0.0, 3.0]
    x[75, 60, 0] = 2.0
    return x


def test_compute_all_matches_the_single_functions():
    x, x_hat = image_pairs("jet", seed=10)
    x, x_hat = x.astype(np.float32), x_hat.astype(np.float32)
    out = compute_all(x_hat, x, with_lpips=False)
    assert "lpips" not in out
    for key, fn in [("psnr", psnr), ("ssim", ssim), ("rel_l2", rel_l2)]:
        np.testing.assert_allclose(out[key], fn(x_hat, x), rtol=0, atol=0)
    np.testing.assert_allclose(out["psnr_zero"], psnr_zero(x), rtol=0, atol=0)
    np.testing.assert_allclose(out["psnr_gain"], psnr_gain(x_hat, x), rtol=0, atol=1e-10)
    per = rel_l2_per_channel(x_hat, x)
    for c, name in enumerate(["ecal", "hcal", "tracks"]):
        np.testing.assert_allclose(out[f"rel_l2_{name}"], per[:, c], rtol=0, atol=0)
    for key in ["jet_pt_rel_err", "jet_mass_rel_err", "sum_rel_err_ecal", "nonzero_kept", "n_spurious"]:
        assert out[key].shape == (3,) and np.isfinite(out[key]).all()
    # a single image is a batch of one
    one = compute_all(x_hat[1], x[1], with_lpips=False)
    assert one["psnr"].shape == (1,) and one["psnr"][0] == out["psnr"][1]


@pytest.mark.gpu
def test_metrics_on_cuda_match_cpu():
    x, x_hat = image_pairs("jet", seed=11)
    xc, x_hatc = torch.from_numpy(x).cuda(), torch.from_numpy(x_hat).cuda()
    for fn in (psnr, ssim, rel_l2):
        got = fn(x_hatc, xc)
        assert got.is_cuda
        np.testing.assert_allclose(got.cpu().numpy(), fn(x_hat, x), rtol=1e-9)


def test_quality_levels_by_hand():
    x = _q_jet()
    exact = quality_levels(x, x)
    assert exact["Q1"].tolist() == [True] and exact["Q2"].tolist() == [True]
    # 0.5 % more energy everywhere: rel_l2 0.005, sums +0.5 %, mass +0.5 % -> Q2 holds
    assert quality_levels(1.005 * x, x)["Q2"].tolist() == [True]
    # 1.5 % more: channel totals off by 1.5 % > 1 % -> Q2 fails while rel_l2 = 0.015 <= 0.05
    scaled = quality_levels(1.015 * x, x)
    assert scaled["Q2"].tolist() == [False]
    # moving one HCAL deposit by a pixel keeps the sums but changes rel_l2 (sqrt(2) * 4 / |x|) > 0.05
    moved = x.copy()
    moved[60, 60, 1], moved[61, 60, 1] = 0.0, 4.0
    assert rel_l2(moved, x) > Q2_REL_L2
    assert quality_levels(moved, x)["Q2"].tolist() == [False]
    # an empty Tracks channel must stay (essentially) empty
    x0 = x.copy()
    x0[..., 2] = 0
    spill = x0.copy()
    spill[0, 0, 2] = 0.02 * np.abs(x0).sum()
    assert quality_levels(x0, x0)["Q2"].tolist() == [True]
    assert quality_levels(spill, x0)["Q2"].tolist() == [False]
    # the all-zero prediction meets neither level
    zero = quality_levels(np.zeros_like(x), x)
    assert zero["Q1"].tolist() == [False] and zero["Q2"].tolist() == [False]
