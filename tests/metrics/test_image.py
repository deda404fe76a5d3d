"""Image metrics against scikit-image and closed forms: SSIM, PSNR, rel_l2, degenerate images."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from inr_fast.errors import DataError, InrFastError
from inr_fast.metrics.image import (
    data_range,
    gaussian_taps,
    psnr,
    psnr_gain,
    psnr_zero,
    rel_l2,
    rel_l2_per_channel,
    ssim,
)
from tests.helpers import SIZE, image_pairs

N_PIX = SIZE * SIZE * 3


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


def test_gaussian_taps_match_scipy_filter():
    impulse = np.zeros(41)
    impulse[20] = 1.0
    ref = ndi.gaussian_filter1d(impulse, sigma=1.5, truncate=3.5, mode="constant")
    taps = gaussian_taps().numpy()
    assert taps.shape == (11,)
    np.testing.assert_allclose(taps, ref[15:26], rtol=0, atol=1e-15)
    assert ref[:15].max() == 0 and ref[26:].max() == 0


@pytest.mark.parametrize("kind", ["random", "sparse", "jet"])
def test_ssim_matches_skimage(kind):
    x, x_hat = image_pairs(kind, seed={"random": 1, "sparse": 2, "jet": 3}[kind])
    ours = ssim(x_hat, x)
    ref = np.array([sk_ssim(x[i], x_hat[i]) for i in range(len(x))])
    assert ours.dtype == np.float64 and ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10)
    assert np.ptp(ref) > 1e-4  # the cases differ, so agreement is not an accident of a constant


def test_ssim_matches_skimage_float32_inputs():
    """Float32 images (as stored): skimage then works in float32, we in float64; still within 1e-4."""
    x, x_hat = image_pairs("jet", seed=4)
    x, x_hat = x.astype(np.float32), x_hat.astype(np.float32)
    ours = ssim(x_hat, x)
    ref = np.array([sk_ssim(x[i], x_hat[i]) for i in range(len(x))])
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)


def test_ssim_identity_and_symmetry_and_batching():
    x, x_hat = image_pairs("jet", seed=5, n=4)
    np.testing.assert_allclose(ssim(x, x), 1.0, rtol=0, atol=1e-12)
    # leading dimensions and chunking do not change values; torch in -> torch out
    flat = ssim(x_hat, x, chunk=3)
    nested = ssim(
        torch.from_numpy(x_hat.reshape(2, 2, SIZE, SIZE, 3)), torch.from_numpy(x.reshape(2, 2, SIZE, SIZE, 3))
    )
    assert isinstance(nested, torch.Tensor) and nested.dtype == torch.float64
    np.testing.assert_allclose(nested.numpy().reshape(-1), flat, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["random", "sparse", "jet"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_psnr_matches_skimage(kind, dtype):
    x, x_hat = image_pairs(kind, seed=6)
    x, x_hat = x.astype(dtype), x_hat.astype(dtype)
    ours = psnr(x_hat, x)
    for i in range(len(x)):
        r = float(x[i].max()) - float(x[i].min())
        ref = peak_signal_noise_ratio(x[i], x_hat[i], data_range=r)
        assert abs(ours[i] - ref) < 1e-6


def test_psnr_zero_and_gain_closed_forms():
    # one pixel of value v: R = v, mean(x^2) = v^2 / N, so psnr_zero = 10 log10(N) whatever v is
    x = np.zeros((2, SIZE, SIZE, 3))
    x[0, 60, 61, 0] = 37.0
    x[1, 3, 100, 2] = 0.25
    np.testing.assert_allclose(psnr_zero(x), 10 * np.log10(N_PIX), rtol=0, atol=1e-12)
    # x_hat = x with that pixel at v/2: MSE = v^2 / (4N) -> psnr = 10 log10(4N), gain = 10 log10(4)
    x_hat = x / 2
    np.testing.assert_allclose(psnr(x_hat, x), 10 * np.log10(4 * N_PIX), rtol=0, atol=1e-12)
    np.testing.assert_allclose(psnr_gain(x_hat, x), 10 * np.log10(4.0), rtol=0, atol=1e-12)


def test_psnr_gain_is_psnr_minus_psnr_zero():
    x, x_hat = image_pairs("jet", seed=7)
    np.testing.assert_allclose(psnr_gain(x_hat, x), psnr(x_hat, x) - psnr_zero(x), rtol=0, atol=1e-10)
    mse = ((x_hat - x) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(
        psnr_gain(x_hat, x), 10 * np.log10((x**2).mean(axis=(1, 2, 3)) / mse), rtol=1e-12
    )


def test_degenerate_images():
    x, _ = image_pairs("jet", seed=8, n=1)
    assert psnr(x, x)[0] == np.inf
    zero = np.zeros_like(x)
    assert np.isnan(psnr(x, zero)[0]) and np.isnan(psnr_zero(zero)[0])
    assert np.isnan(ssim(x, zero)[0])
    assert rel_l2(x, zero)[0] == np.inf


def test_rel_l2_closed_forms():
    x, _ = image_pairs("jet", seed=9)
    np.testing.assert_allclose(rel_l2(1.1 * x, x), 0.1, rtol=1e-12)
    np.testing.assert_allclose(rel_l2_per_channel(0.8 * x, x), 0.2, rtol=1e-12)
    # error only in HCAL: per channel (0, e, 0); overall e * ||x_hcal|| / ||x||
    x_hat = x.copy()
    x_hat[..., 1] *= 1.5
    per = rel_l2_per_channel(x_hat, x)
    np.testing.assert_allclose(per, np.broadcast_to([0.0, 0.5, 0.0], per.shape), rtol=0, atol=1e-14)
    expected = 0.5 * np.sqrt((x[..., 1] ** 2).sum(axis=(1, 2)) / (x**2).sum(axis=(1, 2, 3)))
    np.testing.assert_allclose(rel_l2(x_hat, x), expected, rtol=1e-12)
    np.testing.assert_allclose(data_range(x), x.reshape(len(x), -1).max(axis=1), rtol=0)


def test_shape_mismatch_is_one_clear_error():
    x = np.zeros((2, SIZE, SIZE, 3))
    with pytest.raises(DataError, match="differs from original shape"):
        psnr(x[:1], x)
    with pytest.raises(InrFastError, match="smaller than the 11-tap window"):
        ssim(np.ones((1, 8, 8, 3)), np.ones((1, 8, 8, 3)))
