"""Kernel benchmarks: the fused PE + MLP operators against the batched pure-PyTorch reference.

Run (one run, compare ratios within it):
    python -m pytest benchmarks/bench_kernels.py --benchmark-only --benchmark-group-by=group

Issue 4's CPU target: a training step (forward + backward) for B = 64 jets x N = 15,625 coordinates,
W = 64, D = 3, L = 10, at least 3x faster than the reference (`reference.batched_mlp` + autograd).
Groups: `step` (MSE loss + all parameter gradients), `forward`, `backward` (given the output gradient).
The `gpu` benchmarks (B x N >= 1M, W = 64 and 128; reference under AMP) run in `make gpu-test`.
"""

from __future__ import annotations

import platform

import pytest
import torch

from inr_fast.model.reference import batched_mlp, init_params
from inr_fast.model.spec import layer_shapes
from inr_fast.ops import cpu_isa, mse_step, pe_mlp

B, N, W, D, L = 64, 15_625, 64, 3, 10
ROUNDS = dict(rounds=3, iterations=1, warmup_rounds=1)


def _flops(width, depth, batch, n, backward):
    fwd = sum(2 * fo * fi for fo, fi in layer_shapes(L, width, depth))
    dx = sum(2 * fo * fi for fo, fi in layer_shapes(L, width, depth)[1:])
    return batch * n * (2 * fwd + dx if backward else fwd)


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


@pytest.fixture(scope="module")
def problem():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(N, 2, generator=gen) * 2 - 1
    w, b = init_params(B, L, W, D, generator=gen)
    target = torch.rand(B, N, 3, generator=gen)
    return x, w, b, target


def _info(benchmark, backward, device="cpu"):
    benchmark.extra_info.update(
        shape=f"B={B} N={N} W={W} D={D} L={L}",
        gflop=_flops(W, D, B, N, backward) / 1e9,
        machine=_cpu_name() if device == "cpu" else torch.cuda.get_device_name(),
        threads=torch.get_num_threads(),
        cpu_isa=cpu_isa(),
        torch=torch.__version__,
    )


def _autograd_step(forward, x, w, b, target):
    """MSE loss of ``forward`` (batched_mlp or fused.pe_mlp) and its gradients by autograd."""
    params = [t.detach().requires_grad_(True) for t in (*w, *b)]
    y = forward(x, params[: len(w)], params[len(w) :], L)
    loss = ((y - target) ** 2).mean(dim=(1, 2))
    return torch.autograd.grad(loss.sum(), params)


def _ref_step(x, w, b, target):
    return _autograd_step(batched_mlp, x, w, b, target)


@pytest.mark.benchmark(group="step")
def test_step_reference(benchmark, problem):
    _info(benchmark, True)
    benchmark.pedantic(_ref_step, args=problem, **ROUNDS)


@pytest.mark.benchmark(group="step")
def test_step_fused_mse(benchmark, problem):
    x, w, b, target = problem
    _info(benchmark, True)
    benchmark.pedantic(mse_step, args=(x, w, b, target, L), **ROUNDS)


def _fused_autograd_step(x, w, b, target):
    return _autograd_step(pe_mlp, x, w, b, target)


@pytest.mark.benchmark(group="step")
def test_step_fused_autograd(benchmark, problem):
    # pe_mlp forward + autograd backward op (which recomputes the forward per tile).
    _info(benchmark, True)
    benchmark.pedantic(_fused_autograd_step, args=problem, **ROUNDS)


@pytest.mark.benchmark(group="forward")
def test_forward_reference(benchmark, problem):
    x, w, b, _ = problem
    _info(benchmark, False)
    with torch.no_grad():
        benchmark.pedantic(batched_mlp, args=(x, w, b, L), **ROUNDS)


@pytest.mark.benchmark(group="forward")
def test_forward_fused(benchmark, problem):
    x, w, b, _ = problem
    _info(benchmark, False)
    benchmark.pedantic(pe_mlp, args=(x, w, b, L), **ROUNDS)


