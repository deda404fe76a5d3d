"""Positional encoding: the reference against hand values, the compiled op against the reference."""

from __future__ import annotations

import math

import pytest
import torch

import inr_fast
from inr_fast.model.encoding import n_features, positional_encoding


def test_reference_hand_values():
    x = torch.tensor([[0.25, -0.5]], dtype=torch.float64)
    pe = positional_encoding(x, 2)
    # [x0, x1, sin(pi x0), sin(pi x1), cos(pi x0), cos(pi x1), sin(2pi x0), sin(2pi x1), cos(2pi x0), ...]
    want = [0.25, -0.5, math.sqrt(0.5), -1.0, math.sqrt(0.5), 0.0, 1.0, 0.0, 0.0, -1.0]
    assert pe.shape == (1, n_features(2)) == (1, 10)
    torch.testing.assert_close(pe[0], torch.tensor(want, dtype=torch.float64), atol=1e-15, rtol=0)


def test_reference_is_accurate_in_float32_at_high_frequency():
    x = torch.rand(512, 2) * 2 - 1
    ref64 = positional_encoding(x.double(), 10)
    assert (positional_encoding(x, 10).double() - ref64).abs().max() < 1e-7


def _coords(n, dtype=torch.float32):
    return (torch.rand(n, 2, dtype=dtype) * 2 - 1).contiguous()


@pytest.fixture(scope="module")
def ops():
    from inr_fast import ops

    return ops


@pytest.mark.parametrize("n_freqs", [0, 1, 10, 12])
def test_cpu_op_matches_reference(ops, n_freqs):
    x = _coords(15625)
    got = ops.positional_encoding(x, n_freqs)
    want = positional_encoding(x.double(), n_freqs)
    assert got.dtype == torch.float32
    assert (got.double() - want).abs().max().item() < 1e-6


def test_cpu_op_float64_and_noncontiguous(ops):
    x = torch.rand(2, 300, dtype=torch.float64).t()  # non-contiguous (300, 2)
    assert not x.is_contiguous()
    torch.testing.assert_close(ops.positional_encoding(x, 7), positional_encoding(x, 7), atol=1e-13, rtol=0)


def test_cpu_op_gradcheck(ops):
    x = _coords(17, torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: ops.positional_encoding(t, 6), (x,))
    # and the gradient equals the reference's autograd gradient
    g = torch.randn(17, n_features(6), dtype=torch.float64)
    (gx_op,) = torch.autograd.grad(ops.positional_encoding(x, 6), x, g)
    (gx_ref,) = torch.autograd.grad(positional_encoding(x, 6), x, g)
    torch.testing.assert_close(gx_op, gx_ref, atol=1e-10, rtol=1e-10)


# opcheck's aot_dispatch test itself reads .grad of a non-leaf (a torch-internal UserWarning).
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
def test_opcheck(ops):
    x = _coords(33).requires_grad_(True)
    torch.library.opcheck(torch.ops.inr_fast.positional_encoding.default, (x, 5))
    g = torch.randn(33, n_features(5))
    torch.library.opcheck(torch.ops.inr_fast.positional_encoding_backward.default, (g, x.detach(), 5))


def test_bad_input_errors(ops):
    with pytest.raises(RuntimeError, match=r"shape \(N, 2\)"):
        ops.positional_encoding(torch.zeros(4, 3), 2)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        ops.positional_encoding(torch.zeros(4, 2, dtype=torch.int32), 2)


def test_extension_reports_cuda_build():
    # make test builds the CUDA sources whenever nvcc is present; the build must say so.
    import os

    if os.environ.get("CUDA_HOME") and os.environ.get("INR_FAST_FORCE_CPU", "0") != "1":
        assert inr_fast.cuda_built()


@pytest.mark.gpu
def test_cuda_op_matches_reference(ops):
    x = _coords(20001).cuda()
    out = torch.full((1,), float("nan"))
    out = ops.positional_encoding(x, 10)
    want = positional_encoding(x.double().cpu(), 10)
    assert torch.isfinite(out).all()
    assert (out.double().cpu() - want).abs().max().item() < 2e-6
    xg = x.clone().requires_grad_(True)
    g = torch.randn(20001, n_features(10), device="cuda")
    (gx,) = torch.autograd.grad(ops.positional_encoding(xg, 10), xg, g)
    xr = x.double().cpu().requires_grad_(True)
    (gr,) = torch.autograd.grad(positional_encoding(xr, 10), xr, g.double().cpu())
    assert ((gx.double().cpu() - gr).norm() / gr.norm()).item() < 1e-5


def test_compile_fullgraph(ops):
    f = torch.compile(lambda t: ops.positional_encoding(t, 4).sum(), fullgraph=True, backend="eager")
    x = _coords(10)
    torch.testing.assert_close(f(x), positional_encoding(x, 4).sum(), atol=1e-5, rtol=1e-6)
