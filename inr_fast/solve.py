"""Closed-form and few-iteration corrections of fitted networks, pure functions.

:func:`match_channel_sums`: the per-jet, per-channel shift of the network's OUTPUT BIAS (in the
normalised space the network is trained in) that makes each channel's total, after the inverse
normalisation, equal to the original's. The shift is folded into the last-layer bias, so the stored
network reproduces the channel totals with no change to rendering. For a linear normaliser one Newton
step is exact; for a monotone non-linear one (asinh, log1p) a few Newton steps converge.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

InverseFn = Callable[[torch.Tensor], torch.Tensor]


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
    each (jet, channel) independently, starting from 0, with derivatives from autograd (the Jacobian
    is diagonal because ``inverse`` is elementwise), each step clamped to ``max_step`` in magnitude
    (an exponential-like inverse far from the root would otherwise overshoot); stops after ``iters``
    steps or when every residual is within ``rtol`` x (|total| + 1). Entries whose iteration goes
    non-finite are 0.
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
        step = torch.where(slope > 0, resid / slope, torch.zeros_like(resid)).clamp(-max_step, max_step)
        delta = delta - step
    return torch.where(torch.isfinite(delta), delta, torch.zeros_like(delta))
