"""Helpers shared by the test and benchmark suites (tests/, benchmarks/)."""

from __future__ import annotations

import pytest

from inr_fast._ext import gpu_ready

GPU_SKIP_REASON = "needs a CUDA GPU and a CUDA build of inr_fast (make gpu-test)"


def skip_gpu_items(items) -> None:
    """Mark every collected item carrying the `gpu` marker as skipped unless :func:`gpu_ready`."""
    if gpu_ready():
        return
    skip = pytest.mark.skip(reason=GPU_SKIP_REASON)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def gaussian_jets(n: int, seed: int = 0):
    """n synthetic sparse jets (n, 125, 125, 3) float32 for fast tests: three Gaussian deposits per
    channel near the centre, exponential energies, values below 0.05 GeV zeroed (~85 % zeros);
    learnable by tiny networks in a few steps."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:125, 0:125]
    images = np.zeros((n, 125, 125, 3), np.float32)
    for j in range(n):
        for c in range(3):
            for _ in range(3):
                cy, cx = rng.uniform(45, 80, size=2)
                s, e = rng.uniform(3, 8), rng.exponential(20.0)
                images[j, :, :, c] += e * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    images[images < 0.05] = 0
    return images
