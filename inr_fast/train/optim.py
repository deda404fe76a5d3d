"""The optimiser side of training B independent networks at once: the cosine schedule, a batched AdamW
with per-jet moments and step counts, and per-jet dynamic loss scaling for fp16.

The pure update rules (:func:`cosine_lr`, :func:`adamw_update`, :func:`loss_scale_update`) are
torch.optim.AdamW's and torch.amp.GradScaler's arithmetic, per jet; :class:`BatchedAdamW` and
:class:`LossScaler` hold their state for the jets still training, with ``subset(keep)`` to drop the
jets that left the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def cosine_lr(step: int, lr: float, t_max: int, eta_min: float = 0.0) -> float:
    """Cosine annealing (CosineAnnealingLR's closed form), held at eta_min after t_max."""
    t = min(step, t_max)
    return eta_min + (lr - eta_min) * (1.0 + math.cos(math.pi * t / t_max)) / 2.0


def adamw_update(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avg: Sequence[torch.Tensor],
    exp_avg_sq: Sequence[torch.Tensor],
    step: torch.Tensor,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    update: torch.Tensor | None = None,
) -> None:
    """One AdamW step (torch.optim.AdamW's arithmetic) on B jets at once, in place.

    params, grads, moments: tensors (B, ...); step (B,) float64: each jet's step count AFTER this step
    (jets with ``update`` False are left untouched, including their moments); update (B,) bool or None.
    """
    beta1, beta2 = betas
    bc1 = 1.0 - beta1**step  # (B,) float64
    bc2_sqrt = torch.sqrt(1.0 - beta2**step)
    for p, g, m, v in zip(params, grads, exp_avg, exp_avg_sq, strict=True):
        shape = (p.shape[0],) + (1,) * (p.dim() - 1)
        step_size = (lr / bc1).to(p.dtype).reshape(shape)
        denom_scale = bc2_sqrt.to(p.dtype).reshape(shape)
        new_p = p * (1.0 - lr * weight_decay)
        new_m = m.lerp(g, 1.0 - beta1)
        new_v = (v * beta2).addcmul_(g, g, value=1.0 - beta2)
        denom = (new_v.sqrt() / denom_scale).add_(eps)
        new_p = new_p - step_size * new_m / denom
        if update is None:
            p.copy_(new_p)
            m.copy_(new_m)
            v.copy_(new_v)
        else:
            mask = update.reshape(shape)
            p.copy_(torch.where(mask, new_p, p))
            m.copy_(torch.where(mask, new_m, m))
            v.copy_(torch.where(mask, new_v, v))


def loss_scale_update(
    scale: torch.Tensor, good_steps: torch.Tensor, ok: torch.Tensor, growth_interval: int = 2000
) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.amp.GradScaler's rule, per jet: scale (B,) halves where the gradients overflowed (ok False)
    and doubles after ``growth_interval`` consecutive good steps; good_steps (B,) counts them."""
    good_steps = torch.where(ok, good_steps + 1, torch.zeros_like(good_steps))
    grow = good_steps >= growth_interval
    scale = torch.where(ok, scale, scale * 0.5)
    scale = torch.where(grow, scale * 2.0, scale)
    return scale, torch.where(grow, torch.zeros_like(good_steps), good_steps)


class BatchedAdamW:
    """AdamW state of B jets' parameters (moments and per-jet step counts), updated in place.

    ``step(params, grads, lr, ok)``: one update of the jets whose ``ok`` (B,) bool is True (None: all),
    whose step counts then advance; ``subset(keep)``: the state of the jets at positions ``keep``.
    """

    def __init__(
        self, params: Sequence[torch.Tensor], betas: tuple[float, float], eps: float, weight_decay: float
    ):
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.steps = torch.zeros(params[0].shape[0], dtype=torch.float64, device=params[0].device)

    def step(self, params, grads, lr: float, ok: torch.Tensor | None = None) -> None:
        self.steps += 1.0 if ok is None else ok.double()
        adamw_update(
            params, grads, self.exp_avg, self.exp_avg_sq, self.steps.clamp(min=1.0), lr,
            self.betas, self.eps, self.weight_decay, ok,
        )  # fmt: skip

    def subset(self, keep: torch.Tensor) -> None:
        self.exp_avg = [m[keep] for m in self.exp_avg]
        self.exp_avg_sq = [v[keep] for v in self.exp_avg_sq]
        self.steps = self.steps[keep]


class LossScaler:
    """Per-jet dynamic loss scaling (fp16 autocast) or none (``enabled`` False: scale 1, every step ok).

    ``unscale(grads)`` -> (grads / scale, ok (B,) bool: every gradient of the jet is finite);
    ``update(ok)`` applies :func:`loss_scale_update`; ``subset(keep)`` keeps the jets at ``keep``.
    """

    def __init__(self, n_jets: int, device: torch.device, enabled: bool, init_scale: float = 2.0**16):
        self.enabled = enabled
        self.scale = torch.full((n_jets,), init_scale if enabled else 1.0, device=device)
        self.good_steps = torch.zeros(n_jets, dtype=torch.int64, device=device)

    def unscale(self, grads: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        if not self.enabled:
            return list(grads), None
        ok = torch.ones(len(self.scale), dtype=torch.bool, device=self.scale.device)
        for g in grads:
            ok &= torch.isfinite(g).flatten(1).all(dim=1)
        return [g / self.scale.reshape((-1,) + (1,) * (g.dim() - 1)) for g in grads], ok

    def update(self, ok: torch.Tensor | None) -> None:
        if self.enabled:
            self.scale, self.good_steps = loss_scale_update(self.scale, self.good_steps, ok)

    def subset(self, keep: torch.Tensor) -> None:
        self.scale, self.good_steps = self.scale[keep], self.good_steps[keep]
