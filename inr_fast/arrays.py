"""Array conventions shared by the metrics: numpy or torch in, float64 computation, the input's kind
out (numpy in -> numpy float64 out; torch in -> torch float64 on the input's device), and the shape
checks of image batches (..., H, W, C)."""

from __future__ import annotations

import numpy as np
import torch

from inr_fast.errors import DataError


def to_torch(a) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    return t.to(torch.float64)


def like(t: torch.Tensor, *refs):
    """Return ``t`` as numpy when every reference input was numpy (or array-like), else as torch."""
    if any(isinstance(r, torch.Tensor) for r in refs):
        return t
    return t.detach().cpu().numpy()


def check_image(x: torch.Tensor, name: str = "x") -> None:
    if x.ndim < 3:
        raise DataError(
            f"{name}: expected an image batch of shape (..., H, W, C), got shape {tuple(x.shape)}"
        )


def check_pair(x_hat: torch.Tensor, x: torch.Tensor) -> None:
    check_image(x)
    if x_hat.shape != x.shape:
        raise DataError(
            f"reconstruction shape {tuple(x_hat.shape)} differs from original shape {tuple(x.shape)}"
        )


def relative(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Signed relative error (a - b) / b, IEEE semantics (no warnings) for b = 0."""
    return (a - b) / b
