"""The training loop: B networks trained together, each on its own jet, with per-jet early stopping.

Invariants:
- Jet ``i``'s initial parameters depend only on ``(seed, i)`` (:func:`jet_seed`), never on which other
  jets share its batch; all per-jet arithmetic is independent across the batch (per-jet loss, moments,
  step counts, loss scale), so a jet trained in a batch equals the same jet trained alone.
- The loop calls the model only through ``forward_fn(x (N, 2), weights, biases) -> (B, N, 3)``
  (:func:`inr_fast.train.backend.get_forward`); with a fused loss-and-gradient step
  (:func:`inr_fast.train.backend.get_loss_grad`), every step whose gradient needs no forward pass of
  the checks takes loss and gradients from one call instead of forward + autograd.
- Every check, and every parameter set a jet keeps, is the network as it will be stored
  (``param_dtype``): float16-rounded where asked, output biases re-solved for exact channel totals.
- A jet whose loss goes non-finite leaves the batch (the caller retries it in float32).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from inr_fast.data.normalise import subset_normaliser
from inr_fast.layout import IMAGE_SIZE, N_CHANNELS
from inr_fast.metrics.levels import levels_met
from inr_fast.model.reference import init_spec_params
from inr_fast.model.spec import ModelSpec
from inr_fast.model.support import Decoding, decode, decode_sparse
from inr_fast.train.backend import ForwardFn, LossGradFn
from inr_fast.train.checks import match_channel_sums, psnr_rel_l2, targets_met
from inr_fast.train.config import FitConfig
from inr_fast.train.optim import BatchedAdamW, LossScaler, cosine_lr
from inr_fast.train.sampling import PixelSampler, SupportSampler, pixel_emphasis, weighted_mse

# monitor(step, batch positions (k,), reconstructions (k, N, 3)) -> (k,) bool "stop" or None
Monitor = Callable[[int, np.ndarray, torch.Tensor], "np.ndarray | None"]


def jet_seed(seed: int, index: int) -> int:
    """The RNG seed of jet ``index`` in a run with ``seed``: a hash of both, in [0, 2^63)."""
    digest = hashlib.blake2b(f"inr_fast:{int(seed)}:{int(index)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def init_jets(spec: ModelSpec, seeds: Sequence[int], device: torch.device | str = "cpu"):
    """Initial parameters of len(seeds) jets, jet b drawn from a CPU generator seeded with seeds[b]
    (so independent of the batch): (weights, biases), weights[l] (B, fan_out, fan_in)."""
    per_jet = [init_spec_params(spec, 1, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    weights = [torch.cat([p[0][layer] for p in per_jet]).to(device) for layer in range(spec.depth + 1)]
    biases = [torch.cat([p[1][layer] for p in per_jet]).to(device) for layer in range(spec.depth + 1)]
    return weights, biases


@dataclass
class BatchOutcome:
    """What :func:`train_batch` returns, per jet of the batch (B,): final parameters on the CPU,
    steps taken, whether the targets were met, whether the jet went non-finite, and histories
    (B, max_steps) float32 with NaN where not recorded."""

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    n_steps: np.ndarray
    reached: np.ndarray
    nonfinite: np.ndarray
    loss_history: np.ndarray
    psnr_history: np.ndarray
    rel_l2_history: np.ndarray


class ActiveBatch:
    """The jets still training and all their per-jet state, aligned on one batch axis (k,).

    ``jets``: positions in the original batch; ``params``: weights then biases (k, ...); the optimiser
    and loss-scaler state; the jets' images (GeV) and normalised targets (k, N, 3), pixel emphasis
    (k, N) or None, and their normaliser. :meth:`keep` trims every piece at once when jets leave.
    """

    def __init__(
        self,
        images: torch.Tensor,
        norm,
        seeds: Sequence[int],
        cfg: FitConfig,
        loss_scaling: bool,
        support: torch.Tensor | None = None,
    ):
        device = images.device
        weights, biases = init_jets(cfg.model, seeds, device)
        self.n_weights = len(weights)
        self.params = weights + biases
        self.jets = list(range(len(seeds)))
        self.index = torch.arange(len(seeds), device=device)  # ``jets`` as a tensor, for histories
        self.optimiser = BatchedAdamW(self.params, cfg.betas, cfg.eps, cfg.weight_decay)
        self.scaler = LossScaler(len(seeds), device, enabled=loss_scaling)
        self.images = images
        self.target = norm.forward(images).to(torch.float32)
        self.emphasis = None if cfg.bright_weight == 0 else pixel_emphasis(images, cfg.bright_weight)
        self.batch_norm = norm
        self.norm = norm
        self.support = support  # (k, N, 3) bool: decode through it (FitConfig.support), or None

    def __len__(self) -> int:
        return len(self.jets)

    def split(self, params: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(weights, biases) of a weights-then-biases list."""
        return list(params[: self.n_weights]), list(params[self.n_weights :])

    def keep(self, keep: Sequence[int]) -> None:
        """Keep only the jets at positions ``keep`` (of this batch), in that order."""
        k = torch.tensor(list(keep), device=self.index.device)
        self.params = [p[k] for p in self.params]
        self.optimiser.subset(k)
        self.scaler.subset(k)
        self.index = self.index[k]
        self.images, self.target = self.images[k], self.target[k]
        self.emphasis = None if self.emphasis is None else self.emphasis[k]
        self.support = None if self.support is None else self.support[k]
        self.jets = [self.jets[i] for i in keep]
        self.norm = subset_normaliser(self.batch_norm, self.jets)


