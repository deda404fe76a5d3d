"""The batched AdamW, cosine schedule and per-jet loss scaling against torch.optim / GradScaler."""

from __future__ import annotations

import pytest
import torch

from inr_fast.train.optim import adamw_update, cosine_lr, loss_scale_update

pytestmark = pytest.mark.usefixtures("one_thread")


def test_batched_adamw_equals_torch_adamw_per_jet_with_a_mask():
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, generator=g)]
    ref = [[p[b].clone().requires_grad_(True) for p in params] for b in range(3)]
    opts = [torch.optim.AdamW(r, lr=0.1, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.3) for r in ref]
    mine = [p.clone() for p in params]
    m = [torch.zeros_like(p) for p in mine]
    v = [torch.zeros_like(p) for p in mine]
    steps = torch.zeros(3, dtype=torch.float64)
    for it in range(6):
        grads = [torch.randn(p.shape, generator=g) for p in params]
        update = torch.tensor([True, it % 2 == 0, it != 3])  # jet 1 skips odd steps, jet 2 skips step 3
        steps += update.double()
        adamw_update(mine, grads, m, v, steps.clamp(min=1), 0.1, (0.8, 0.99), 1e-6, 0.3, update)
        for b in range(3):
            if update[b]:
                for r, gr in zip(ref[b], grads, strict=True):
                    r.grad = gr[b].clone()
                opts[b].step()
    for b in range(3):
        for p, r in zip(mine, ref[b], strict=True):
            torch.testing.assert_close(p[b], r.detach(), rtol=1e-6, atol=1e-7)


def test_cosine_lr_equals_cosine_annealing_lr():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=50, eta_min=0.01)
    for step in range(50):
        assert cosine_lr(step, 0.3, 50, 0.01) == pytest.approx(
            opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15
        )
        opt.step()
        sched.step()
    assert cosine_lr(80, 0.3, 50, 0.01) == pytest.approx(0.01)


def test_loss_scale_follows_grad_scaler_per_jet():
    scale, good = torch.tensor([8.0, 8.0]), torch.tensor([0, 0])
    history = []
    for ok in ([True, False], [True, True], [True, True], [False, True]):
        scale, good = loss_scale_update(scale, good, torch.tensor(ok), growth_interval=2)
        history.append(scale.tolist())
    assert history == [[8.0, 4.0], [16.0, 4.0], [16.0, 8.0], [8.0, 8.0]]
