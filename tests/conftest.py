"""Shared test set-up: the `gpu` marker skips unless a GPU and a CUDA build of the extension exist."""

from __future__ import annotations

import pytest
import torch

from inr_fast.testing import skip_gpu_items


def pytest_collection_modifyitems(config, items):
    skip_gpu_items(items)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """Tiny problems on shared cores: one intra-op thread avoids OpenMP spin contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
