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
