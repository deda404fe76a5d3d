"""pytest-benchmark set-up for benchmarks/: collect bench_*.py, skip `gpu` benchmarks without a GPU."""

from __future__ import annotations

import pytest
import torch


def pytest_collect_file(file_path, parent):
    # Files named on the command line are collected by pytest itself.
    if parent.session.isinitpath(file_path):
        return None
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def _gpu_ready() -> bool:
    import inr_fast

    return torch.cuda.is_available() and inr_fast.cuda_built()


def pytest_collection_modifyitems(config, items):
    if _gpu_ready():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU and a CUDA build of inr_fast (make gpu-test)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
