"""Shared test set-up: the `gpu` marker skips unless a GPU and a CUDA build of the extension exist."""

from __future__ import annotations

import pytest
import torch

from inr_fast.jobs.fit import FitCommand, fit_run
from inr_fast.testing import skip_gpu_items
from tests.helpers import STEPS, write_jets


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


@pytest.fixture(scope="session")
def fitted(tmp_path_factory):
    """(run directory, originals) of a tiny fitted run (compact preset, 20 steps, chunks of 2 jets)."""
    root = tmp_path_factory.mktemp("report")
    originals = write_jets(root / "jets.h5")
    cmd = FitCommand(
        file=str(root / "jets.h5"),
        out=str(root / "run"),
        preset="compact",
        max_steps=STEPS,
        batch_size=2,
        device="cpu",
        progress=False,
    )
    fit_run(cmd)
    return root / "run", originals
