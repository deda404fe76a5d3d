"""Image metrics (PSNR, rel_l2, SSIM) of a reconstruction x_hat against the original jet image x
(pure functions).

Conventions (docs/design.md, "Metric conventions"): both images are the ORIGINAL, un-normalised images in
GeV, channels last, shape (..., H, W, C) (jet images: (B, 125, 125, 3)); every metric is computed per
image and batched over the leading dimensions. R = max(x) - min(x) over the whole image (all pixels and
channels) of the ORIGINAL is the data range of both images.

- ``psnr = 10 log10(R^2 / MSE(x_hat, x))``, MSE over all pixels and channels: equals
  ``skimage.metrics.peak_signal_noise_ratio(x, x_hat, data_range=R)``.
- ``psnr_zero(x)``: the same for the all-zero prediction; ``psnr_gain = psnr - psnr_zero``.
- ``rel_l2 = ||x_hat - x||_2 / ||x||_2`` over the whole image, or per channel.
- ``ssim``: equals ``skimage.metrics.structural_similarity(x, x_hat, channel_axis=-1, data_range=R,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``: Gaussian window sigma 1.5 truncated
  at 3.5 sigma (11 taps), population covariances, K1 = 0.01, K2 = 0.03, the SSIM map averaged over the
  pixels at least 5 (= (11 - 1) // 2) away from the border (where the window lies wholly inside the
  image, so the border mode plays no part), then over channels.
Degenerate cases follow IEEE arithmetic without warnings: a constant original (R = 0) gives nan for
psnr, psnr_zero, psnr_gain, ssim; a perfect reconstruction gives psnr = inf; an all-zero
original (or channel) gives rel_l2 = inf (nan if x_hat is zero there too).

Inputs are numpy arrays or torch tensors; numpy in -> numpy float64 out, torch in -> torch float64 out
on the input's device. Computation is float64.
"""

from __future__ import annotations

import torch

from inr_fast.arrays import check_image, check_pair, like, to_torch
from inr_fast.errors import InrFastError

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _flat(t: torch.Tensor) -> torch.Tensor:
    """(..., H, W, C) -> (..., H*W*C)."""
    return t.reshape(*t.shape[:-3], -1)


def data_range(x):
    """R = max(x) - min(x) over each whole image: (..., H, W, C) -> (...)."""
    t = to_torch(x)
    check_image(t)
    f = _flat(t)
    return like(f.amax(dim=-1) - f.amin(dim=-1), x)


def _range(t: torch.Tensor) -> torch.Tensor:
    f = _flat(t)
    return f.amax(dim=-1) - f.amin(dim=-1)


