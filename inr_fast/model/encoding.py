"""Sinusoidal positional encoding: the pure-PyTorch reference.

PE(x) = [x, sin(2^k pi x), cos(2^k pi x) for k < L] for coordinates x of shape (N, 2), with the
features ordered, for each k, as [sin(.x0), sin(.x1), cos(.x0), cos(.x1)]; 2 + 4L features in all
(42 for L = 10). The kernels in csrc/ use exactly this order.
"""

from __future__ import annotations

import math

import torch


def n_features(n_freqs: int, dims: int = 2) -> int:
    """Number of encoded features for ``dims``-dimensional coordinates and ``n_freqs`` frequencies."""
    return dims * (1 + 2 * n_freqs)


def positional_encoding(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """Encode coordinates ``x`` (N, d) into (N, d * (1 + 2 * n_freqs)) features.

    The sinusoid arguments are formed in float64 whatever the input dtype, so that the reference is
    accurate to float32 rounding even at 2^9 pi (float32 products would be off by ~1e-4 there);
    the result has the dtype of ``x`` and is differentiable in ``x``.
    """
    if x.dim() != 2:
        raise ValueError(f"positional_encoding: x must have shape (N, d), got {tuple(x.shape)}")
    if n_freqs < 0:
        raise ValueError(f"positional_encoding: n_freqs must be >= 0, got {n_freqs}")
    xd = x.to(torch.float64)
    parts = [xd]
    for k in range(n_freqs):
        arg = (math.pi * 2.0**k) * xd
        parts += [torch.sin(arg), torch.cos(arg)]
    return torch.cat(parts, dim=1).to(x.dtype)
