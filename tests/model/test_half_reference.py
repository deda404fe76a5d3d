"""inr_fast.half_reference: float16 rounding, and the CUDA kernel's numerics in pure PyTorch, against
numpy float16 (hand-rounded), the float reference and its autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inr_fast.model import half_reference as hr
from inr_fast.model.encoding import positional_encoding
from inr_fast.model.reference import batched_mlp, init_params


def _problem(batch, n, width, depth, n_freqs, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=gen, dtype=dtype) * 2 - 1
    w, b = init_params(batch, n_freqs, width, depth, generator=gen, dtype=dtype)
    return x, w, b


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_half_equals_float16_in_its_normal_range(dtype):
    gen = torch.Generator().manual_seed(0)
    mag = torch.exp2(torch.empty(20000, dtype=torch.float64).uniform_(-14, 15.99, generator=gen))
    sign = torch.where(torch.rand(20000, generator=gen) < 0.5, -1.0, 1.0).double()
    t = (mag * sign).to(dtype)
    # numpy converts float64 to float16 in one correctly rounded step (torch goes through float32)
    want = torch.from_numpy(t.numpy().astype(np.float16).astype(t.numpy().dtype))
    assert torch.equal(hr.round_half(t), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_half_hand_values(dtype):
    one = 2.0**-20
    cases = {
        1e6: 999936.0,  # beyond float16's 65,504: 1953 x 512, not inf
        one * (1 + 2**-11): one,  # a tie rounds to the even significand
        one * (1 + 3 * 2**-11): one * (1 + 2**-9),  # a tie rounds up to the even one
        -3.0001: -3.0,
        0.0: 0.0,
        math.inf: math.inf,
        -math.inf: -math.inf,
    }
    got = hr.round_half(torch.tensor(list(cases), dtype=dtype))
    want = torch.tensor(list(cases.values()), dtype=dtype)
    assert torch.equal(got, want)
    assert torch.isnan(hr.round_half(torch.tensor([math.nan], dtype=dtype))).all()
    # far below float16's range the significand still has 11 bits (float16 itself gives 0)
    tiny = torch.tensor([1e-9], dtype=dtype)
    assert tiny.half().item() == 0.0
    assert abs(hr.round_half(tiny).item() / 1e-9 - 1) <= 2**-11  # float16's unit roundoff


def test_store_half_is_float16_with_its_range():
    t = torch.tensor([1e-6, 7e4, 0.1], dtype=torch.float64)
    got = hr.store_half(t)
    assert got[0].item() == 17 * 2.0**-24  # float16 subnormal spacing 2^-24
    assert math.isinf(got[1].item())
    assert got[2].item() == 0.0999755859375


def test_without_rounding_equals_the_float_reference_and_its_autograd():
    x, w, b = _problem(2, 70, 16, 3, 4)
    leaves = [t.clone().requires_grad_(True) for t in (x, *w, *b)]
    ref = [t.clone().requires_grad_(True) for t in (x, *w, *b)]
    y = hr.pe_mlp(leaves[0], leaves[1:5], leaves[5:], 4, rounding=False)
    yr = batched_mlp(ref[0], ref[1:5], ref[5:], 4)
    assert _rel(y, yr) < 1e-14
    g = torch.randn(yr.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for a, c in zip(torch.autograd.grad(y, leaves, g), torch.autograd.grad(yr, ref, g), strict=True):
        assert _rel(a, c) < 1e-12


def _numpy_half_network(x, w, b, n_freqs, grad_y):
    """The rounding rules written out with numpy float16 casts, for a depth-1 network (B, N small)."""
    # float32 values to float16 (the kernel's conversions); all values here are in float16's range
    f16 = lambda a: a.astype(np.float32).astype(np.float16).astype(np.float64)  # noqa: E731
    pe = positional_encoding(torch.from_numpy(x), n_freqs).numpy()
    a0 = f16(pe)
    w0, w1 = f16(w[0]), f16(w[1])
    z0 = np.einsum("nf,bof->bno", a0, w0) + b[0][:, None, :]
    a1 = f16(np.maximum(z0, 0))
    y = np.einsum("bnf,bof->bno", a1, w1) + b[1][:, None, :]
    gb1 = grad_y.sum(axis=1)
    dh1 = f16(grad_y)
    gw1 = np.einsum("bno,bnf->bof", dh1, a1)
    d1 = np.einsum("bno,bof->bnf", dh1, w1) * (a1 > 0)
    gb0 = d1.sum(axis=1)
    gw0 = np.einsum("bno,nf->bof", f16(d1), a0)
    return y, [gw0, gw1], [gb0, gb1]


def test_rounding_points_equal_a_hand_rounded_network():
    x, w, b = _problem(2, 5, 16, 1, 2, seed=3)
    g = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    params = [t.clone().requires_grad_(True) for t in (*w, *b)]
    y = hr.pe_mlp(x, params[:2], params[2:], 2)
    got = torch.autograd.grad(y, params, g)
    want_y, want_gw, want_gb = _numpy_half_network(
        x.numpy(), [t.numpy() for t in w], [t.numpy() for t in b], 2, g.numpy()
    )
    assert np.allclose(y.detach().numpy(), want_y, rtol=1e-13, atol=1e-15)
    for a, c in zip(got, [*want_gw, *want_gb], strict=True):
        assert np.allclose(a.numpy(), c, rtol=1e-12, atol=1e-15)
    # the roundings matter: the float reference differs by far more than the agreement above
    assert _rel(y.detach(), batched_mlp(x, w, b, 2)) > 1e-5


@pytest.mark.parametrize("weighting", [None, "pixel", "jet_pixel"])
def test_mse_step_equals_autograd_of_the_rounded_forward(weighting):
    batch, n = 3, 90
    x, w, b = _problem(batch, n, 32, 2, 10, seed=5)
    gen = torch.Generator().manual_seed(6)
    target = torch.rand(batch, n, 3, generator=gen, dtype=torch.float64)
    pw = {
        None: None,
        "pixel": torch.rand(n, generator=gen, dtype=torch.float64),
        "jet_pixel": torch.rand(batch, n, generator=gen, dtype=torch.float64),
    }[weighting]
    loss, gw, gb = hr.mse_step(x, w, b, target, 10, pixel_weight=pw)
    params = [t.clone().requires_grad_(True) for t in (*w, *b)]
    y = hr.pe_mlp(x, params[:3], params[3:], 10)
    sq = (y - target) ** 2
    if pw is not None:
        sq = sq * (pw[None, :, None] if pw.dim() == 1 else pw[:, :, None])
    want_loss = sq.sum(dim=(1, 2)) / (3 * n)
    want = torch.autograd.grad(want_loss.sum(), params)
    assert _rel(loss, want_loss.detach()) < 1e-13
    for a, c in zip([*gw, *gb], want, strict=True):
        assert _rel(a, c) < 1e-12


def test_per_jet_coordinates_equal_one_jet_at_a_time():
    batch, n = 3, 41
    _, w, b = _problem(batch, 1, 16, 2, 6, seed=7)
    x = torch.rand(batch, n, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64) * 2 - 1
    params = [t.clone().requires_grad_(True) for t in (*w, *b)]
    y = hr.pe_mlp(x, params[:3], params[3:], 6)
    g = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    got = torch.autograd.grad(y, params, g)
    for j in range(batch):
        one = [t[j : j + 1].clone().requires_grad_(True) for t in (*w, *b)]
        yj = hr.pe_mlp(x[j], one[:3], one[3:], 6)
        assert torch.equal(yj.detach(), y[j : j + 1].detach())
        for a, c in zip(got, torch.autograd.grad(yj, one, g[j : j + 1]), strict=True):
            assert _rel(a[j : j + 1], c) < 1e-13
    with pytest.raises(RuntimeError, match="per-jet coordinates"):
        xg = x.clone().requires_grad_(True)
        hr.pe_mlp(xg, w, b, 6).sum().backward()


def test_float32_agrees_with_float64_up_to_accumulation():
    x, w, b = _problem(2, 300, 64, 3, 10, seed=10, dtype=torch.float32)  # float32 inputs, as the kernel's
    x64, w64, b64 = x.double(), [t.double() for t in w], [t.double() for t in b]
    y32, y64 = hr.pe_mlp(x, w, b, 10), hr.pe_mlp(x64, w64, b64, 10)
    assert y32.dtype == torch.float32
    # float32 sums move an activation across a float16 rounding boundary now and then: far below
    # the float16 design's own error against the float reference (~2e-4 here)
    design = _rel(y64, batched_mlp(x64, w64, b64, 10))
    assert _rel(y32.double(), y64) < 0.1 * design
