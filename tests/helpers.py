"""Small data sets shared by several test modules (values, not fixtures; fixtures are in conftest.py)."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import scipy.ndimage as ndi

from inr_fast.testing import gaussian_jets

#: a tiny network for fast fits
TINY = {"n_freqs": 5, "width": 16, "depth": 2}
make_jets = gaussian_jets
#: the run of the `fitted` fixture: jets, labels and steps
N_JETS = 3
LABELS = np.array([1, 0, 1])
STEPS = 20
SIZE = 125


def write_jets(path: Path) -> np.ndarray:
    rng = np.random.default_rng(11)
    x = np.zeros((N_JETS, 125, 125, 3), np.float32)
    for j in range(N_JETS):
        for c in range(3):
            rows = np.clip(rng.normal(62, 6, 30).astype(int), 0, 124)
            cols = np.clip(rng.normal(62, 6, 30).astype(int), 0, 124)
            x[j, rows, cols, c] = rng.exponential(4.0, 30).astype(np.float32) + 0.1
    with h5py.File(path, "w") as f:
        f["X_jets"] = x
        f["y"] = LABELS.astype(np.float32)
        f["m0"] = np.full(N_JETS, 30.0, np.float32)
        f["pt"] = np.full(N_JETS, 120.0, np.float32)
    return x


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def jet_like(rng: np.random.Generator, n: int = 3, size: int = SIZE) -> np.ndarray:
    """(n, size, size, 3) float32 GeV: a few particles near the centre, ECAL Gaussian spots, HCAL
    constant on aligned 5 x 5 towers, single-pixel tracks, zero elsewhere (~98 % zeros)."""
    out = np.zeros((n, size, size, 3), np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for j in range(n):
        n_part = rng.integers(8, 30)
        pos = np.clip(rng.normal(size / 2, 8, (n_part, 2)), 0, size - 1)
        pt = rng.exponential(10.0, n_part) + 0.5
        for (r, c), p in zip(pos, pt, strict=True):
            spot = np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 0.8**2))
            spot[spot < 0.05] = 0
            out[j, :, :, 0] += 0.4 * p * spot / spot.sum()
            tr, tc = int(r) // 5 * 5, int(c) // 5 * 5
            out[j, tr : tr + 5, tc : tc + 5, 1] += 0.6 * p / 25
            if rng.random() < 0.6:
                out[j, int(r), int(c), 2] += p
    return out


def image_pairs(kind: str, seed: int = 0, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(x, x_hat) pairs of (n, 125, 125, 3) float64 of three kinds."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        x = rng.random((n, SIZE, SIZE, 3)) * 5
        x_hat = x + rng.normal(0, 0.5, x.shape)
    elif kind == "sparse":
        x = rng.exponential(3.0, (n, SIZE, SIZE, 3)) * (rng.random((n, SIZE, SIZE, 3)) < 0.02)
        x_hat = np.where(rng.random(x.shape) < 0.8, x, 0) + rng.normal(0, 0.05, x.shape)
    elif kind == "jet":
        x = jet_like(rng, n).astype(np.float64)
        # an INR-like reconstruction: blurred, slightly rescaled, with smooth low-level noise
        noise = ndi.gaussian_filter(rng.normal(0, 0.3, x.shape), sigma=(0, 3, 3, 0))
        x_hat = 0.97 * ndi.gaussian_filter(x, sigma=(0, 0.6, 0.6, 0)) + noise
    else:
        raise ValueError(kind)
    return x, x_hat
