"""The wgmma probe (csrc/cuda/wgmma_probe.cu): the operand layouts of a wgmma (sm_90a) kernel,
checked on the hardware against float64 products. The same kernel runs in the CPU emulator in every
`make test` (csrc/tests/emu/test_emu_wgmma.cpp); here an H100/H200 settles whether the emulator's
reading of wgmma, stmatrix and the matrix descriptors is the hardware's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_wgmma_header_is_what_its_generator_writes():
    done = subprocess.run(
        [sys.executable, str(ROOT / "csrc" / "tools" / "gen_wgmma.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    assert torch.isfinite(got).all()
    return float((got.double() - want).abs().max() / want.abs().max())


@pytest.mark.gpu
@pytest.mark.parametrize("n", [8, 56, 64, 72])
def test_wgmma_probe_matches_float64(n):
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("wgmma (sm_90a) needs an H100/H200")
    import inr_fast._C  # noqa: F401  (registers the operators)

    gen = torch.Generator().manual_seed(n)

    def rand(*shape):
        return (2 * torch.rand(*shape, generator=gen) - 1).half()

    x, w1, w2, p, q = rand(64, 64), rand(64, 64), rand(n, 64), rand(64, 64), rand(64, n)
    y, g = torch.ops.inr_fast.wgmma_probe(x.cuda(), w1.cuda(), w2.cuda(), p.cuda(), q.cuda())
    y1 = (x.double() @ w1.double().T).float().half().double()  # the kernel rounds its float32 sums
    want_y = y1 @ w2.double().T
    want_g = p.double().T @ q.double()
    # A wrong layout, descriptor or transpose gives errors of order 1; float32 accumulation ~1e-6
    # (the first product's rounding to float16 may fall the other way: 1e-3 on y).
    assert _rel_err(g.cpu(), want_g) < 1e-4
    assert _rel_err(y.cpu(), want_y) < 1e-3


@pytest.mark.gpu
def test_wgmma_kernel_agrees_with_the_mma_sync_kernel(monkeypatch):
    """The MSE step at the wgmma kernel's shape (W = 64, D = 3, L = 10) with the wgmma kernel (a 9.0a
    build on an H100/H200) and with it turned off: both are checked against the references by
    tests/test_ops.py; here against each other, within what their float16 roundings allow (the same
    roundings, different float32 summation orders: in the emulator's replica of this case they are
    9.6e-5 and 6.9e-5 from the float16 reference, so at most 1.7e-4 apart; 3e-4 leaves room for
    the hardware's own summation order), and not bitwise equal (which would mean the wgmma kernel
    did not run)."""
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("wgmma (sm_90a) needs an H100/H200")
    from inr_fast import ops
    from inr_fast.model.reference import init_params

    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(15625, 2, generator=gen) * 2 - 1).cuda()
    w, b = init_params(4, 10, 64, 3, generator=gen, device="cuda")
    target = torch.rand(4, 15625, 3, generator=gen).cuda()
    monkeypatch.delenv("INR_FAST_WGMMA", raising=False)
    loss_wg, gw_wg, gb_wg = ops.mse_step(x, w, b, target, 10)
    monkeypatch.setenv("INR_FAST_WGMMA", "0")
    loss_mma, gw_mma, gb_mma = ops.mse_step(x, w, b, target, 10)
    assert os.environ["INR_FAST_WGMMA"] == "0"
    pairs = list(zip([loss_wg, *gw_wg, *gb_wg], [loss_mma, *gw_mma, *gb_mma], strict=True))
    for got, want in pairs:
        err = float((got.double() - want.double()).norm() / want.double().norm())
        assert err < 3e-4, err
    assert not all(torch.equal(a, c) for a, c in pairs)
