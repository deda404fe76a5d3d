"""LPIPS of jet images: AlexNet, linear layers v0.1 (the `lpips` package), backbone weights supplied
offline by :mod:`inr_fast.metrics.lpips_weights` (never downloaded at run time).

Both images are mapped by ``2 (v - min(x)) / R - 1`` (not clipped) with min(x) and R = max(x) - min(x)
of the ORIGINAL, channels (ECAL, HCAL, Tracks) taken as RGB. A constant original gives nan. The `lpips`
and `torchvision` packages are the optional extra ``inr_fast[lpips]``; they are imported only when
LPIPS is asked for (:func:`available` says whether it can be).
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import torch

from inr_fast.arrays import check_pair, like, to_torch
from inr_fast.errors import InrFastError
from inr_fast.metrics import lpips_weights as lw
from inr_fast.metrics.image import _flat

_LPIPS_MODELS: dict[tuple[str, str], torch.nn.Module] = {}


def available(cache_dir: str | os.PathLike | None = None) -> tuple[bool, str]:
    """(True, "") when LPIPS can be computed here: the `lpips` and `torchvision` packages import and
    the offline weights are in the cache; else (False, what is missing and the commands that fix it)."""
    missing = [m for m in ("lpips", "torchvision") if importlib.util.find_spec(m) is None]
    if missing:
        return False, f"needs {' and '.join(missing)}: pip install 'inr_fast[lpips]'"
    try:
        lw.load_alexnet_weights(cache_dir)
    except lw.LpipsWeightsError as err:
        return False, str(err)
    return True, ""


def lpips_model(
    cache_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """The cached ``lpips.LPIPS(net='alex', version='0.1')`` in eval mode with the offline AlexNet weights.

    Built with ``pnet_rand=True`` (no download; its linear layers are the package's own v0.1 weights),
    then the five converted conv layers are copied into its backbone. Raises
    :class:`inr_fast.metrics.lpips_weights.LpipsWeightsError` (an InrFastError naming the fix) when the
    weights
    are not in the cache, and InrFastError when the `lpips` package is not installed.
    """
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
    device. Needs the weights fetched once with ``python -m inr_fast.metrics.lpips_weights fetch``."""
    th, t = to_torch(x_hat), to_torch(x)
    check_pair(th, t)
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
    return like(out.reshape(lead), x_hat, x)