def _psnr_from_mse(mse: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    out = 10.0 * torch.log10(r * r / mse)
    return torch.where(r > 0, out, torch.full_like(out, float("nan")))


def psnr(x_hat, x):
    """Peak signal-to-noise ratio in dB, 10 log10(R^2 / MSE): (..., H, W, C) twice -> (...)."""
    th, t = to_torch(x_hat), to_torch(x)
    check_pair(th, t)
    mse = _flat((th - t) ** 2).mean(dim=-1)
    return like(_psnr_from_mse(mse, _range(t)), x_hat, x)


def psnr_zero(x):
    """PSNR (dB) of the all-zero prediction, 10 log10(R^2 / mean(x^2)): (..., H, W, C) -> (...)."""
    t = to_torch(x)
    check_image(t)
    return like(_psnr_from_mse(_flat(t * t).mean(dim=-1), _range(t)), x)


def psnr_gain(x_hat, x):
    """psnr(x_hat, x) - psnr_zero(x) in dB (= 10 log10(mean(x^2) / MSE)): (..., H, W, C) twice -> (...)."""
    th, t = to_torch(x_hat), to_torch(x)
    check_pair(th, t)
    r = _range(t)
    gain = _psnr_from_mse(_flat((th - t) ** 2).mean(dim=-1), r) - _psnr_from_mse(_flat(t * t).mean(dim=-1), r)
    return like(gain, x_hat, x)


def rel_l2(x_hat, x):
    """Relative L2 error ||x_hat - x||_2 / ||x||_2 over the whole image: (..., H, W, C) twice -> (...)."""
    th, t = to_torch(x_hat), to_torch(x)
    check_pair(th, t)
    return like(
        torch.linalg.vector_norm(_flat(th - t), dim=-1) / torch.linalg.vector_norm(_flat(t), dim=-1), x_hat, x
    )


def rel_l2_per_channel(x_hat, x):
    """Relative L2 error of each channel: (..., H, W, C) twice -> (..., C)."""
    th, t = to_torch(x_hat), to_torch(x)
    check_pair(th, t)
    num = torch.linalg.vector_norm(th - t, dim=(-3, -2))
    return like(num / torch.linalg.vector_norm(t, dim=(-3, -2)), x_hat, x)


def gaussian_taps(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE, *, device=None) -> torch.Tensor:
    """1-D Gaussian window as scipy.ndimage builds it: radius int(truncate * sigma + 0.5), weights
    exp(-t^2 / (2 sigma^2)) normalised to sum 1. Shape (2 * radius + 1,), float64 (11 taps for 1.5, 3.5)."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    w = torch.exp(-0.5 / (sigma * sigma) * t * t)
    return w / w.sum()


def _band(taps: torch.Tensor, size: int) -> torch.Tensor:
    """(size - k + 1, size) matrix whose row i holds the k taps at columns i .. i + k - 1: its product
    with a length-``size`` signal is the "valid" correlation with the taps."""
    k = taps.numel()
    rows = size - k + 1
    band = torch.zeros(rows, size, dtype=taps.dtype, device=taps.device)
    i = torch.arange(rows, device=taps.device).unsqueeze(1)
    band[i, i + torch.arange(k, device=taps.device)] = taps
    return band


def _ssim_chunk(a: torch.Tensor, b: torch.Tensor, r: torch.Tensor, taps: torch.Tensor, k1: float, k2: float):
    """a, b: (N, H, W, C) float64; r: (N,). Returns (N,) mean SSIM."""
    n, h, w, c = a.shape
    a = a.permute(0, 3, 1, 2).reshape(n * c, 1, h, w)
    b = b.permute(0, 3, 1, 2).reshape(n * c, 1, h, w)
    stack = torch.cat([a, b, a * a, b * b, a * b], dim=1).reshape(n * c * 5, 1, h, w)
    # "valid" separable filtering = the same-size filtered map cropped by (k - 1) // 2 on every side,
    # as two banded matrix products (rows, then columns): BLAS instead of a 1-channel float64 conv
    f = _band(taps, h) @ stack.reshape(-1, h, w) @ _band(taps, w).T
    f = f.reshape(n * c, 5, f.shape[-2], f.shape[-1])
    ux, uy, uxx, uyy, uxy = f.unbind(1)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    rr = r.repeat_interleave(c).view(n * c, 1, 1)
    c1, c2 = (k1 * rr) ** 2, (k2 * rr) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(-2, -1)).view(n, c).mean(dim=-1)


def ssim(
    x_hat,
    x,
    *,
    sigma: float = SSIM_SIGMA,
    truncate: float = SSIM_TRUNCATE,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
    chunk: int = 64,
):
    """Structural similarity, scikit-image's Gaussian-window SSIM with data_range R (module docstring):
    (..., H, W, C) twice -> (...). H and W must be at least the window size (11). ``chunk`` images are
    filtered at a time (memory ~ 40 * chunk * H * W * C bytes)."""
    th, t = to_torch(x_hat), to_torch(x)
    check_pair(th, t)
    taps = gaussian_taps(sigma, truncate, device=t.device)
    lead, (h, w, c) = t.shape[:-3], t.shape[-3:]
    if h < taps.numel() or w < taps.numel():
        raise InrFastError(f"ssim: images of {h} x {w} pixels are smaller than the {taps.numel()}-tap window")
    a, b = th.reshape(-1, h, w, c), t.reshape(-1, h, w, c)
    r = _range(b)
    out = torch.empty(a.shape[0], dtype=torch.float64, device=t.device)
    for i in range(0, a.shape[0], chunk):
        out[i : i + chunk] = _ssim_chunk(b[i : i + chunk], a[i : i + chunk], r[i : i + chunk], taps, k1, k2)
    out = torch.where(r > 0, out, torch.full_like(out, float("nan")))
    return like(out.reshape(lead), x_hat, x)
