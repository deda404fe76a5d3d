"""Jet files for the data-layer tests: sparse heavy-tailed images written in the file layout."""

from __future__ import annotations

import h5py
import numpy as np

JET_BYTES = 125 * 125 * 3 * 4


def make_images(n: int, seed: int = 0, negatives: bool = True) -> np.ndarray:
    """Sparse heavy-tailed jets (about 2 % non-zero pixels), a few small negative noise pixels."""
    rng = np.random.default_rng(seed)
    x = (rng.pareto(2.0, (n, 125, 125, 3)) * (rng.random((n, 125, 125, 3)) < 0.02)).astype(np.float32)
    if negatives:
        x[rng.random(x.shape) < 0.002] = -0.05
    return x


def write_jets(path, images, y=None, m0=None, pt=None, channels_first=False, **extra):
    n = len(images)
    y = (np.arange(n) % 2).astype(np.float32) if y is None else y
    m0 = np.linspace(5.0, 30.0, n, dtype=np.float32) if m0 is None else m0
    pt = np.linspace(70.0, 200.0, n, dtype=np.float32) if pt is None else pt
    with h5py.File(path, "w") as f:
        f.create_dataset("X_jets", data=images.transpose(0, 3, 1, 2) if channels_first else images)
        f["y"], f["m0"], f["pt"] = y, m0, pt
        for k, v in extra.items():
            f[k] = v
    return path
