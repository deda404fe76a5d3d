"""Image-quality metrics of a reconstruction x_hat against the original jet image x (pure functions).

Conventions (``DESIGN.md``, "Metric conventions"): both images are the ORIGINAL, un-normalised images in
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
- ``lpips``: AlexNet LPIPS v0.1 (the `lpips` package, backbone weights from
  :mod:`inr_fast.lpips_weights`, never downloaded at run time); both images mapped by
  ``2 (v - min(x)) / R - 1`` (not clipped), channels taken as RGB.

Degenerate cases follow IEEE arithmetic without warnings: a constant original (R = 0) gives nan for
psnr, psnr_zero, psnr_gain, ssim and lpips; a perfect reconstruction gives psnr = inf; an all-zero
original (or channel) gives rel_l2 = inf (nan if x_hat is zero there too).

Inputs are numpy arrays or torch tensors; numpy in -> numpy float64 out, torch in -> torch float64 out
on the input's device. Computation is float64 (LPIPS: float32, as the network is).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from . import observables
from .errors import InrFastError
from .observables import _check_pair, _like, _to_torch

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _flat(t: torch.Tensor) -> torch.Tensor:
    """(..., H, W, C) -> (..., H*W*C)."""
    return t.reshape(*t.shape[:-3], -1)


def data_range(x):
    """R = max(x) - min(x) over each whole image: (..., H, W, C) -> (...)."""
    t = _to_torch(x)
    observables._check_image(t)
    f = _flat(t)
    return _like(f.amax(dim=-1) - f.amin(dim=-1), x)


def _range(t: torch.Tensor) -> torch.Tensor:
    f = _flat(t)
    return f.amax(dim=-1) - f.amin(dim=-1)


def _psnr_from_mse(mse: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    out = 10.0 * torch.log10(r * r / mse)
    return torch.where(r > 0, out, torch.full_like(out, float("nan")))


def psnr(x_hat, x):
    """Peak signal-to-noise ratio in dB, 10 log10(R^2 / MSE): (..., H, W, C) twice -> (...)."""
    th, t = _to_torch(x_hat), _to_torch(x)
    _check_pair(th, t)
    mse = _flat((th - t) ** 2).mean(dim=-1)
    return _like(_psnr_from_mse(mse, _range(t)), x_hat, x)


def psnr_zero(x):
    """PSNR (dB) of the all-zero prediction, 10 log10(R^2 / mean(x^2)): (..., H, W, C) -> (...)."""
    t = _to_torch(x)
    observables._check_image(t)
    return _like(_psnr_from_mse(_flat(t * t).mean(dim=-1), _range(t)), x)


def psnr_gain(x_hat, x):
    """psnr(x_hat, x) - psnr_zero(x) in dB (= 10 log10(mean(x^2) / MSE)): (..., H, W, C) twice -> (...)."""
    th, t = _to_torch(x_hat), _to_torch(x)
    _check_pair(th, t)
    r = _range(t)
    gain = _psnr_from_mse(_flat((th - t) ** 2).mean(dim=-1), r) - _psnr_from_mse(_flat(t * t).mean(dim=-1), r)
    return _like(gain, x_hat, x)


def rel_l2(x_hat, x):
    """Relative L2 error ||x_hat - x||_2 / ||x||_2 over the whole image: (..., H, W, C) twice -> (...)."""
    th, t = _to_torch(x_hat), _to_torch(x)
    _check_pair(th, t)
    return _like(
        torch.linalg.vector_norm(_flat(th - t), dim=-1) / torch.linalg.vector_norm(_flat(t), dim=-1), x_hat, x
    )


def rel_l2_per_channel(x_hat, x):
    """Relative L2 error of each channel: (..., H, W, C) twice -> (..., C)."""
    th, t = _to_torch(x_hat), _to_torch(x)
    _check_pair(th, t)
    num = torch.linalg.vector_norm(th - t, dim=(-3, -2))
    return _like(num / torch.linalg.vector_norm(t, dim=(-3, -2)), x_hat, x)


# --------------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------------
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
    th, t = _to_torch(x_hat), _to_torch(x)
    _check_pair(th, t)
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
    return _like(out.reshape(lead), x_hat, x)


# --------------------------------------------------------------------------------------------------
# LPIPS
# --------------------------------------------------------------------------------------------------
_LPIPS_MODELS: dict[tuple[str, str], torch.nn.Module] = {}


def lpips_model(
    cache_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """The cached ``lpips.LPIPS(net='alex', version='0.1')`` in eval mode with the offline AlexNet weights.

    Built with ``pnet_rand=True`` (no download; its linear layers are the package's own v0.1 weights),
    then the five converted conv layers are copied into its backbone. Raises
    :class:`inr_fast.lpips_weights.LpipsWeightsError` (an InrFastError naming the fix) when the weights
    are not in the cache, and InrFastError when the `lpips` package is not installed.
    """
    from . import lpips_weights as lw

    device = torch.device(device)
    key = (str(lw.weights_path(cache_dir)), str(device))
    model = _LPIPS_MODELS.get(key)
    if model is not None:
        return model
    weights = lw.load_alexnet_weights(cache_dir)
    try:
        import lpips as lpips_pkg
    except ImportError as exc:
        raise InrFastError(
            "LPIPS needs the `lpips` and `torchvision` packages: pip install 'inr_fast[lpips]'"
        ) from exc
    with warnings.catch_warnings():
        # lpips 0.1.4 calls torchvision's alexnet(pretrained=False), deprecated since torchvision 0.13
        warnings.filterwarnings(
            "ignore", message="The parameter 'pretrained' is deprecated", category=UserWarning
        )
        warnings.filterwarnings("ignore", message="Arguments other than a weight enum", category=UserWarning)
        model = lpips_pkg.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
    state = {}
    for i, prefix in lw.LPIPS_CONV_KEYS.items():
        state[f"{prefix}.weight"] = weights[f"conv{i}.weight"]
        state[f"{prefix}.bias"] = weights[f"conv{i}.bias"]
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:  # pragma: no cover - a different lpips layout
        raise InrFastError(f"lpips model has no parameters {result.unexpected_keys}; lpips 0.1.4 expected")
    model = model.eval().requires_grad_(False).to(device)
    _LPIPS_MODELS[key] = model
    return model


def lpips_images(
    img0: torch.Tensor,
    img1: torch.Tensor,
    *,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """LPIPS(alex, v0.1) distance between RGB images already in [-1, 1]: (B, 3, H, W) twice -> (B,)
    float64 on the inputs' device. The plain network call, as the reference values are defined."""
    if img0.shape != img1.shape or img0.ndim != 4 or img0.shape[1] != 3:
        raise InrFastError(
            f"lpips_images: expected two (B, 3, H, W) tensors, got {tuple(img0.shape)} "
            f"and {tuple(img1.shape)}"
        )
    model = lpips_model(cache_dir, img0.device)
    out = torch.empty(img0.shape[0], dtype=torch.float64, device=img0.device)
    with torch.inference_mode():
        for i in range(0, img0.shape[0], batch_size):
            a = img0[i : i + batch_size].to(torch.float32)
            b = img1[i : i + batch_size].to(torch.float32)
            out[i : i + batch_size] = model(a, b).reshape(-1).to(torch.float64)
    return out


def lpips(
    x_hat,
    x,
    *,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 64,
):
    """LPIPS(alex, v0.1) of jet images: (..., H, W, 3) twice -> (...).

    Both images are mapped by ``2 (v - min(x)) / R - 1`` with min(x) and R of the ORIGINAL x, channels
    (ECAL, HCAL, Tracks) taken as (R, G, B), laid out (B, 3, H, W). ``device`` defaults to the inputs'
    device. Needs the weights fetched once with ``python -m inr_fast.lpips_weights fetch``."""
    th, t = _to_torch(x_hat), _to_torch(x)
    _check_pair(th, t)
    if t.shape[-1] != 3:
        raise InrFastError(f"lpips needs 3 channels (taken as RGB), got {t.shape[-1]}")
    if device is not None:
        th, t = th.to(device), t.to(device)
    lead, (h, w) = t.shape[:-3], t.shape[-3:-1]
    a, b = th.reshape(-1, h, w, 3), t.reshape(-1, h, w, 3)
    f = _flat(b)
    lo, r = f.amin(dim=-1), f.amax(dim=-1) - f.amin(dim=-1)
    safe = torch.where(r > 0, r, torch.ones_like(r)).view(-1, 1, 1, 1)
    lo = lo.view(-1, 1, 1, 1)
    a = (2 * (a - lo) / safe - 1).permute(0, 3, 1, 2)
    b = (2 * (b - lo) / safe - 1).permute(0, 3, 1, 2)
    out = lpips_images(a, b, cache_dir=cache_dir, batch_size=batch_size)
    out = torch.where(r > 0, out, torch.full_like(out, float("nan")))
    return _like(out.reshape(lead), x_hat, x)


# --------------------------------------------------------------------------------------------------
# Everything for a batch
# --------------------------------------------------------------------------------------------------
def compute_all(
    x_hat,
    x,
    *,
    with_lpips: bool = True,
    cache_dir: str | os.PathLike | None = None,
    channels: Sequence[int] = observables.CALO_CHANNELS,
    threshold: float = observables.NONZERO_THRESHOLD,
) -> dict[str, np.ndarray]:
    """Every metric for a batch of jets: (B, H, W, 3) twice (or one (H, W, 3) image, as B = 1) ->
    dict of numpy float64 (counts: int64) arrays of shape (B,):

    ``psnr``, ``psnr_zero``, ``psnr_gain``, ``rel_l2``, ``rel_l2_{ecal,hcal,tracks}``, ``ssim``,
    ``lpips`` (unless ``with_lpips`` is False), and :func:`inr_fast.observables.physics_metrics`:
    ``sum_rel_err_{ecal,hcal,tracks}``, ``jet_pt``, ``jet_pt_hat``, ``jet_pt_rel_err``, ``jet_mass``,
    ``jet_mass_hat``, ``jet_mass_rel_err``, ``n_nonzero``, ``n_kept``, ``n_spurious``, ``nonzero_kept``,
    ``off_support``, ``off_support_abs``.
    Relative errors of sums, pT and mass are signed.
    """
    from .layout import CHANNELS

    th, t = _to_torch(x_hat), _to_torch(x)
    if t.ndim == 3:
        th, t = th[None], t[None]
    _check_pair(th, t)
    if t.ndim != 4:
        raise InrFastError(f"compute_all: expected (B, H, W, C) images, got shape {tuple(t.shape)}")
    out: dict[str, np.ndarray] = {}

    def put(name, v):
        out[name] = v.detach().cpu().numpy()

    put("psnr", psnr(th, t))
    put("psnr_zero", psnr_zero(t))
    out["psnr_gain"] = out["psnr"] - out["psnr_zero"]
    put("rel_l2", rel_l2(th, t))
    per = rel_l2_per_channel(th, t)
    names = CHANNELS if t.shape[-1] == len(CHANNELS) else tuple(f"ch{c}" for c in range(t.shape[-1]))
    for c, name in enumerate(names):
        put(f"rel_l2_{name.lower()}", per[:, c])
    put("ssim", ssim(th, t))
    if with_lpips:
        put("lpips", lpips(th, t, cache_dir=cache_dir))
    out.update(observables.physics_metrics(th, t, channels=channels, threshold=threshold))
    return out


# Quality levels of DESIGN.md, used by benchmarks and early stopping.
Q1_PSNR, Q1_SSIM = 55.0, 0.997
Q2_REL_L2, Q2_SUM_REL, Q2_MASS_REL = 0.05, 0.01, 0.02


def quality_levels(x_hat, x, metrics: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Which jets meet each quality level: (B, H, W, 3) twice -> {"Q1": (B,) bool, "Q2": (B,) bool}.

    Q1 (the seed's published level): psnr >= 55 dB and ssim >= 0.997.
    Q2 (physics): rel_l2 <= 0.05, every channel's total within 1 % of the original's, and the
    image-based jet mass within 2 %. A channel whose original total is 0 must stay within 1 % of the
    jet's summed |total| over all channels (an empty Tracks channel must stay essentially empty).
    ``metrics``: a :func:`compute_all` result for the same images, to avoid recomputing it.
    """
    th, t = _to_torch(x_hat), _to_torch(x)
    if t.ndim == 3:
        th, t = th[None], t[None]
    m = compute_all(th, t, with_lpips=False) if metrics is None else metrics
    s_hat = observables.channel_sums(th).detach().cpu().numpy()  # (B, C)
    s = observables.channel_sums(t).detach().cpu().numpy()
    floor = np.abs(s).sum(axis=-1, keepdims=True)
    scale = np.where(s != 0, np.abs(s), floor)
    sums_ok = np.all(np.abs(s_hat - s) <= Q2_SUM_REL * scale, axis=-1)
    mass_err = np.nan_to_num(np.abs(m["jet_mass_rel_err"]), nan=np.inf)
    q1 = (np.nan_to_num(m["psnr"], nan=-np.inf) >= Q1_PSNR) & (np.nan_to_num(m["ssim"], nan=-1) >= Q1_SSIM)
    q2 = (np.nan_to_num(m["rel_l2"], nan=np.inf) <= Q2_REL_L2) & sums_ok & (mass_err <= Q2_MASS_REL)
    return {"Q1": q1, "Q2": q2}
