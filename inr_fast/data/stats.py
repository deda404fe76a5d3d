"""What a set of jets says about its detector: the zero-suppression levels (the smallest positive value
per channel), whether any pixel is negative, whether every HCAL tower is uniform. Computed per chunk and
merged, so a file read in chunks (or by Dask workers) gets the same answer as the whole file."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from inr_fast.arrays import check_image, like, to_torch
from inr_fast.errors import DataError
from inr_fast.layout import HCAL_TOWER, IMAGE_SIZE, N_CHANNELS

N_TOWERS = IMAGE_SIZE // HCAL_TOWER


def zero_suppression_levels(x, *, allow_empty: bool = False):
    """Per-channel zero-suppression level of a set of ORIGINAL images: the smallest positive value of
    each channel over all images, (..., H, W, C) -> (C,). A value v survives suppression at level L iff
    v >= L. Pass the levels of the whole file (not of one batch) where batches must agree: for a file
    read in chunks, the element-wise minimum of the chunks' levels (with ``allow_empty=True``, a
    channel without a positive pixel gives inf, so the minimum composes). Otherwise a channel without a
    positive pixel raises DataError (give the levels explicitly then)."""
    t = to_torch(x)
    check_image(t)
    flat = t.reshape(-1, t.shape[-1])
    pos = torch.where(flat > 0, flat, torch.full_like(flat, float("inf")))
    inf = torch.full((1, flat.shape[-1]), float("inf"), dtype=flat.dtype, device=flat.device)
    levels = torch.cat([pos, inf]).amin(dim=0)  # an empty batch: inf
    if not allow_empty and not torch.isfinite(levels).all():
        empty = [int(c) for c in torch.nonzero(~torch.isfinite(levels)).flatten()]
        raise DataError(
            f"zero_suppression_levels: channel(s) {empty} have no positive pixel in these images; "
            "pass the zero-suppression levels explicitly"
        )
    return like(levels, x)


def towers_uniform(images: np.ndarray, rtol: float = 1e-5) -> bool:
    """Whether every HCAL tower of ``images`` (k, 125, 125, 3) is uniform (to float32 rounding of the
    tower value), i.e. the file's HCAL has tower granularity."""
    h = np.asarray(images, dtype=np.float64)[..., 1].reshape(-1, N_TOWERS, HCAL_TOWER, N_TOWERS, HCAL_TOWER)
    dev = np.abs(h - h.mean(axis=(2, 4), keepdims=True)).max(axis=(2, 4))
    return bool((dev <= rtol * np.abs(h).max(axis=(2, 4)) + 1e-30).all())


@dataclass(frozen=True)
class DataStats:
    """What decoding needs to know of a set of jets: per channel the smallest positive value (inf where
    none), whether any pixel is negative, whether every HCAL tower is uniform. Merged with ``+``."""

    min_positive: tuple[float, float, float]
    negative: bool
    towers: bool

    @classmethod
    def of(cls, images: np.ndarray) -> DataStats:
        x = np.asarray(images, dtype=np.float32).reshape(-1, IMAGE_SIZE, IMAGE_SIZE, N_CHANNELS)
        pos = np.where(x > 0, x, np.inf).min(axis=(0, 1, 2)) if len(x) else np.full(N_CHANNELS, np.inf)
        return cls(tuple(float(v) for v in pos), bool((x < 0).any()), towers_uniform(x))

    def levels(self) -> np.ndarray:
        """The zero-suppression levels (3,) for quality checks: the smallest positive value per channel
        (a channel without any positive pixel: 1e30, above anything a reconstruction holds)."""
        return np.array([v if np.isfinite(v) else 1e30 for v in self.min_positive])

    def to_dict(self) -> dict:
        return {"min_positive": [v if np.isfinite(v) else None for v in self.min_positive],
                "negative": self.negative, "towers": self.towers}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> DataStats:
        low = tuple(float("inf") if v is None else float(v) for v in d["min_positive"])
        return cls(low, bool(d["negative"]), bool(d["towers"]))

    def __add__(self, other: DataStats) -> DataStats:
        low = tuple(min(a, b) for a, b in zip(self.min_positive, other.min_positive, strict=True))
        return DataStats(low, self.negative or other.negative, self.towers and other.towers)
