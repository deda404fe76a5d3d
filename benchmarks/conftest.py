"""pytest-benchmark set-up for benchmarks/: collect bench_*.py, skip `gpu` benchmarks without a GPU."""

from __future__ import annotations

import pytest

from inr_fast.testing import skip_gpu_items


def pytest_collect_file(file_path, parent):
    # Files named on the command line are collected by pytest itself.
    if parent.session.isinitpath(file_path):
        return None
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(config, items):
    skip_gpu_items(items)
