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