class _Record:
    """Per-jet results of the whole batch: histories, and what each jet keeps when it leaves."""

    def __init__(self, n_jets: int, n_params: int, max_steps: int, device: torch.device):
        self.history = torch.full((3, n_jets, max_steps), math.nan, dtype=torch.float32, device=device)
        self.final: list[list[torch.Tensor | None]] = [[None] * n_jets for _ in range(n_params)]
        self.n_steps = np.full(n_jets, max_steps, dtype=np.int64)
        self.reached = np.zeros(n_jets, dtype=bool)
        self.nonfinite = np.zeros(n_jets, dtype=bool)

    def retire(
        self,
        batch: ActiveBatch,
        positions: Sequence[int],
        step: int,
        why: str,
        params: Sequence[torch.Tensor],
        shift: torch.Tensor | None = None,
    ) -> None:
        """Store the parameters of the jets at batch ``positions`` (with the sum-correction ``shift``
        (k, 3) folded into the output bias) and why they stopped: reached, nonfinite or max_steps."""
        for pos in positions:
            jet = batch.jets[pos]
            for i, p in enumerate(params):
                self.final[i][jet] = p[pos].detach().to("cpu", copy=True)
            if shift is not None:
                self.final[-1][jet] = (self.final[-1][jet].double() + shift[pos].cpu()).to(
                    self.final[-1][jet].dtype
                )
            self.n_steps[jet] = step
            self.reached[jet] |= why == "reached"
            self.nonfinite[jet] |= why == "nonfinite"

    def outcome(self, n_weights: int) -> BatchOutcome:
        h = self.history.cpu().numpy()
        stacks = [torch.stack(f) for f in self.final]
        return BatchOutcome(
            weights=stacks[:n_weights],
            biases=stacks[n_weights:],
            n_steps=self.n_steps,
            reached=self.reached,
            nonfinite=self.nonfinite,
            loss_history=h[0],
            psnr_history=h[1],
            rel_l2_history=h[2],
        )


