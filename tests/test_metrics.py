"""Image metrics against independent references: scikit-image for SSIM and PSNR, closed forms otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from inr_fast import metrics
from inr_fast.errors import DataError, InrFastError

SIZE = 125
N_PIX = SIZE * SIZE * 3


def jet_like(rng: np.random.Generator, n: int = 3, size: int = SIZE) -> np.ndarray:
    """(n, size, size, 3) float32 GeV: a few particles near the centre, ECAL Gaussian spots, HCAL
    constant on aligned 5 x 5 towers, single-pixel tracks, zero elsewhere (~98 % zeros)."""
    out = np.zeros((n, size, size, 3), np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for j in range(n):
        n_part = rng.integers(8, 30)
        pos = np.clip(rng.normal(size / 2, 8, (n_part, 2)), 0, size - 1)
        pt = rng.exponential(10.0, n_part) + 0.5
        for (r, c), p in zip(pos, pt, strict=True):
            spot = np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 0.8**2))
            spot[spot < 0.05] = 0
            out[j, :, :, 0] += 0.4 * p * spot / spot.sum()
            tr, tc = int(r) // 5 * 5, int(c) // 5 * 5
            out[j, tr : tr + 5, tc : tc + 5, 1] += 0.6 * p / 25
            if rng.random() < 0.6:
                out[j, int(r), int(c), 2] += p
    return out


def images(kind: str, seed: int = 0, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(x, x_hat) pairs of (n, 125, 125, 3) float64 of three kinds."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        x = rng.random((n, SIZE, SIZE, 3)) * 5
        x_hat = x + rng.normal(0, 0.5, x.shape)
    elif kind == "sparse":
        x = rng.exponential(3.0, (n, SIZE, SIZE, 3)) * (rng.random((n, SIZE, SIZE, 3)) < 0.02)
        x_hat = np.where(rng.random(x.shape) < 0.8, x, 0) + rng.normal(0, 0.05, x.shape)
    elif kind == "jet":
        x = jet_like(rng, n).astype(np.float64)
        # an INR-like reconstruction: blurred, slightly rescaled, with smooth low-level noise
        noise = ndi.gaussian_filter(rng.normal(0, 0.3, x.shape), sigma=(0, 3, 3, 0))
        x_hat = 0.97 * ndi.gaussian_filter(x, sigma=(0, 0.6, 0.6, 0)) + noise
    else:
        raise ValueError(kind)
    return x, x_hat


def sk_ssim(x: np.ndarray, x_hat: np.ndarray) -> float:
    r = float(x.max()) - float(x.min())
    return structural_similarity(
        x,
        x_hat,
        channel_axis=-1,
        data_range=r,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )


# ---------------------------------------------------------------------------------------------- SSIM
def test_gaussian_taps_match_scipy_filter():
    impulse = np.zeros(41)
    impulse[20] = 1.0
    ref = ndi.gaussian_filter1d(impulse, sigma=1.5, truncate=3.5, mode="constant")
    taps = metrics.gaussian_taps().numpy()
    assert taps.shape == (11,)
    np.testing.assert_allclose(taps, ref[15:26], rtol=0, atol=1e-15)
    assert ref[:15].max() == 0 and ref[26:].max() == 0


@pytest.mark.parametrize("kind", ["random", "sparse", "jet"])
def test_ssim_matches_skimage(kind):
    x, x_hat = images(kind, seed={"random": 1, "sparse": 2, "jet": 3}[kind])
    ours = metrics.ssim(x_hat, x)
    ref = np.array([sk_ssim(x[i], x_hat[i]) for i in range(len(x))])
    assert ours.dtype == np.float64 and ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10)
    assert np.ptp(ref) > 1e-4  # the cases differ, so agreement is not an accident of a constant


def test_ssim_matches_skimage_float32_inputs():
    """Float32 images (as stored): skimage then works in float32, we in float64; still within 1e-4."""
    x, x_hat = images("jet", seed=4)
    x, x_hat = x.astype(np.float32), x_hat.astype(np.float32)
    ours = metrics.ssim(x_hat, x)
    ref = np.array([sk_ssim(x[i], x_hat[i]) for i in range(len(x))])
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)


def test_ssim_identity_and_symmetry_and_batching():
    x, x_hat = images("jet", seed=5, n=4)
    np.testing.assert_allclose(metrics.ssim(x, x), 1.0, rtol=0, atol=1e-12)
    # leading dimensions and chunking do not change values; torch in -> torch out
    flat = metrics.ssim(x_hat, x, chunk=3)
    nested = metrics.ssim(
        torch.from_numpy(x_hat.reshape(2, 2, SIZE, SIZE, 3)), torch.from_numpy(x.reshape(2, 2, SIZE, SIZE, 3))
    )
    assert isinstance(nested, torch.Tensor) and nested.dtype == torch.float64
    np.testing.assert_allclose(nested.numpy().reshape(-1), flat, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------- PSNR
@pytest.mark.parametrize("kind", ["random", "sparse", "jet"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_psnr_matches_skimage(kind, dtype):
    x, x_hat = images(kind, seed=6)
    x, x_hat = x.astype(dtype), x_hat.astype(dtype)
    ours = metrics.psnr(x_hat, x)
    for i in range(len(x)):
        r = float(x[i].max()) - float(x[i].min())
        ref = peak_signal_noise_ratio(x[i], x_hat[i], data_range=r)
        assert abs(ours[i] - ref) < 1e-6


def test_psnr_zero_and_gain_closed_forms():
    # one pixel of value v: R = v, mean(x^2) = v^2 / N, so psnr_zero = 10 log10(N) whatever v is
    x = np.zeros((2, SIZE, SIZE, 3))
    x[0, 60, 61, 0] = 37.0
    x[1, 3, 100, 2] = 0.25
    np.testing.assert_allclose(metrics.psnr_zero(x), 10 * np.log10(N_PIX), rtol=0, atol=1e-12)
    # x_hat = x with that pixel at v/2: MSE = v^2 / (4N) -> psnr = 10 log10(4N), gain = 10 log10(4)
    x_hat = x / 2
    np.testing.assert_allclose(metrics.psnr(x_hat, x), 10 * np.log10(4 * N_PIX), rtol=0, atol=1e-12)
    np.testing.assert_allclose(metrics.psnr_gain(x_hat, x), 10 * np.log10(4.0), rtol=0, atol=1e-12)


def test_psnr_gain_is_psnr_minus_psnr_zero():
    x, x_hat = images("jet", seed=7)
    np.testing.assert_allclose(
        metrics.psnr_gain(x_hat, x), metrics.psnr(x_hat, x) - metrics.psnr_zero(x), rtol=0, atol=1e-10
    )
    mse = ((x_hat - x) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(
        metrics.psnr_gain(x_hat, x), 10 * np.log10((x**2).mean(axis=(1, 2, 3)) / mse), rtol=1e-12
    )


def test_degenerate_images():
    x, _ = images("jet", seed=8, n=1)
    assert metrics.psnr(x, x)[0] == np.inf
    zero = np.zeros_like(x)
    assert np.isnan(metrics.psnr(x, zero)[0]) and np.isnan(metrics.psnr_zero(zero)[0])
    assert np.isnan(metrics.ssim(x, zero)[0])
    assert metrics.rel_l2(x, zero)[0] == np.inf


# ---------------------------------------------------------------------------------------------- rel_l2
def test_rel_l2_closed_forms():
    x, _ = images("jet", seed=9)
    np.testing.assert_allclose(metrics.rel_l2(1.1 * x, x), 0.1, rtol=1e-12)
    np.testing.assert_allclose(metrics.rel_l2_per_channel(0.8 * x, x), 0.2, rtol=1e-12)
    # error only in HCAL: per channel (0, e, 0); overall e * ||x_hcal|| / ||x||
    x_hat = x.copy()
    x_hat[..., 1] *= 1.5
    per = metrics.rel_l2_per_channel(x_hat, x)
    np.testing.assert_allclose(per, np.broadcast_to([0.0, 0.5, 0.0], per.shape), rtol=0, atol=1e-14)
    expected = 0.5 * np.sqrt((x[..., 1] ** 2).sum(axis=(1, 2)) / (x**2).sum(axis=(1, 2, 3)))
    np.testing.assert_allclose(metrics.rel_l2(x_hat, x), expected, rtol=1e-12)
    np.testing.assert_allclose(metrics.data_range(x), x.reshape(len(x), -1).max(axis=1), rtol=0)


def test_shape_mismatch_is_one_clear_error():
    x = np.zeros((2, SIZE, SIZE, 3))
    with pytest.raises(DataError, match="differs from original shape"):
        metrics.psnr(x[:1], x)
    with pytest.raises(InrFastError, match="smaller than the 11-tap window"):
        metrics.ssim(np.ones((1, 8, 8, 3)), np.ones((1, 8, 8, 3)))


# ---------------------------------------------------------------------------------------------- all
def test_compute_all_matches_the_single_functions():
    x, x_hat = images("jet", seed=10)
    x, x_hat = x.astype(np.float32), x_hat.astype(np.float32)
    out = metrics.compute_all(x_hat, x, with_lpips=False)
    assert "lpips" not in out
    for key, fn in [("psnr", metrics.psnr), ("ssim", metrics.ssim), ("rel_l2", metrics.rel_l2)]:
        np.testing.assert_allclose(out[key], fn(x_hat, x), rtol=0, atol=0)
    np.testing.assert_allclose(out["psnr_zero"], metrics.psnr_zero(x), rtol=0, atol=0)
    np.testing.assert_allclose(out["psnr_gain"], metrics.psnr_gain(x_hat, x), rtol=0, atol=1e-10)
    per = metrics.rel_l2_per_channel(x_hat, x)
    for c, name in enumerate(["ecal", "hcal", "tracks"]):
        np.testing.assert_allclose(out[f"rel_l2_{name}"], per[:, c], rtol=0, atol=0)
    for key in ["jet_pt_rel_err", "jet_mass_rel_err", "sum_rel_err_ecal", "nonzero_kept", "n_spurious"]:
        assert out[key].shape == (3,) and np.isfinite(out[key]).all()
    # a single image is a batch of one
    one = metrics.compute_all(x_hat[1], x[1], with_lpips=False)
    assert one["psnr"].shape == (1,) and one["psnr"][0] == out["psnr"][1]


@pytest.mark.gpu
def test_metrics_on_cuda_match_cpu():
    x, x_hat = images("jet", seed=11)
    xc, x_hatc = torch.from_numpy(x).cuda(), torch.from_numpy(x_hat).cuda()
    for fn in (metrics.psnr, metrics.ssim, metrics.rel_l2):
        got = fn(x_hatc, xc)
        assert got.is_cuda
        np.testing.assert_allclose(got.cpu().numpy(), fn(x_hat, x), rtol=1e-9)


def _q_jet():
    x = np.zeros((125, 125, 3))
    x[60, 60] = [10.0, 4.0, 6.0]
    x[60, 70] = [5.0, 0.0, 3.0]
    x[75, 60, 0] = 2.0
    return x


def test_quality_levels_by_hand():
    x = _q_jet()
    exact = metrics.quality_levels(x, x)
    assert exact["Q1"].tolist() == [True] and exact["Q2"].tolist() == [True]
    # 0.5 % more energy everywhere: rel_l2 0.005, sums +0.5 %, mass +0.5 % -> Q2 holds
    assert metrics.quality_levels(1.005 * x, x)["Q2"].tolist() == [True]
    # 1.5 % more: channel totals off by 1.5 % > 1 % -> Q2 fails while rel_l2 = 0.015 <= 0.05
    scaled = metrics.quality_levels(1.015 * x, x)
    assert scaled["Q2"].tolist() == [False]
    # moving one HCAL deposit by a pixel keeps the sums but changes rel_l2 (sqrt(2) * 4 / |x|) > 0.05
    moved = x.copy()
    moved[60, 60, 1], moved[61, 60, 1] = 0.0, 4.0
    assert metrics.rel_l2(moved, x) > metrics.Q2_REL_L2
    assert metrics.quality_levels(moved, x)["Q2"].tolist() == [False]
    # an empty Tracks channel must stay (essentially) empty
    x0 = x.copy()
    x0[..., 2] = 0
    spill = x0.copy()
    spill[0, 0, 2] = 0.02 * np.abs(x0).sum()
    assert metrics.quality_levels(x0, x0)["Q2"].tolist() == [True]
    assert metrics.quality_levels(spill, x0)["Q2"].tolist() == [False]
    # the all-zero prediction meets neither level
    zero = metrics.quality_levels(np.zeros_like(x), x)
    assert zero["Q1"].tolist() == [False] and zero["Q2"].tolist() == [False]
