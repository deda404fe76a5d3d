"""Benchmark pieces: lossless storage baseline, quality-level monitor, seed timing arithmetic, and the
end-to-end runner's plumbing on tiny jets (speed itself is measured by `inr-fast bench`, not here)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from inr_fast.bench.common import RAW_BYTES, Method, sparse_lossless_bytes, storage_baselines
from inr_fast.bench.kernels import format_kernel_table, kernel_timings
from inr_fast.bench.suite import LevelMonitor, format_end_to_end, reached_mask, run_method, seed_level_times
from inr_fast.model.spec import ModelSpec, bytes_per_jet, param_count

pytestmark = pytest.mark.usefixtures("one_thread")


def _sparse_jet(seed=0, n=300):
    rng = np.random.default_rng(seed)
    img = np.zeros((125, 125, 3), np.float32)
    flat = img.reshape(-1)
    flat[rng.choice(flat.size, n, replace=False)] = rng.exponential(2.0, n).astype(np.float32)
    return img


def _decode(blob: bytes, value_dtype) -> np.ndarray:
    payload = zlib.decompress(blob)
    n = len(payload) // (2 + np.dtype(value_dtype).itemsize)
    idx = np.frombuffer(payload[: 2 * n], np.uint16)
    vals = np.frombuffer(payload[2 * n :], value_dtype)
    out = np.zeros(125 * 125 * 3, np.float32)
    out[idx] = vals
    return out.reshape(125, 125, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_sparse_lossless_bytes_is_a_faithful_encoding(dtype):
    img = _sparse_jet()
    flat = img.reshape(-1)
    idx = np.flatnonzero(flat)
    blob = zlib.compress(idx.astype(np.uint16).tobytes() + flat[idx].astype(dtype).tobytes(), 9)
    assert sparse_lossless_bytes(img, dtype) == len(blob)
    decoded = _decode(blob, dtype)
    if dtype is np.float32:
        np.testing.assert_array_equal(decoded, img)  # lossless
    else:
        np.testing.assert_array_equal(decoded, img.astype(np.float16).astype(np.float32))
    # far below the raw image, and the float16 variant is smaller still
    assert sparse_lossless_bytes(img, dtype) < 300 * 6 < RAW_BYTES


def test_storage_baselines():
    imgs = np.stack([_sparse_jet(1, 100), _sparse_jet(2, 400)])
    st = storage_baselines(imgs)
    assert st["raw_float32"] == 125 * 125 * 3 * 4
    want = np.mean([sparse_lossless_bytes(im) for im in imgs])
    assert st["sparse_gzip_float32"] == pytest.approx(want)
    assert st["sparse_gzip_float16"] < st["sparse_gzip_float32"]


def test_level_monitor_records_first_steps_and_stops():
    x = np.stack([_sparse_jet(3), _sparse_jet(4)])
    mon = LevelMonitor(x, stop_level="Q2")
    ids = np.array([0, 1])
    far = torch.zeros(2, 125 * 125, 3)
    stop = mon(0, ids, far)
    assert stop.tolist() == [False, False]
    assert mon.first_step["Q2"].tolist() == [-1, -1]
    near = torch.from_numpy(x.reshape(2, -1, 3)).clone()
    near[1] = 0  # jet 1 still far
    stop = mon(10, ids, near)
    assert stop.tolist() == [True, False]
    assert mon.first_step["Q1"].tolist() == [10, -1] and mon.first_step["Q2"].tolist() == [10, -1]
    mon(20, np.array([1]), torch.from_numpy(x[1:].reshape(1, -1, 3)))
    assert mon.first_step["Q2"].tolist() == [10, 20]  # the first step is kept
    assert mon.first_time["Q2"][0] <= mon.first_time["Q2"][1]
    assert LevelMonitor(x)(0, ids, near).tolist() == [False, False]  # no stop level: never stops


def test_seed_level_times_by_hand():
    run = {"wall_s": 8.0, "steps_run": 400, "first_step": {"Q1": [9, 49, -1, 19], "Q2": [-1, -1, -1, -1]}}
    t = seed_level_times(run, full_steps=10_000)
    assert t["seconds_per_jet_step"] == pytest.approx(0.02)
    assert t["full_recipe_s_per_jet"] == pytest.approx(200.0)
    assert t["Q1"]["fraction"] == 0.75
    assert t["Q1"]["median_steps"] == 20  # steps 10, 20, 50 -> median 20
    assert t["Q1"]["median_s"] == pytest.approx(0.4)
    assert t["Q2"]["fraction"] == 0.0 and np.isnan(t["Q2"]["median_s"])


def test_run_method_plumbing_on_tiny_jets():
    x = np.stack([_sparse_jet(5, 80), _sparse_jet(6, 80)])
    tiny = {"max_steps": 12, "check_every": 4, "n_freqs": 4, "width": 16, "depth": 1, "batch_size": 2}
    row = run_method(Method("tiny", "fast", "fused", tiny), x, "cpu", stop_level="Q2")
    assert row["n_jets"] == 2 and row["wall_s"] > 0
    assert row["bytes_per_jet"] == bytes_per_jet(ModelSpec(n_freqs=4, width=16, depth=1))
    assert 0 < row["steps_run"] <= 24
    assert set(row["first_step"]) == {"Q1", "Q2"}
    assert 0 <= row["quality"]["rel_l2_median"] < 10
    seed = seed_level_times({"wall_s": 1.0, "steps_run": 100, "first_step": row["first_step"]})
    seed["bytes_per_jet"] = 1
    table = format_end_to_end(seed, [row], 2)
    assert "| tiny | Q2 |" in table and "ms per jet-step" in table


def test_a_level_counts_only_where_the_stored_result_holds_it():
    run = {"first_step": {"Q2": [40, -1, 80, 20]}, "final_holds": {"Q2": [True, True, False, True]}}
    # jet 1 never reached Q2 during training; jet 2 did, but its stored (float16) result does not
    assert reached_mask(run, "Q2").tolist() == [True, False, False, True]
    del run["final_holds"]
    assert reached_mask(run, "Q2").tolist() == [True, False, True, True]
    x = np.stack([_sparse_jet(5, 80), _sparse_jet(6, 80)])
    tiny = {"max_steps": 8, "check_every": 4, "n_freqs": 4, "width": 16, "depth": 1, "param_dtype": "float16"}
    row = run_method(Method("tiny16", "fast", "reference", tiny), x, "cpu", stop_level="Q2")
    assert row["bytes_per_jet"] == 2 * (param_count(ModelSpec(n_freqs=4, width=16, depth=1)) - 3) + 12
    assert len(row["final_holds"]["Q2"]) == 2


def test_kernel_timings_rows_are_consistent():
    rows = kernel_timings(
        "cpu", widths=(16,), depths=(1,), batches=(2,), n_coords=64, rounds=1, progress=False
    )
    (r,) = rows
    assert (r["W"], r["D"], r["B"], r["N"]) == (16, 1, 2, 64)
    assert r["step_speedup"] == pytest.approx(r["step_reference_s"] / r["step_fused_s"])
    # L = 10: forward 42 -> 16 -> 3 is 2*(42*16 + 16*3) flops per coordinate; a step is twice the
    # forward plus the input deltas of the output layer, 2*16*3; B*N = 128 coordinates
    assert r["step_gflop"] == pytest.approx(128 * (2 * 2 * (42 * 16 + 16 * 3) + 2 * 16 * 3) / 1e9)
    assert "| 16 | 1 | 2 |" in format_kernel_table(rows)