@pytest.mark.benchmark(group="backward")
def test_backward_reference(benchmark, problem):
    # Autograd backward alone; the forward (which saves the activations) runs in setup.
    x, w, b, _ = problem
    g = torch.randn(B, N, 3)

    def setup():
        params = [t.detach().requires_grad_(True) for t in (*w, *b)]
        y = batched_mlp(x, params[: len(w)], params[len(w) :], L)
        return (y, params), {}

    _info(benchmark, True)
    benchmark.pedantic(lambda y, params: torch.autograd.grad(y, params, g), setup=setup, rounds=3)


@pytest.mark.benchmark(group="backward")
def test_backward_fused(benchmark, problem):
    # The backward op alone: recomputes the forward per tile, then all parameter gradients.
    x, w, b, _ = problem
    g = torch.randn(B, N, 3)
    _info(benchmark, True)
    benchmark.pedantic(torch.ops.inr_fast.pe_mlp_backward, args=(g, x, w, b, L, False), **ROUNDS)


# --- GPU (make gpu-test): B x N >= 1M coordinates, reference under AMP ------------------------------
GPU_B = 64


@pytest.fixture(scope="module")
def gpu_problems():
    out = {}
    for width in (64, 128):
        gen = torch.Generator().manual_seed(0)
        x = (torch.rand(N, 2, generator=gen) * 2 - 1).cuda()
        w, b = init_params(GPU_B, L, width, D, generator=gen, device="cuda")
        out[width] = (x, w, b, torch.rand(GPU_B, N, 3, generator=gen).cuda())
    return out


def _sync(fn):
    def run(*args):
        out = fn(*args)
        torch.cuda.synchronize()
        return out

    return run


@pytest.mark.gpu
@pytest.mark.parametrize("width", [64, 128])
@pytest.mark.benchmark(group="gpu-step")
def test_gpu_step_reference_amp(benchmark, gpu_problems, width):
    def step(x, w, b, target):
        with torch.autocast("cuda", dtype=torch.float16):
            return _ref_step(x, w, b, target)

    benchmark.extra_info.update(width=width, gflop=_flops(width, D, GPU_B, N, True) / 1e9)
    benchmark.extra_info.update(gpu=torch.cuda.get_device_name(), torch=torch.__version__)
    benchmark.pedantic(_sync(step), args=gpu_problems[width], rounds=10, iterations=1, warmup_rounds=2)


@pytest.mark.gpu
@pytest.mark.parametrize("width", [64, 128])
@pytest.mark.benchmark(group="gpu-step")
def test_gpu_step_fused_mse(benchmark, gpu_problems, width):
    x, w, b, target = gpu_problems[width]
    benchmark.extra_info.update(width=width, gflop=_flops(width, D, GPU_B, N, True) / 1e9)
    benchmark.extra_info.update(gpu=torch.cuda.get_device_name(), torch=torch.__version__)
    benchmark.pedantic(_sync(mse_step), args=(x, w, b, target, L), rounds=10, iterations=1, warmup_rounds=2)


@pytest.mark.gpu
@pytest.mark.benchmark(group="gpu-step")
def test_gpu_step_fused_mse_mma_sync(benchmark, gpu_problems, monkeypatch):
    """W = 64 with the wgmma kernel turned off (INR_FAST_WGMMA=0): the mma.sync kernel, to compare
    with test_gpu_step_fused_mse[64], which takes the wgmma kernel where the build has sm_90a code."""
    monkeypatch.setenv("INR_FAST_WGMMA", "0")
    x, w, b, target = gpu_problems[64]
    benchmark.extra_info.update(width=64, gflop=_flops(64, D, GPU_B, N, True) / 1e9, kernel="mma.sync")
    benchmark.extra_info.update(gpu=torch.cuda.get_device_name(), torch=torch.__version__)
    benchmark.pedantic(_sync(mse_step), args=(x, w, b, target, L), rounds=10, iterations=1, warmup_rounds=2)
