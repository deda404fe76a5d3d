"""Per-channel moments (count, mean, sum of squared deviations) of images, streamed and merged exactly
(Chan, Golub & LeVeque): what the global normalisers and data summaries are fitted from."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from inr_fast.errors import DataError
from inr_fast.layout import N_CHANNELS


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_channels(x, what: str) -> None:
    if x.ndim < 1 or x.shape[-1] != N_CHANNELS:
        raise DataError(
            f"{what}: expected channels-last values (..., {N_CHANNELS}), got shape {tuple(x.shape)}"
        )


class Moments(NamedTuple):
    """Per-channel count, mean (3,) and sum of squared deviations m2 (3,), all float64."""

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls) -> Moments:
        return cls(0, np.zeros(N_CHANNELS), np.zeros(N_CHANNELS))


def channel_moments(images, block: int = 32, pre=None) -> Moments:
    """Per-channel moments of images (..., 3) (numpy or torch), in float64, two-pass per block of
    ``block`` leading entries (so at most ``block`` images are converted to float64 at a time).
    ``pre``: a normaliser (:mod:`inr_fast.data.normalise`) applied to each float64 block first (moments
    of ``pre.forward(images)``)."""
    x = _to_numpy(images)
    _check_channels(x, "images")
    lead = x.reshape(-1, *x.shape[-3:]) if x.ndim >= 4 else x.reshape(1, -1, N_CHANNELS)
    out = Moments.empty()
    for start in range(0, len(lead), block):
        b = lead[start : start + block].astype(np.float64).reshape(-1, N_CHANNELS)
        if pre is not None:
            b = _to_numpy(pre.forward(b))
        if len(b) == 0:
            continue
        mean = b.mean(axis=0)
        m2 = np.square(b - mean).sum(axis=0)
        out = merge_moments(out, Moments(len(b), mean, m2))
    return out


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Combine the moments of two disjoint sets (Chan, Golub & LeVeque), exact in exact arithmetic."""
    if a.count == 0:
        return b
    if b.count == 0:
        return a
    n = a.count + b.count
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / n)
    m2 = a.m2 + b.m2 + np.square(delta) * (a.count * b.count / n)
    return Moments(n, mean, m2)
