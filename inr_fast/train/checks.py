"""What a check step judges: per-jet psnr and rel_l2 of the reconstruction, the early-stopping
targets, and the sum correction (:func:`match_channel_sums`: the per-jet, per-channel shift of the
network's OUTPUT BIAS, in the normalised space the network is trained in, that makes each channel's
total, after the inverse normalisation, equal to the original's; folded into the stored output bias,
so the stored network reproduces the channel totals with no change to rendering. For a linear
normaliser one Newton step is exact; for a monotone non-linear one (asinh, log1p) a few steps
converge)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from inr_fast.layout import IMAGE_SIZE, N_CHANNELS
from inr_fast.metrics.image import psnr as image_psnr
from inr_fast.metrics.image import rel_l2 as image_rel_l2
from inr_fast.train.config import FitConfig

InverseFn = Callable[[torch.Tensor], torch.Tensor]


def psnr_rel_l2(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-jet psnr and rel_l2 (:mod:`inr_fast.metrics.image`) of pred against target, (B, N, 3) on the
    original scale in the pixel order of :func:`inr_fast.data.grid.pixel_grid` (N = 125^2) -> two (B,)
    float64, made total orders for stopping: a perfect fit gives psnr +inf and rel_l2 0; an undefined
    psnr (a constant original) is -inf and an undefined rel_l2 (an all-zero original) +inf."""
    shape = (-1, IMAGE_SIZE, IMAGE_SIZE, N_CHANNELS)
    x_hat, x = pred.double().reshape(shape), target.double().reshape(shape)
    psnr, rel = image_psnr(x_hat, x), image_rel_l2(x_hat, x)
    exact = (x_hat == x).flatten(1).all(dim=1)
    psnr = torch.where(exact, torch.full_like(psnr, math.inf), psnr)
    rel = torch.where(exact, torch.zeros_like(rel), rel)
    return psnr.nan_to_num(nan=-math.inf), rel.nan_to_num(nan=math.inf)


def targets_met(psnr: torch.Tensor, rel_l2: torch.Tensor, cfg: FitConfig) -> torch.Tensor:
    """(B,) bool: every target of ``cfg`` that is set is met (False everywhere when none is set)."""
    met = torch.ones_like(psnr, dtype=torch.bool)
    if not cfg.has_target:
        return ~met
    if cfg.target_psnr is not None:
        met &= psnr >= cfg.target_psnr
    if cfg.target_rel_l2 is not None:
        met &= rel_l2 <= cfg.target_rel_l2
    return met


def match_channel_sums(
    values: torch.Tensor,
    inverse: InverseFn,
    totals: torch.Tensor,
    iters: int = 60,
    max_step: float = 1.0,
    rtol: float = 1e-9,
) -> torch.Tensor:
    """The output-bias shifts delta (B, C) with sum_n inverse(values + delta)[b, n, c] = totals[b, c].

    values (B, N, C): network outputs (normalised space); inverse: the elementwise, per-channel,
    increasing inverse normalisation of B jets ((B, N, C) -> (B, N, C), e.g. a normaliser's
    ``inverse``); totals (B, C): the original per-channel sums (GeV). Newton's method in float64 on
    each (jet, channel) independently, starting from 0, with derivatives from autograd (``inverse``
    may mix pixels of one channel, e.g. tower means, but never jets or channels), each step clamped to
    ``max_step`` in magnitude (an exponential-like inverse far from the root would otherwise
    overshoot); where the slope is 0 (a decoding floor holds every pixel) the step is ``max_step``
    towards the target; stops after ``iters`` steps or when every residual is within ``rtol`` x
    (|total| + 1). Entries whose iteration goes non-finite are 0.
    Returns delta (B, C) float64 on the device of ``values``.
    """
    if values.ndim != 3 or totals.shape != (values.shape[0], values.shape[2]):
        raise ValueError(
            f"values must be (B, N, C) and totals (B, C); got {tuple(values.shape)} and {tuple(totals.shape)}"
        )
    y = values.detach().double()
    target = totals.detach().to(y.device, torch.float64)
    delta = torch.zeros_like(target)
    for _ in range(iters):
        d = delta.clone().requires_grad_(True)
        with torch.enable_grad():
            sums = inverse(y + d.unsqueeze(1)).double().sum(dim=1)  # (B, C)
            (slope,) = torch.autograd.grad(sums.sum(), d)
        resid = sums.detach() - target
        if bool((resid.abs() <= rtol * (target.abs() + 1.0)).all()):
            break
        # where the total does not move with the shift (every pixel below a decoding floor), step
        # towards the target by max_step until some pixels move again
        flat = torch.sign(resid) * max_step
        step = torch.where(slope > 0, resid / slope, flat).clamp(-max_step, max_step)
        delta = delta - step
    return torch.where(torch.isfinite(delta), delta, torch.zeros_like(delta))