def train_batch(
    images: torch.Tensor,
    norm,
    seeds: Sequence[int],
    cfg: FitConfig,
    coords: torch.Tensor,
    forward_fn: ForwardFn,
    amp_dtype: torch.dtype | None,
    on_step: Callable[[int, int], None] | None = None,
    loss_grad_fn: LossGradFn | None = None,
    monitor: Monitor | None = None,
    support: torch.Tensor | None = None,
    decoding: Decoding | None = None,
    levels: np.ndarray | None = None,
) -> BatchOutcome:
    """Train B networks together, each on its own jet, from their per-jet initialisations.

    images (B, N, 3): the original (GeV) pixel values on the training device, in the order of
    ``coords`` (N, 2); ``norm``: the B-jet normaliser; ``seeds`` (B,): per-jet RNG seeds.
    Each step: forward of the active jets (autocast to ``amp_dtype`` if given), per-jet MSE on the
    normalised values (mean over pixels and channels, pixels weighted by ``cfg.bright_weight``; with
    ``cfg.empty_samples``, on a :class:`~inr_fast.train.sampling.PixelSampler` subset), gradients of
    the (loss-scaled) sum, which are per-jet gradients because the networks are independent, a masked
    batched AdamW step. Every ``cfg.check_every`` steps (and before the last), psnr/rel_l2 on the
    original scale are recorded over every pixel, for the network as it will be stored
    (``cfg.param_dtype``); jets that meet the targets, or whose loss is non-finite, leave the batch
    with the parameters of that check.
    ``loss_grad_fn`` (float32 only): on steps whose gradient needs no forward pass of the checks, loss
    and gradients come from it in one call instead of ``forward_fn`` + autograd.
    ``on_step(steps done, jets still training)``: called after every step (progress displays).
    ``monitor(step, positions, recon)``: called on check steps with the batch positions (k,) of the
    active jets and their reconstructions (k, N, 3) on the original scale; it may return a (k,) bool
    array of jets that should stop now (counted as having reached their target).
    ``support`` (B, N, 3) bool and ``decoding`` (with ``cfg.support``): every reconstruction is decoded
    through the jets' supports (:func:`inr_fast.model.support.decode`), the sum correction solves the
    totals of the decoded images, and each step trains on the support's pixels only.
    ``levels`` (3,): the zero-suppression levels a ``Q2p`` target judges by (the run's).
    """
    if cfg.support and (support is None or decoding is None):
        raise ValueError("FitConfig.support needs the jets' support masks and a Decoding")
    batch = ActiveBatch(
        images, norm, seeds, cfg, amp_dtype == torch.float16, support if cfg.support else None
    )
    record = _Record(len(seeds), len(batch.params), cfg.max_steps, images.device)
    sampler = None
    if cfg.support:
        sampler = SupportSampler(batch.support, batch.emphasis)
    elif cfg.empty_samples is not None:
        sampler = PixelSampler(images, cfg.empty_samples, seeds, batch.emphasis)
    rounded = cfg.param_dtype == "float16"
    zs = None if decoding is None else decoding.tensor_zs(images.device)
    towers = decoding is not None and decoding.towers

    def to_gev(values: torch.Tensor) -> torch.Tensor:
        """Network outputs (k, N, 3) of the active jets -> their reconstructions in GeV (decoded
        through the supports when the fit uses them)."""
        out = batch.norm.inverse(values)
        return out if batch.support is None else decode(out, batch.support, zs, towers)

    def to_gev_at(values: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """:func:`to_gev` at the pixels ``idx`` (k, M) of the active jets (support mode)."""
        return decode_sparse(batch.norm.inverse(values), idx, valid, batch.support, zs, towers)

    def stored(ps: list[torch.Tensor]) -> list[torch.Tensor]:
        """The parameters as the run will store them (float16-rounded except the output biases)."""
        return [p.half().float() for p in ps[:-1]] + [ps[-1]] if rounded else ps

    def objective(x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, fused: bool):
        """The training loss of the active jets on pixels x ((N, 2) or per jet (k, M, 2)) with pixel
        weights: (loss (k,), gradients or None, autograd leaves or None, prediction or None). With
        ``fused`` and a fused step, loss and gradients come from one kernel call; otherwise forward
        (autocast to ``amp_dtype``) with autograd leaves, the gradients taken later."""
        if fused and loss_grad_fn is not None:
            with torch.no_grad():
                value, g_w, g_b = loss_grad_fn(x, *batch.split(batch.params), target, weight)
            return value, g_w + g_b, None, None
        leaves = [p.detach().requires_grad_(True) for p in batch.params]
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            y = forward_fn(x, *batch.split(leaves))
        return weighted_mse(y, target, weight), None, leaves, y

    for step in range(cfg.max_steps):
        lr = cosine_lr(step, cfg.lr, cfg.t_max, cfg.eta_min)
        check = (step % cfg.check_every == 0) or step == cfg.max_steps - 1
        checked = None
        sparse = None  # support mode: (pixel indices (k, M), valid (k, M)) the checks are evaluated at
        if batch.support is not None:  # the supports' pixels, for the gradient and the checks alike
            idx, pix_w = sampler.draw(batch.jets)
            sub_target = batch.target.gather(1, idx.unsqueeze(-1).expand(-1, -1, batch.target.shape[-1]))
            if check:
                with torch.no_grad():
                    checked = stored(batch.params)
                    pred = forward_fn(coords[idx], *batch.split(checked))
                    loss = weighted_mse(pred, sub_target, pix_w)
                    sparse = (idx, pix_w > 0)
            grad_loss, grads, leaves, _ = objective(coords[idx], sub_target, pix_w, fused=True)
            if not check:
                loss = grad_loss.detach()
        elif sampler is not None:  # a pixel subset per jet for the gradient; every pixel for the checks
            if check:
                with torch.no_grad():
                    checked = stored(batch.params)
                    pred = forward_fn(coords, *batch.split(checked))
                    loss = weighted_mse(pred, batch.target, batch.emphasis)
            idx, pix_w = sampler.draw(batch.jets)
            sub_target = batch.target.gather(1, idx.unsqueeze(-1).expand(-1, -1, batch.target.shape[-1]))
            grad_loss, grads, leaves, _ = objective(coords[idx], sub_target, pix_w, fused=True)
            if not check:
                loss = grad_loss.detach()
        else:  # every pixel; check steps need the forward pass (autograd path)
            grad_loss, grads, leaves, pred = objective(coords, batch.target, batch.emphasis, fused=not check)
            loss = grad_loss.detach()
        record.history[0, batch.index, step] = loss.detach()

        done: list[int] = []
        if check:
            with torch.no_grad():
                if checked is None:  # pred came from the parameters as trained
                    checked = stored(batch.params)
                    if rounded:  # judge (and keep) the network as it will be stored
                        pred = forward_fn(coords, *batch.split(checked))
                out_vals = pred.detach().float()
                gev = to_gev if sparse is None else (lambda v, sp=sparse: to_gev_at(v, *sp))
                shift = None
                if cfg.sum_correction:
                    shift = match_channel_sums(out_vals, gev, batch.images.double().sum(dim=1))
                    out_vals = (out_vals.double() + shift.unsqueeze(1)).float()
                recon = gev(out_vals)
                if sparse is not None:  # zero off the supports, by construction
                    full = torch.zeros_like(batch.images, dtype=recon.dtype)
                    recon = full.scatter(1, sparse[0].unsqueeze(-1).expand(-1, -1, recon.shape[-1]), recon)
                psnr, rel = psnr_rel_l2(recon, batch.images)
            record.history[1, batch.index, step] = psnr.float()
            record.history[2, batch.index, step] = rel.float()
            finite = torch.isfinite(loss).cpu().numpy()
            met = targets_met(psnr, rel, cfg).cpu().numpy()
            if cfg.target_level is not None and met.any():
                sel = np.flatnonzero(met)
                shape = (-1, IMAGE_SIZE, IMAGE_SIZE, N_CHANNELS)
                x_hat, x = (
                    recon[sel].double().cpu().reshape(shape),
                    batch.images[sel].double().cpu().reshape(shape),
                )
                met[sel] &= levels_met(x_hat, x, (cfg.target_level,), rel[sel], zs=levels)[cfg.target_level]
            if monitor is not None:
                stop = monitor(step, np.asarray(batch.jets, dtype=np.int64), recon)
                if stop is not None:
                    met = met | np.asarray(stop, dtype=bool)
            bad = [int(i) for i in np.flatnonzero(~finite)]
            good = [int(i) for i in np.flatnonzero(met & finite)]
            record.retire(batch, bad, step, "nonfinite", batch.params)
            record.retire(batch, good, step, "reached", checked, shift)
            done = bad + good

        if grads is None:
            grads = torch.autograd.grad((grad_loss * batch.scaler.scale).sum(), leaves)
        with torch.no_grad():
            grads, ok = batch.scaler.unscale(grads)
            batch.optimiser.step(batch.params, grads, lr, ok)
            batch.scaler.update(ok)

        if on_step is not None:
            on_step(step + 1, len(batch))
        if done:
            gone = set(done)
            keep = [i for i in range(len(batch)) if i not in gone]
            if not keep:
                batch.jets = []
                break
            batch.keep(keep)

    # jets still active ran all steps: their parameters after the last update, as stored
    if batch.jets:
        with torch.no_grad():
            finite = torch.stack([torch.isfinite(p).flatten(1).all(dim=1) for p in batch.params]).all(dim=0)
        finite = finite.cpu().numpy()
        shift = None
        checked = stored(batch.params)
        if cfg.sum_correction:
            with torch.no_grad():
                if batch.support is None:
                    out_vals = forward_fn(coords, *batch.split(checked)).float()
                    gev = to_gev
                else:
                    idx, pix_w = sampler.draw(batch.jets)
                    out_vals = forward_fn(coords[idx], *batch.split(checked)).float()
                    gev = lambda v: to_gev_at(v, idx, pix_w > 0)  # noqa: E731
                shift = match_channel_sums(out_vals, gev, batch.images.double().sum(dim=1))
        ok_pos = [i for i in range(len(batch)) if finite[i]]
        record.retire(batch, ok_pos, cfg.max_steps, "max_steps", checked, shift)
        record.retire(
            batch, [i for i in range(len(batch)) if not finite[i]], cfg.max_steps, "nonfinite", batch.params
        )
    return record.outcome(batch.n_weights)
