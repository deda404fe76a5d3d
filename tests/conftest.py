"""Shared test set-up: the `gpu` marker skips unless a GPU and a CUDA build of the extension exist."""

from __future__ import annotations

import pytest
import torch

import inr_fast


def _gpu_ready() -> bool:
    return torch.cuda.is_available() and inr_fast.cuda_built()


def pytest_collection_modifyitems(config, items):
    if _gpu_ready():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU and a CUDA build of inr_fast (make gpu-test)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
