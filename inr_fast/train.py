"""The trainer: the seed recipe and faster presets, many jets at once, per-jet early stopping, resume.

Pure pieces (this order in the file): configuration (:class:`FitConfig`, the presets :data:`SEED`,
:data:`FAST`, :data:`COMPACT`), per-jet seeds, the cosine schedule, a batched AdamW over stacked (B, ...)
parameters with per-jet moments and step counts, per-jet loss scaling for fp16, the batched training
loop :func:`train_batch`, the Python API :func:`fit` -> :class:`FitResult`, and the ``inr-fast fit``
command (:class:`FitCommand`, :func:`run_fit`), which writes a run directory through
:mod:`inr_fast.store`.

Invariants:
- Jet ``i``'s initial parameters depend only on ``(seed, i)`` (:func:`jet_seed`), never on which other
  jets share its batch; all per-jet arithmetic is independent across the batch (per-jet loss, moments,
  step counts, loss scale), so a jet trained in a batch equals the same jet trained alone.
- The trainer calls the model only through ``forward_fn(x (N, 2), weights, biases) -> (B, N, 3)``
  (:func:`get_forward`): ``reference`` is :func:`inr_fast.reference.spec_forward`, ``fused`` is
  ``inr_fast.fused.pe_mlp``.
- With the ``fused`` backend on the CPU in float32 (no autocast), every step whose gradient needs no
  forward pass of the checks (all steps with pixel sampling) takes loss and gradients from one fused
  call (:func:`get_loss_grad`, ``inr_fast.fused.mse_step``) instead of forward + autograd: the same
  per-jet (pixel-weighted) loss and gradients.
- Every check, and every parameter set a jet keeps, is the network as it will be stored
  (``param_dtype``): float16-rounded where asked, output biases re-solved for exact channel totals.
- A jet whose loss or parameters become non-finite is retried from its initialisation in float32 (no
  autocast); if that fails too it is marked ``failed`` and its parameters are stored as zeros.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from inr_fast.encoding import positional_encoding
from inr_fast.errors import ConfigError, DataError, InrFastError
from inr_fast.layout import IMAGE_SIZE, N_CHANNELS
from inr_fast.reference import (
    PARAM_DTYPES,
    ModelSpec,
    batched_mlp,
    init_spec_params,
    mlp_on_features,
    param_count,
    spec_forward,
    stored_bytes_per_jet,
)
from inr_fast.solve import match_channel_sums

ForwardFn = Callable[[torch.Tensor, list[torch.Tensor], list[torch.Tensor]], torch.Tensor]
# monitor(step, jet ids or batch positions (k,), reconstructions (k, N, 3)) -> (k,) bool "stop" or None
Monitor = Callable[[int, np.ndarray, torch.Tensor], "np.ndarray | None"]
BatchMonitor = Monitor

BACKENDS = ("reference", "fused", "auto")
FUSED_WIDTHS = (16, 32, 64, 128)  # widths the fused kernels support
NORMALISATIONS = ("channel_standardiser", "asinh_standardiser", "per_jet_max", "identity")
TARGET_LEVELS = ("Q1", "Q2")
AMP_MODES = ("auto", "off", "fp16", "bf16")
KEEP = object()  # "not given" for arguments where None has a meaning

# ------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class FitConfig:
    """Everything that decides what a fit computes (the device does not, up to rounding).

    model: the network (:class:`inr_fast.reference.ModelSpec`).
    normalisation: ``channel_standardiser`` (global per-channel mean/std over the fitted jets, the seed's),
        ``asinh_standardiser`` (asinh(x / intensity_scale), then the global per-channel mean/std of
        those values: compresses the heavy tail), ``per_jet_max`` (each jet divided by its max |value|,
        zeros stay zero) or ``identity``.
    intensity_scale: the scale s (GeV) of ``asinh_standardiser`` (ignored by the others).
    lr, weight_decay, betas, eps: AdamW (PyTorch's decoupled weight decay), per-jet moments.
    max_steps: optimiser steps per jet at most; schedule_steps: T_max of the cosine annealing
        lr(t) = eta_min + (lr - eta_min) (1 + cos(pi min(t, T) / T)) / 2 (``None``: T = max_steps).
    amp: ``auto`` (fp16 autocast + per-jet dynamic loss scaling on CUDA, float32 on CPU), ``off``
        (float32), ``fp16`` (CUDA only), ``bf16`` (bf16 autocast, no scaling, CPU or CUDA).
    target_psnr (dB), target_rel_l2: per-jet early stopping, on the original (GeV) scale, checked
        every ``check_every`` steps; a jet stops when every given target is met. The metrics are
        also recorded every ``check_every`` steps, targets or not.
    target_level: ``Q1`` or ``Q2`` (DESIGN.md, :func:`inr_fast.metrics.quality_levels` on the original
        scale) as one more early-stopping target, checked every ``check_every`` steps (Q2 is cheap:
        rel_l2, channel totals, jet mass; Q1 computes SSIM).
    sum_correction: on every check step and after the last step, shift each jet's output bias per
        channel (:func:`inr_fast.solve.match_channel_sums`) so that the channel totals of the
        reconstruction equal the original's; the shift is stored in the parameters.
    batch_size: jets trained together (one run-directory chunk each); finished jets leave the batch.
    backend: ``reference`` (pure PyTorch), ``fused`` (the compiled kernels, pe_relu only) or ``auto``
        (:func:`resolve_backend`: ``fused`` on the CPU where the extension and model allow it, else
        ``reference``), resolved when a fit starts.
    empty_samples: ``None`` trains on every pixel every step. An integer k: each training step of a
        jet uses its non-empty pixels (any channel > 0) plus k of its empty pixels drawn uniformly at
        random (with replacement, from the jet's own generator: batch-independent), weighted so that
        the loss is an unbiased estimate of the full-image loss (:class:`PixelSampler`).
        Jet images are ~97 % empty, so a step costs a few percent of a full one. Checks (metrics,
        early stopping) always use every pixel. Any model and backend.
    bright_weight: lambda >= 0: the squared error of a non-empty pixel n is weighted by
        1 + lambda sqrt(E_n / E_max) (E_n its energy summed over channels, E_max the jet's brightest
        pixel's; empty pixels keep weight 1), so that the bright pixels, which the asinh transform
        compresses and which dominate rel_l2 and the jet mass in GeV, are fitted as closely as the
        faint ones. 0: the plain mean squared error.
    param_dtype: how a jet's parameters are stored: ``float32``, or ``float16`` (every weight and
        bias rounded to float16 after training except the 3 output biases, which stay float32 and are
        re-solved by the sum correction on the rounded network; reconstructions, metrics and the
        early-stopping levels of the stored result are those of the rounded network).
    """

    name: str = "custom"
    model: ModelSpec = field(default_factory=ModelSpec)
    normalisation: str = "channel_standardiser"
    lr: float = 1e-3
    weight_decay: float = 5e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_steps: int = 10_000
    schedule_steps: int | None = 10_000
    eta_min: float = 0.0
    amp: str = "auto"
    target_psnr: float | None = None
    target_rel_l2: float | None = None
    check_every: int = 10
    batch_size: int = 16
    backend: str = "reference"
    intensity_scale: float = 1.0
    target_level: str | None = None
    sum_correction: bool = False
    empty_samples: int | None = None
    param_dtype: str = "float32"
    bright_weight: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelSpec):
            raise ConfigError(f"FitConfig.model must be a ModelSpec, got {type(self.model).__name__}")
        if self.normalisation not in NORMALISATIONS:
            raise ConfigError(f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.target_level is not None and self.target_level not in TARGET_LEVELS:
            raise ConfigError(
                f"target_level must be one of {TARGET_LEVELS} or None, got {self.target_level!r}"
            )
        if not (isinstance(self.intensity_scale, int | float) and 0 < self.intensity_scale < math.inf):
            raise ConfigError(f"intensity_scale must be positive and finite, got {self.intensity_scale!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not (isinstance(self.bright_weight, int | float) and 0 <= self.bright_weight < math.inf):
            raise ConfigError(f"bright_weight must be >= 0 and finite, got {self.bright_weight!r}")
        if self.param_dtype not in PARAM_DTYPES:
            raise ConfigError(f"param_dtype must be one of {PARAM_DTYPES}, got {self.param_dtype!r}")
        if self.empty_samples is not None and (
            isinstance(self.empty_samples, bool)
            or not isinstance(self.empty_samples, int)
            or self.empty_samples < 1
        ):
            raise ConfigError(f"empty_samples must be a positive integer or None, got {self.empty_samples!r}")
        for name in ("max_steps", "check_every", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.schedule_steps is not None and (
            not isinstance(self.schedule_steps, int) or self.schedule_steps < 1
        ):
            raise ConfigError(
                f"schedule_steps must be a positive integer or None, got {self.schedule_steps!r}"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be positive and finite, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.target_rel_l2 is not None and not self.target_rel_l2 > 0:
            raise ConfigError(f"target_rel_l2 must be positive, got {self.target_rel_l2!r}")
        if self.backend == "fused" and self.model.kind != "pe_relu":
            raise ConfigError(f"backend 'fused' supports the pe_relu model only, not {self.model.kind!r}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))

    @property
    def t_max(self) -> int:
        return self.schedule_steps if self.schedule_steps is not None else self.max_steps

    @property
    def has_target(self) -> bool:
        return self.target_psnr is not None or self.target_rel_l2 is not None or self.target_level is not None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FitConfig:
        """Rebuild from :meth:`to_dict`; unknown keys are refused."""
        _refuse_unknown(cls, d, "fit config")
        d = dict(d)
        if isinstance(d.get("model"), dict):
            d["model"] = ModelSpec.from_dict(d["model"])
        return cls(**d)

    def with_overrides(self, **overrides) -> FitConfig:
        """A copy with fields replaced; ``None`` values are ignored; model fields (``width``, ``depth``,
        ``n_freqs``, ``kind``, ``omega0_first``, ``omega0_hidden``) may be given directly."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        model_keys = {f.name for f in fields(ModelSpec)}
        top_keys = {f.name for f in fields(FitConfig)}
        unknown = sorted(set(overrides) - model_keys - top_keys)
        if unknown:
            raise ConfigError(
                f"unknown fit option(s) {unknown}; known: {sorted(top_keys | model_keys - {'name'})}"
            )
        model_over = {k: overrides.pop(k) for k in list(overrides) if k in model_keys and k not in top_keys}
        model = replace(self.model, **model_over) if model_over else self.model
        if isinstance(overrides.get("model"), dict):
            overrides["model"] = ModelSpec.from_dict(overrides["model"])
        return replace(self, **{"model": model, **overrides})


def _refuse_unknown(cls, d: dict, what: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown {what} key(s) {unknown}; known keys: {sorted(known)}")


SEED = FitConfig(
    name="seed",
    model=ModelSpec(kind="pe_relu", n_freqs=10, width=256, depth=4),
    normalisation="channel_standardiser",
    lr=1e-3,
    weight_decay=5e-5,
    max_steps=10_000,
    schedule_steps=10_000,
    amp="auto",
    check_every=10,
    batch_size=8,
)
object.__setattr__(
    SEED,
    "__doc__",
    """The seed recipe (seed/000_9ba961bdf96842ea.txt) exactly.

Global per-channel mean/std normalisation (over the jets being fitted), all 125 x 125 pixel
coordinates every step (one image per batch: per-jet losses are independent), MSE over all pixels
and channels, AdamW(lr=1e-3, weight_decay=5e-5, betas=(0.9, 0.999), eps=1e-8), cosine annealing
over 10,000 steps, 10,000 steps. The seed does not say L, W, D: we use L = 10 frequencies (42 features)
and 4 hidden ReLU layers of 256 (nn.Linear default initialisation). AMP: fp16 autocast with dynamic
loss scaling (GradScaler's rule, per jet) on CUDA; on the CPU float32 (no autocast): bf16 autocast
on CPUs without AMX is slower than float32 here and coarser than the seed's fp16, and loss scaling
is not needed in float32. No early stopping unless a target is given.""",
)

FAST = FitConfig(
    name="fast",
    model=ModelSpec(kind="pe_relu", n_freqs=10, width=64, depth=3),
    normalisation="asinh_standardiser",
    intensity_scale=0.02,
    lr=1e-2,
    weight_decay=0.0,
    max_steps=3000,
    schedule_steps=None,
    amp="auto",
    target_level="Q2",
    sum_correction=True,
    check_every=20,
    batch_size=64,
    empty_samples=512,
    bright_weight=100.0,
    backend="auto",
)
object.__setattr__(
    FAST,
    "__doc__",
    """Best time to the physics level Q2 (BENCHMARKS.md). L = 10, 3 hidden layers of 64 (11,267
parameters, 45,068 bytes per jet in float32), trained on asinh(x / 0.02 GeV) standardised per
channel (linear standardisation stalls near rel_l2 0.1), AdamW lr 1e-2 without weight decay, cosine
over 3,000 steps. Each step sees a jet's non-empty pixels (~3 % of the image) plus 512 random empty
ones, weighted to an unbiased estimate of the full-image loss (``empty_samples``); non-empty pixels
weigh 1 + 100 sqrt(E / E_max) (``bright_weight``: the bright pixels that dominate rel_l2 and the mass
in GeV, which the asinh compresses). On every check (every 20 steps, all pixels) each channel's
output bias is shifted (Newton, :func:`inr_fast.solve.match_channel_sums`) so the channel totals in
GeV are exact (asinh alone biases them by 5-35 %), and a jet stops as soon as Q2 holds. Tuning runs
(32 jets of each bench set, fused backend, 2 CPU cores): 26/32 and 31/32 jets at Q2 without the
bright-pixel weight, 32/32 and 32/32 with it (lambda 30 to 1,000 all within 31-32/32).""",
)

COMPACT = FitConfig(
    name="compact",
    model=ModelSpec(kind="pe_relu", n_freqs=6, width=32, depth=2),
    normalisation="asinh_standardiser",
    intensity_scale=0.02,
    lr=1e-2,
    weight_decay=0.0,
    max_steps=8000,
    schedule_steps=None,
    amp="auto",
    target_level="Q2",
    sum_correction=True,
    check_every=20,
    batch_size=64,
    empty_samples=512,
    bright_weight=100.0,
    param_dtype="float16",
    backend="auto",
)
object.__setattr__(
    COMPACT,
    "__doc__",
    """Fewest bytes per jet at Q2: the ``fast`` recipe on a network of L = 6, 2 hidden layers of 32
(2,019 parameters) stored in float16 except the 3 output biases (4,044 bytes per jet, vs 187,500
for the float32 image), up to 8,000 steps (cosine over 8,000). Every check judges, and every
stopped jet keeps, the rounded network with its output biases re-solved so that the channel totals
stay exact: judging the unrounded network lost Q2 on 5 of 29 jets after rounding. Tuning runs (32
jets of each bench set): 32/32 and 32/32 at Q2 within 8,000 steps (24/32 within 5,000 steps
judged before rounding).""",
)

PRESETS: dict[str, FitConfig] = {"seed": SEED, "fast": FAST, "compact": COMPACT}


def get_preset(name: str | FitConfig) -> FitConfig:
    """A preset by name (or a FitConfig passed through)."""
    if isinstance(name, FitConfig):
        return name
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


# ------------------------------------------------------------------------------------------ pure maths


def jet_seed(seed: int, index: int) -> int:
    """The RNG seed of jet ``index`` in a run with ``seed``: a hash of both, in [0, 2^63)."""
    digest = hashlib.blake2b(f"inr_fast:{int(seed)}:{int(index)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def init_jets(spec: ModelSpec, seeds: Sequence[int], device: torch.device | str = "cpu"):
    """Initial parameters of len(seeds) jets, jet b drawn from a CPU generator seeded with seeds[b]
    (so independent of the batch): (weights, biases), weights[l] (B, fan_out, fan_in)."""
    per_jet = []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        per_jet.append(init_spec_params(spec, 1, generator=g))
    weights = [torch.cat([p[0][layer] for p in per_jet]).to(device) for layer in range(spec.depth + 1)]
    biases = [torch.cat([p[1][layer] for p in per_jet]).to(device) for layer in range(spec.depth + 1)]
    return weights, biases


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


def psnr_rel_l2(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-jet psnr = 10 log10(R^2 / MSE), R = max(x) - min(x) of the original, and rel_l2 = ||x^ - x|| /
    ||x||, over all pixels and channels; pred, target (B, N, 3) on the original scale -> two (B,).
    A perfect fit gives psnr +inf; an all-zero jet gives rel_l2 +inf unless the fit is exactly zero."""
    pred, target = pred.double(), target.double()
    err = pred - target
    mse = err.square().mean(dim=(1, 2))
    rng = target.amax(dim=(1, 2)) - target.amin(dim=(1, 2))
    psnr = 10.0 * torch.log10(rng.square() / mse)
    rel = err.flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1)
    psnr = torch.where(mse == 0, torch.full_like(psnr, math.inf), psnr)
    rel = torch.where(err.flatten(1).norm(dim=1) == 0, torch.zeros_like(rel), rel)
    return psnr.nan_to_num(nan=-math.inf), rel.nan_to_num(nan=math.inf)


def targets_met(psnr: torch.Tensor, rel_l2: torch.Tensor, cfg: FitConfig) -> torch.Tensor:
    """(B,) bool: every target of ``cfg`` that is set is met (False everywhere when none is set)."""
    met = torch.ones_like(psnr, dtype=torch.bool)
    if not cfg.has_target:
        return ~met
    if cfg.target_psnr is not None:
        met &= psnr >= cfg.target_psnr
    if cfg.target_rel_l2 is not None:
        met &= rel_l2 <= cfg.target_rel_l2
    return met


def level_met(
    recon: torch.Tensor, images: torch.Tensor, level: str, rel_l2: torch.Tensor | None = None
) -> np.ndarray:
    """(B,) bool: :func:`inr_fast.metrics.quality_levels` ``[level]`` of recon against images, both
    (B, N, 3) on the original scale in the pixel order of :func:`inr_fast.data.pixel_grid`
    (N = 125^2). For Q2 only rel_l2 (given, or computed), channel totals and jet mass are computed."""
    from inr_fast import observables
    from inr_fast.metrics import quality_levels

    shape = (-1, IMAGE_SIZE, IMAGE_SIZE, N_CHANNELS)
    x_hat, x = recon.detach().double().cpu().reshape(shape), images.detach().double().cpu().reshape(shape)
    if level != "Q2":  # Q1: SSIM only where the necessary psnr >= 55 dB holds
        from inr_fast.metrics import Q1_PSNR, psnr

        out = np.zeros(len(x), dtype=bool)
        cand = np.flatnonzero(np.asarray(psnr(x_hat, x)) >= Q1_PSNR)
        if cand.size:
            out[cand] = np.asarray(quality_levels(x_hat[cand], x[cand])[level], dtype=bool)
        return out
    if rel_l2 is None:
        rel_l2 = psnr_rel_l2(x_hat.flatten(1, 2), x.flatten(1, 2))[1]
    nan = np.full(len(x), np.nan)
    metrics = {
        "psnr": nan,
        "ssim": nan,
        "rel_l2": rel_l2.detach().double().cpu().numpy(),
        "jet_mass_rel_err": observables.jet_mass_rel_err(x_hat, x).numpy(),
    }
    return np.asarray(quality_levels(x_hat, x, metrics=metrics)["Q2"], dtype=bool)


# ------------------------------------------------------------------------------------------ devices, backends


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` without a GPU is a clear error."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda: no CUDA GPU is available to torch here; use --device cpu or auto"
            )
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"device must be auto, cpu or cuda, got {name!r}")


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None: float32, no autocast)."""
    if amp == "off":
        return None
    if amp == "auto":
        return torch.float16 if device.type == "cuda" else None
    if amp == "fp16":
        if device.type != "cuda":
            raise ConfigError("amp fp16 needs a CUDA device; on the CPU use amp 'off' or 'bf16'")
        return torch.float16
    return torch.bfloat16


def resolve_backend(backend: str, spec: ModelSpec, device: torch.device) -> str:
    """The concrete backend for ``backend`` (``auto`` resolved; others returned unchanged).

    ``auto`` is ``fused`` when the model is pe_relu of a fused width (:data:`FUSED_WIDTHS`), the
    compiled extension imports and the device is the CPU; otherwise ``reference``. On CUDA ``auto``
    stays ``reference`` until the CUDA kernels have passed ``make gpu-test`` on a GPU (BENCHMARKS.md,
    "GPU"); ``--backend fused`` uses them anyway."""
    if backend != "auto":
        return backend
    from inr_fast._ext import extension_available

    ok = spec.kind == "pe_relu" and spec.width in FUSED_WIDTHS and device.type == "cpu"
    return "fused" if ok and extension_available() else "reference"


def get_forward(spec: ModelSpec, backend: str) -> ForwardFn:
    """The model through one interface: ``forward(x (N, 2), weights, biases) -> (B, N, 3)``."""
    if backend == "reference":
        if spec.kind != "pe_relu":
            return lambda x, w, b: spec_forward(spec, x, w, b)
        return _CachedEncodingForward(spec.n_freqs)
    if backend == "fused":
        if spec.kind != "pe_relu":
            raise ConfigError(f"backend 'fused' supports the pe_relu model only, not {spec.kind!r}")
        try:
            from inr_fast import fused
        except ImportError as err:
            raise InrFastError(
                f"backend 'fused': the fused kernels are not available ({err}); use --backend reference"
            ) from None
        n_freqs = spec.n_freqs
        return lambda x, w, b: fused.pe_mlp(x, w, b, n_freqs)
    raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")


LossGradFn = Callable[
    [torch.Tensor, list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor | None],
    tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]],
]


def get_loss_grad(
    spec: ModelSpec, backend: str, device: torch.device, amp_dtype: torch.dtype | None
) -> LossGradFn | None:
    """The fused training step ``(x (N, 2) or (B, N, 2), weights, biases, target (B, N, 3), pixel_weight
    (B, N) or None) -> (loss (B,), grad_weights, grad_biases)`` (loss[b] = mean over pixels and
    channels of w (y - t)^2, gradients of loss.sum()), or None where the trainer keeps forward +
    autograd: other backends, autocast, and CUDA (whose fp16 path needs the per-jet loss scaling of
    the autograd step; the CUDA mse_step kernel is not wired in until it is measured on a GPU)."""
    if backend != "fused" or spec.kind != "pe_relu" or amp_dtype is not None or device.type != "cpu":
        return None
    from inr_fast import fused

    n_freqs = spec.n_freqs
    return lambda x, w, b, target, pixel_weight=None: fused.mse_step(x, w, b, target, n_freqs, pixel_weight)


class _CachedEncodingForward:
    """The reference PE + MLP (:func:`inr_fast.reference.batched_mlp`, same arithmetic), with the
    encoding of the fixed training coordinates computed once instead of every step."""

    def __init__(self, n_freqs: int):
        self.n_freqs = n_freqs
        self._key = None
        self._features = None

    def __call__(
        self, x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor]
    ) -> torch.Tensor:
        if x.requires_grad or x.dim() == 3:  # per-jet coordinates change every step: no cache
            return batched_mlp(x, weights, biases, self.n_freqs)
        key = (x.data_ptr(), tuple(x.shape), x.dtype, x.device, x._version)
        if key != self._key:
            self._features, self._key = positional_encoding(x, self.n_freqs), key
        return mlp_on_features(self._features, weights, biases)


def check_forward(forward_fn: ForwardFn, spec: ModelSpec, backend: str, device: torch.device) -> None:
    """Run the backend once on a tiny input so that a missing operator is reported before training."""
    from inr_fast._ext import ExtensionMissingError

    w, b = init_jets(spec, [0], device)
    x = torch.zeros(4, 2, device=device)
    try:
        with torch.no_grad():
            forward_fn(x, w, b)
    except (ExtensionMissingError, NotImplementedError) as err:
        raise InrFastError(f"backend {backend!r}: {err}") from None


# ------------------------------------------------------------------------------------------ normalisers


def fit_normaliser(
    kind: str, images=None, jetfile=None, indices=None, chunk_size: int = 64, intensity_scale: float = 1.0
):
    """The run-wide normaliser of ``kind`` (None for per-jet kinds, whose scales live with each jet):
    ``channel_standardiser`` is fitted on ``images`` (k, 125, 125, 3) or streamed from ``jetfile``;
    ``asinh_standardiser`` is ``Compose([IntensityTransform("asinh", intensity_scale), s])`` with s the
    ChannelStandardiser of the transformed values, fitted the same way."""
    from inr_fast.data import ChannelStandardiser, Compose, Identity, IntensityTransform, channel_moments

    if kind == "asinh_standardiser":
        pre = IntensityTransform("asinh", intensity_scale)
        if images is not None:
            std = ChannelStandardiser.from_moments(channel_moments(images, pre=pre))
        else:
            std = ChannelStandardiser.fit(jetfile, indices, chunk_size, pre=pre)
        return Compose([pre, std])
    if kind == "channel_standardiser":
        if images is not None:
            return ChannelStandardiser.from_images(images)
        return ChannelStandardiser.fit(jetfile, indices, chunk_size)
    if kind == "identity":
        return Identity()
    return None


def batch_normaliser(kind: str, global_norm, images: np.ndarray):
    """The normaliser of one batch of jets (B, ..., 3): the run-wide one, or fitted per jet."""
    from inr_fast.data import PerJetMaxScaler

    if kind == "per_jet_max":
        return PerJetMaxScaler.fit(images, mode="jet")
    if global_norm is None:
        raise ConfigError(f"normalisation {kind!r} needs a fitted run-wide normaliser")
    return global_norm


def subset_normaliser(norm, positions: Sequence[int]):
    """The normaliser of the jets at ``positions`` of the batch ``norm`` was fitted on."""
    from inr_fast.data import Compose

    if isinstance(norm, Compose):
        return Compose([subset_normaliser(s, positions) for s in norm.steps])
    if getattr(norm, "n_jets", None) is not None and hasattr(norm, "subset"):
        return norm.subset(np.asarray(positions, dtype=np.int64))
    return norm


def jet_scales(norm) -> np.ndarray | None:
    """Per-jet scales of a PerJetMaxScaler (B,), or None for run-wide normalisers."""
    return np.asarray(norm.scales, dtype=np.float64) if getattr(norm, "kind", "") == "per_jet_max" else None


# ------------------------------------------------------------------------------------------ training loop


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Per-jet training loss (B,): mean over pixels and channels of w_n (pred - target)^2 for
    (B, N, 3) inputs and pixel weights w (B, N) (None: 1), computed in float32."""
    sq = (pred.float() - target).square()
    if weight is not None:
        sq = sq * weight.unsqueeze(-1)
    return sq.mean(dim=(1, 2))


def pixel_emphasis(images: torch.Tensor, bright_weight: float) -> torch.Tensor:
    """Per-pixel loss weights (B, N) of ``FitConfig.bright_weight`` for images (B, N, 3) in GeV:
    1 + bright_weight sqrt(E_n / max_n E_n), E_n the pixel's energy summed over channels (negative
    sums count as 0; all-empty jets get weight 1 everywhere)."""
    e = images.double().sum(dim=-1).clamp_min(0)
    peak = e.amax(dim=1, keepdim=True)
    rel = torch.where(peak > 0, e / peak.clamp_min(1e-300), torch.zeros_like(e))
    return (1 + bright_weight * rel.sqrt()).float()


class PixelSampler:
    """Per-step pixel subsets of a batch of jets (``FitConfig.empty_samples`` = k).

    Jet b owns its non-empty pixels S_b (any channel > 0) and empty pixels E_b. A draw gives each
    active jet the same number M = max |S_b| + k of (pixel index, weight) slots: its |S_b| non-empty
    pixels with weight M / N, then k empty pixels drawn uniformly with replacement from E_b with
    weight M / N * |E_b| / k, then zero-weight padding. The fused kernel's weighted mean
    sum_j w_j e_j / M is then an unbiased estimate of the full-image mean sum_n e_n / N, and what a
    jet draws depends on its own generator (seeded with its jet seed) only, not on the batch.
    ``emphasis`` (B, N): per-pixel loss weights (:func:`pixel_emphasis`), multiplied into the
    non-empty pixels' weights (the estimate is then one of the weighted mean).
    """

    def __init__(
        self,
        images: torch.Tensor,
        empty_samples: int,
        seeds: Sequence[int],
        emphasis: torch.Tensor | None = None,
    ):
        device = images.device
        nonempty = (images > 0).any(dim=-1)  # (B, N)
        self.n_pix = nonempty.shape[1]
        self.k = int(empty_samples)
        self.n_nz = nonempty.sum(dim=1)  # (B,)
        # row b: S_b (ascending) then E_b (ascending)
        self.order = torch.argsort((~nonempty).to(torch.int8), dim=1, stable=True)
        self.gens = [torch.Generator(device=device).manual_seed(int(s) % (2**63)) for s in seeds]
        # per-pixel loss weights of the non-empty pixels (bright_weight), in the layout of ``order``
        self.emphasis = None if emphasis is None else emphasis.float().gather(1, self.order)

    def draw(self, jets: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel indices (k, M) int64 and weights (k, M) float32 of the jets at batch positions ``jets``."""
        device = self.order.device
        pos = torch.as_tensor(list(jets), dtype=torch.int64, device=device)
        n_nz = self.n_nz[pos].unsqueeze(1)  # (k, 1)
        m = int(n_nz.max()) + self.k
        u = torch.stack([torch.rand(self.k, generator=self.gens[j], device=device) for j in jets])
        n_empty = self.n_pix - n_nz
        j = torch.arange(m, device=device).unsqueeze(0)  # (1, M)
        is_nz, is_empty = j < n_nz, (j >= n_nz) & (j < n_nz + self.k)
        u_at = u.gather(1, (j - n_nz).clamp(0, self.k - 1))  # slot j >= |S_b| uses draw j - |S_b|
        col = torch.where(is_nz, j, (n_nz + (u_at * n_empty).long()).clamp(max=self.n_pix - 1))
        idx = self.order[pos].gather(1, col)
        scale = m / self.n_pix
        w_empty = (scale * n_empty.double() / self.k).float()
        zero = torch.zeros((), device=device)
        w_nz = torch.full_like(u_at, scale)
        if self.emphasis is not None:
            w_nz = w_nz * self.emphasis[pos].gather(1, j.clamp(max=self.n_pix - 1).expand(len(pos), -1))
        weight = torch.where(is_nz, w_nz, torch.where(is_empty, w_empty, zero))
        weight = torch.where(is_empty & (n_empty == 0), zero, weight)
        return idx, weight


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


def train_batch(
    images: torch.Tensor,
    norm,
    seeds: Sequence[int],
    cfg: FitConfig,
    coords: torch.Tensor,
    forward_fn: ForwardFn,
    amp_dtype: torch.dtype | None,
    progress=None,
    loss_grad_fn: LossGradFn | None = None,
    monitor: BatchMonitor | None = None,
) -> BatchOutcome:
    """Train B networks together, each on its own jet, from their per-jet initialisations.

    images (B, N, 3): the original (GeV) pixel values on the training device, in the order of
    ``coords`` (N, 2); ``norm``: the B-jet normaliser; ``seeds`` (B,): per-jet RNG seeds.
    Each step: forward of the active jets (autocast to ``amp_dtype`` if given), per-jet MSE on the
    normalised values (mean over pixels and channels, pixels weighted by ``cfg.bright_weight``; with
    ``cfg.empty_samples``, on a :class:`PixelSampler` subset), gradients of the (loss-scaled) sum, which
    are per-jet gradients because the networks are independent, a masked batched AdamW step. Every
    ``cfg.check_every`` steps (and before the last), psnr/rel_l2 on the original scale are recorded
    over every pixel, for the network as it will be stored (``cfg.param_dtype``); jets that meet the
    targets, or whose loss is non-finite, leave the batch with the parameters of that check.
    ``loss_grad_fn`` (float32 only, see :func:`get_loss_grad`): on steps whose gradient needs no
    forward pass of the checks, loss and gradients come from it in one call instead of ``forward_fn``
    + autograd.
    ``monitor(step, positions, recon)``: called on check steps with the batch positions (k,) of the
    active jets and their reconstructions (k, N, 3) on the original scale; it may return a (k,) bool
    array of jets that should stop now (counted as having reached their target).
    """
    device = images.device
    n_jets = images.shape[0]
    target = norm.forward(images).to(torch.float32)  # (B, N, 3)
    weights, biases = init_jets(cfg.model, seeds, device)
    params = weights + biases
    n_w = len(weights)
    exp_avg = [torch.zeros_like(p) for p in params]
    exp_avg_sq = [torch.zeros_like(p) for p in params]
    adam_step = torch.zeros(n_jets, dtype=torch.float64, device=device)
    scaling = amp_dtype == torch.float16
    scale = torch.full((n_jets,), 2.0**16 if scaling else 1.0, device=device)
    good_steps = torch.zeros(n_jets, dtype=torch.int64, device=device)

    hist = torch.full((3, n_jets, cfg.max_steps), math.nan, dtype=torch.float32, device=device)
    active = torch.arange(n_jets, device=device)  # original positions of the jets still training
    active_list = list(range(n_jets))
    final = [[None] * n_jets for _ in params]
    n_steps = np.full(n_jets, cfg.max_steps, dtype=np.int64)
    reached = np.zeros(n_jets, dtype=bool)
    nonfinite = np.zeros(n_jets, dtype=bool)
    act_norm, act_images, act_target = norm, images, target
    emphasis = None if cfg.bright_weight == 0 else pixel_emphasis(images, cfg.bright_weight)  # (B, N)
    act_emph = emphasis
    sampler = None
    if cfg.empty_samples is not None:
        sampler = PixelSampler(images, cfg.empty_samples, seeds, emphasis)

    rounded = cfg.param_dtype == "float16"

    def stored(ps: list[torch.Tensor]) -> list[torch.Tensor]:
        """The parameters as the run will store them (float16-rounded except the output biases)."""
        return [p.half().float() for p in ps[:-1]] + [ps[-1]] if rounded else ps

    def retire(
        positions_in_batch: list[int],
        step: int,
        why: str,
        shift: torch.Tensor | None = None,
        source: list[torch.Tensor] | None = None,
    ) -> None:
        for pos in positions_in_batch:
            jet = active_list[pos]
            for i, p in enumerate(params if source is None else source):
                final[i][jet] = p[pos].detach().to("cpu", copy=True)
            if shift is not None:  # the sum correction, folded into the output bias
                final[-1][jet] = (final[-1][jet].double() + shift[pos].cpu()).to(final[-1][jet].dtype)
            n_steps[jet] = step
            if why == "reached":
                reached[jet] = True
            elif why == "nonfinite":
                nonfinite[jet] = True

    def objective(x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, fused: bool):
        """The training loss of the active jets on pixels x ((N, 2) or per jet (k, M, 2)) with pixel
        weights: (loss (k,), gradients or None, autograd leaves or None, prediction or None). With
        ``fused`` and a fused step, loss and gradients come from one kernel call; otherwise forward
        (autocast to ``amp_dtype``) with autograd leaves, the gradients taken later."""
        if fused and loss_grad_fn is not None:
            with torch.no_grad():
                value, g_w, g_b = loss_grad_fn(x, params[:n_w], params[n_w:], target, weight)
            return value, g_w + g_b, None, None
        lv = [p.detach().requires_grad_(True) for p in params]
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            y = forward_fn(x, lv[:n_w], lv[n_w:])
        return weighted_mse(y, target, weight), None, lv, y

    for step in range(cfg.max_steps):
        lr = cosine_lr(step, cfg.lr, cfg.t_max, cfg.eta_min)
        check = (step % cfg.check_every == 0) or step == cfg.max_steps - 1
        if sampler is not None:  # a pixel subset per jet for the gradient; every pixel for the checks
            if check:
                with torch.no_grad():
                    checked = stored(params)
                    pred = forward_fn(coords, checked[:n_w], checked[n_w:])
                    loss = weighted_mse(pred, act_target, act_emph)
            idx, pix_w = sampler.draw(active.tolist())
            sub_target = act_target.gather(1, idx.unsqueeze(-1).expand(-1, -1, act_target.shape[-1]))
            grad_loss, grads, leaves, _ = objective(coords[idx], sub_target, pix_w, fused=True)
            if not check:
                loss = grad_loss.detach()
        else:  # every pixel; check steps need the forward pass (autograd path)
            grad_loss, grads, leaves, pred = objective(coords, act_target, act_emph, fused=not check)
            loss = grad_loss.detach()
        hist[0, active, step] = loss.detach()

        done: list[int] = []
        if check:
            with torch.no_grad():
                if sampler is None:  # pred came from the parameters as trained
                    checked = stored(params)
                    if rounded:  # judge (and keep) the network as it will be stored
                        pred = forward_fn(coords, checked[:n_w], checked[n_w:])
                out_vals = pred.detach().float()
                shift = None
                if cfg.sum_correction:
                    shift = match_channel_sums(out_vals, act_norm.inverse, act_images.double().sum(dim=1))
                    out_vals = (out_vals.double() + shift.unsqueeze(1)).float()
                recon = act_norm.inverse(out_vals)
                psnr, rel = psnr_rel_l2(recon, act_images)
            hist[1, active, step] = psnr.float()
            hist[2, active, step] = rel.float()
            finite = torch.isfinite(loss).cpu().numpy()
            met = targets_met(psnr, rel, cfg).cpu().numpy()
            if cfg.target_level is not None and met.any():
                sel = np.flatnonzero(met)
                met[sel] &= level_met(recon[sel], act_images[sel], cfg.target_level, rel[sel])
            if monitor is not None:
                stop = monitor(step, np.asarray(active_list, dtype=np.int64), recon)
                if stop is not None:
                    met = met | np.asarray(stop, dtype=bool)
            bad = [int(i) for i in np.flatnonzero(~finite)]
            good = [int(i) for i in np.flatnonzero(met & finite)]
            retire(bad, step, "nonfinite")
            retire(good, step, "reached", shift, checked)
            done = bad + good

        if grads is None:
            grads = torch.autograd.grad((grad_loss * scale).sum(), leaves)
        with torch.no_grad():
            ok = torch.ones(len(active_list), dtype=torch.bool, device=device)
            if scaling:
                for g in grads:
                    ok &= torch.isfinite(g).flatten(1).all(dim=1)
                grads = [g / scale.reshape((-1,) + (1,) * (g.dim() - 1)) for g in grads]
            adam_step += ok.double()
            adamw_update(
                params, grads, exp_avg, exp_avg_sq, adam_step.clamp(min=1.0), lr,
                cfg.betas, cfg.eps, cfg.weight_decay, ok if scaling else None,
            )  # fmt: skip
            if scaling:
                scale, good_steps = loss_scale_update(scale, good_steps, ok)

        if progress is not None:
            progress.update(1)
        if done:
            gone = set(done)
            keep = [i for i in range(len(active_list)) if i not in gone]
            if not keep:
                active_list = []
                break
            k = torch.tensor(keep, device=device)
            params = [p[k] for p in params]
            exp_avg = [m[k] for m in exp_avg]
            exp_avg_sq = [v[k] for v in exp_avg_sq]
            adam_step, scale, good_steps = adam_step[k], scale[k], good_steps[k]
            active = active[k]
            act_images, act_target = act_images[k], act_target[k]
            act_emph = None if act_emph is None else act_emph[k]
            act_norm = subset_normaliser(norm, [active_list[i] for i in keep])
            active_list = [active_list[i] for i in keep]

    # jets still active ran all steps: their parameters after the last update
    if active_list:
        with torch.no_grad():
            finite = torch.stack([torch.isfinite(p).flatten(1).all(dim=1) for p in params]).all(dim=0)
        finite = finite.cpu().numpy()
        shift = None
        checked = stored(params)  # kept as stored (float16-rounded where param_dtype says so)
        if cfg.sum_correction:
            with torch.no_grad():
                out_vals = forward_fn(coords, checked[:n_w], checked[n_w:]).float()
                shift = match_channel_sums(out_vals, act_norm.inverse, act_images.double().sum(dim=1))
        retire([i for i in range(len(active_list)) if finite[i]], cfg.max_steps, "max_steps", shift, checked)
        retire([i for i in range(len(active_list)) if not finite[i]], cfg.max_steps, "nonfinite")
    h = hist.cpu().numpy()
    return BatchOutcome(
        weights=[torch.stack(final[i]) for i in range(n_w)],
        biases=[torch.stack(final[i]) for i in range(n_w, len(params))],
        n_steps=n_steps,
        reached=reached,
        nonfinite=nonfinite,
        loss_history=h[0],
        psnr_history=h[1],
        rel_l2_history=h[2],
    )


# ------------------------------------------------------------------------------------------ results


@dataclass
class FitResult:
    """Fitted jets, k of them, all arrays on the CPU.

    indices (k,) int64: jet ids (file indices for runs); weights[l] (k, fan_out, fan_in), biases[l]
    (k, fan_out) float32; reconstructions (k, 125, 125, 3) float32 on the original scale (the float32
    reference render of the final parameters); loss_history / psnr_history / rel_l2_history
    (k, max_steps) float32, NaN where not recorded (loss: every step, normalised MSE before that step's
    update; metrics: every check_every steps); n_steps (k,) optimiser steps taken; psnr, rel_l2 (k,) of
    the reconstructions (float64); reached_target, retried (in float32 after a non-finite loss),
    failed (non-finite even then; parameters stored as zeros) (k,) bool; norm_scales (k,) float64 for
    per-jet normalisations, else None; normaliser: the run-wide normaliser or None.
    """

    config: FitConfig
    indices: np.ndarray
    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    reconstructions: np.ndarray
    loss_history: np.ndarray
    psnr_history: np.ndarray
    rel_l2_history: np.ndarray
    n_steps: np.ndarray
    psnr: np.ndarray
    rel_l2: np.ndarray
    reached_target: np.ndarray
    retried: np.ndarray
    failed: np.ndarray
    norm_scales: np.ndarray | None = None
    normaliser: object = None
    seed: int = 0
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.indices)

    def position(self, index: int) -> int:
        """Position of jet id ``index`` in this result."""
        hits = np.flatnonzero(self.indices == int(index))
        if hits.size == 0:
            raise DataError(f"jet index {index} is not in this fit (it holds {_fmt(self.indices)})")
        return int(hits[0])

    def jet_normaliser(self, position: int):
        """The normaliser of the jet at ``position`` (a B = 1 normaliser for per-jet kinds)."""
        from inr_fast.data import PerJetMaxScaler

        if self.norm_scales is not None:
            return PerJetMaxScaler(self.norm_scales[position : position + 1], mode="jet")
        return self.normaliser

    def jet_params(self, position: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(weights, biases) of one jet as B = 1 stacks."""
        return (
            [w[position : position + 1] for w in self.weights],
            [b[position : position + 1] for b in self.biases],
        )

    def render(self, index: int, resolution: int = IMAGE_SIZE, device="cpu") -> np.ndarray:
        """Jet id ``index`` rendered on a resolution^2 grid, (P, P, 3) float32, energy conserving
        (see :func:`inr_fast.store.render_jet`)."""
        from inr_fast.store import render_jet

        pos = self.position(index)
        if self.failed[pos]:
            raise InrFastError(
                f"jet {index} failed to fit (non-finite loss even in float32); nothing to render"
            )
        w, b = self.jet_params(pos)
        return render_jet(self.config.model, w, b, self.jet_normaliser(pos), resolution, device)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Flat name -> tensor dict (what a run directory stores per chunk)."""
        t = {"indices": torch.from_numpy(np.asarray(self.indices, dtype=np.int64))}
        half = self.config.param_dtype == "float16"
        last = len(self.biases) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            t[f"weights.{i}"] = (w.half() if half else w).contiguous()
            t[f"biases.{i}"] = (b.half() if half and i < last else b).contiguous()
        t["reconstructions"] = torch.from_numpy(np.ascontiguousarray(self.reconstructions))
        for name in ("loss_history", "psnr_history", "rel_l2_history", "n_steps", "psnr", "rel_l2"):
            t[name] = torch.from_numpy(np.ascontiguousarray(getattr(self, name)))
        for name in ("reached_target", "retried", "failed"):
            t[name] = torch.from_numpy(np.asarray(getattr(self, name), dtype=np.uint8))
        if self.norm_scales is not None:
            t["norm_scales"] = torch.from_numpy(np.asarray(self.norm_scales, dtype=np.float64))
        return t

    @classmethod
    def from_tensors(cls, t: dict, config: FitConfig, normaliser=None, seed: int = 0) -> FitResult:
        n_layers = config.model.depth + 1
        return cls(
            config=config,
            indices=t["indices"].numpy(),
            weights=[t[f"weights.{i}"].float() for i in range(n_layers)],
            biases=[t[f"biases.{i}"].float() for i in range(n_layers)],
            reconstructions=t["reconstructions"].numpy(),
            loss_history=t["loss_history"].numpy(),
            psnr_history=t["psnr_history"].numpy(),
            rel_l2_history=t["rel_l2_history"].numpy(),
            n_steps=t["n_steps"].numpy(),
            psnr=t["psnr"].numpy(),
            rel_l2=t["rel_l2"].numpy(),
            reached_target=t["reached_target"].numpy().astype(bool),
            retried=t["retried"].numpy().astype(bool),
            failed=t["failed"].numpy().astype(bool),
            norm_scales=t["norm_scales"].numpy() if "norm_scales" in t else None,
            normaliser=normaliser,
            seed=seed,
        )

    @classmethod
    def concat(cls, parts: Sequence[FitResult]) -> FitResult:
        """Join results of the same config (in the order given)."""
        if not parts:
            raise ValueError("FitResult.concat needs at least one part")
        first = parts[0]
        cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
        n_layers = len(first.weights)
        return cls(
            config=first.config,
            indices=cat("indices"),
            weights=[torch.cat([p.weights[i] for p in parts]) for i in range(n_layers)],
            biases=[torch.cat([p.biases[i] for p in parts]) for i in range(n_layers)],
            reconstructions=cat("reconstructions"),
            loss_history=cat("loss_history"),
            psnr_history=cat("psnr_history"),
            rel_l2_history=cat("rel_l2_history"),
            n_steps=cat("n_steps"),
            psnr=cat("psnr"),
            rel_l2=cat("rel_l2"),
            reached_target=cat("reached_target"),
            retried=cat("retried"),
            failed=cat("failed"),
            norm_scales=cat("norm_scales") if first.norm_scales is not None else None,
            normaliser=first.normaliser,
            seed=first.seed,
            seconds=sum(p.seconds for p in parts),
        )


def _fmt(indices: np.ndarray, limit: int = 8) -> str:
    items = ", ".join(str(int(i)) for i in indices[:limit])
    return items + (f" and {len(indices) - limit} more" if len(indices) > limit else "")


def _by_id(monitor: Monitor | None, ids: np.ndarray) -> BatchMonitor | None:
    """The batch-position monitor that calls ``monitor`` with jet ids instead."""
    if monitor is None:
        return None
    return lambda step, positions, recon: monitor(step, ids[positions], recon)


def fit_chunk(
    images: np.ndarray,
    indices: Sequence[int],
    cfg: FitConfig,
    seed: int,
    device: torch.device,
    global_norm=None,
    progress: bool = False,
    monitor: Monitor | None = None,
) -> FitResult:
    """Fit one batch of jets (k <= any size, trained together) and render their reconstructions.

    images (k, 125, 125, 3) float32 original values; indices (k,) their jet ids (seeds derive from
    them). Jets that go non-finite are retried together in float32; failures are stored as zeros.
    ``monitor(step, ids, recon)``: see :func:`fit` (called with jet ids).
    """
    t0 = time.perf_counter()
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, N_CHANNELS):
        raise DataError(
            f"images must have shape (k, {IMAGE_SIZE}, {IMAGE_SIZE}, {N_CHANNELS}), got {images.shape}"
        )
    if not np.isfinite(images).all():
        bad = int(np.flatnonzero(~np.isfinite(images.reshape(len(images), -1)).all(axis=1))[0])
        raise DataError(f"jet {int(indices[bad])}: non-finite pixel values; expected finite energies")
    indices = np.asarray(indices, dtype=np.int64)
    k = len(indices)
    from inr_fast.data import pixel_grid

    forward_fn = get_forward(cfg.model, cfg.backend)
    coords = pixel_grid(IMAGE_SIZE, device=device)
    flat = torch.from_numpy(images.reshape(k, -1, N_CHANNELS)).to(device)
    norm = batch_normaliser(cfg.normalisation, global_norm, images)
    seeds = [jet_seed(seed, int(i)) for i in indices]
    amp_dtype = resolve_amp(cfg.amp, device)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_steps, desc=f"jets {_fmt(indices, 3)}", unit="step", leave=False)
    try:
        loss_grad = get_loss_grad(cfg.model, cfg.backend, device, amp_dtype)
        out = train_batch(
            flat, norm, seeds, cfg, coords, forward_fn, amp_dtype, bar, loss_grad, _by_id(monitor, indices)
        )
    finally:
        if bar is not None:
            bar.close()
    retried = np.zeros(k, dtype=bool)
    failed = np.zeros(k, dtype=bool)
    redo = np.flatnonzero(out.nonfinite)
    if redo.size:
        sub = subset_normaliser(norm, redo.tolist())
        loss_grad = get_loss_grad(cfg.model, cfg.backend, device, None)
        again = train_batch(
            flat[redo], sub, [seeds[i] for i in redo], cfg, coords, forward_fn, None, None, loss_grad,
            _by_id(monitor, indices[redo]),
        )  # fmt: skip
        for j, pos in enumerate(redo):
            for mine, theirs in zip(out.weights + out.biases, again.weights + again.biases, strict=True):
                mine[pos] = theirs[j]
            for name in ("n_steps", "reached", "loss_history", "psnr_history", "rel_l2_history"):
                getattr(out, name)[pos] = getattr(again, name)[j]
            retried[pos] = True
            failed[pos] = bool(again.nonfinite[j])
        for p in out.weights + out.biases:  # never store garbage: failed jets become zeros
            p[torch.from_numpy(failed)] = 0.0

    from inr_fast.store import render_jet

    recon = np.zeros_like(images)
    psnr = np.full(k, -math.inf)
    rel = np.full(k, math.inf)
    scales = jet_scales(norm)
    for j in range(k):
        if failed[j]:
            continue
        jet_norm = subset_normaliser(norm, [j])
        w = [t[j : j + 1] for t in out.weights]
        b = [t[j : j + 1] for t in out.biases]
        recon[j] = render_jet(cfg.model, w, b, jet_norm, IMAGE_SIZE, device)
        p, r = psnr_rel_l2(torch.from_numpy(recon[j]).reshape(1, -1, 3), flat[j : j + 1].cpu())
        psnr[j], rel[j] = float(p[0]), float(r[0])
    return FitResult(
        config=cfg,
        indices=indices,
        weights=out.weights,
        biases=out.biases,
        reconstructions=recon,
        loss_history=out.loss_history,
        psnr_history=out.psnr_history,
        rel_l2_history=out.rel_l2_history,
        n_steps=out.n_steps,
        psnr=psnr,
        rel_l2=rel,
        reached_target=out.reached,
        retried=retried,
        failed=failed,
        norm_scales=scales,
        normaliser=global_norm,
        seed=seed,
        seconds=time.perf_counter() - t0,
    )


def fit(
    images,
    preset: str | FitConfig = "fast",
    *,
    backend: str | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    target_psnr: float | None | object = KEEP,
    target_rel_l2: float | None | object = KEEP,
    target_level: str | None | object = KEEP,
    max_steps: int | None = None,
    batch_size: int | None = None,
    normaliser=None,
    indices: Sequence[int] | None = None,
    progress: bool = False,
    monitor: Monitor | None = None,
    **overrides,
) -> FitResult:
    """Fit one INR per jet: the Python API beside ``inr-fast fit``.

    images: (k, 125, 125, 3) or one (125, 125, 3) jet, numpy or torch, original (GeV) values.
    preset: ``seed``, ``fast``, ``compact`` or a :class:`FitConfig`; keyword overrides (``backend``,
    ``max_steps``, ``batch_size``, ``lr``, ``width``, ...; unknown keys refused; None keeps the preset's
    value). ``target_psnr`` / ``target_rel_l2`` / ``target_level`` ("Q1", "Q2"): a value sets the target,
    None removes the preset's.
    normaliser: the run-wide normaliser to use (default: fitted on ``images`` for
    ``channel_standardiser``); indices: jet ids (default 0..k-1), which seed each jet's initialisation
    (jet_seed(seed, id)), so a jet fitted alone with its id equals the same jet fitted in a batch.
    monitor: ``monitor(step, ids (k,), recon (k, N, 3))`` is called every ``check_every`` steps with
    the ids of the jets still training and their reconstructions on the original scale (GeV, pixel
    order of :func:`inr_fast.data.pixel_grid`); it may return a (k,) bool array of jets to stop now
    (e.g. a quality level reached; :mod:`inr_fast.bench` uses it). None: no monitoring.
    Returns a :class:`FitResult` with reconstructions, parameters and histories.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[None]
    cfg = get_preset(preset).with_overrides(
        backend=backend, max_steps=max_steps, batch_size=batch_size, **overrides
    )
    targets = {"target_psnr": target_psnr, "target_rel_l2": target_rel_l2, "target_level": target_level}
    cfg = replace(cfg, **{k: v for k, v in targets.items() if v is not KEEP})
    dev = resolve_device(device)
    cfg = replace(cfg, backend=resolve_backend(cfg.backend, cfg.model, dev))
    ids = np.arange(len(images), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
    if ids.shape != (len(images),):
        raise ConfigError(f"indices must give one id per jet ({len(images)}), got shape {ids.shape}")
    check_forward(get_forward(cfg.model, cfg.backend), cfg.model, cfg.backend, dev)
    if normaliser is None:
        normaliser = fit_normaliser(cfg.normalisation, images=images, intensity_scale=cfg.intensity_scale)
    parts = []
    for start in range(0, len(images), cfg.batch_size):
        sl = slice(start, start + cfg.batch_size)
        parts.append(fit_chunk(images[sl], ids[sl], cfg, seed, dev, normaliser, progress, monitor))
    return FitResult.concat(parts)


# ------------------------------------------------------------------------------------------ command


@dataclass(frozen=True)
class FitCommand:
    """``inr-fast fit FILE --out RUN ...``: options of the command (the fit itself is a FitConfig)."""

    file: str
    out: str
    preset: str = "fast"
    backend: str | None = None
    n: int | None = None
    indices: str | None = None
    device: str = "auto"
    seed: int = 0
    target_psnr: float | None = None
    target_rel_l2: float | None = None
    target_level: str | None = None  # None: the preset's; "none": no level target
    max_steps: int | None = None
    batch_size: int | None = None
    channels_first: bool = False
    overwrite: bool = False
    progress: bool = True
    figures: bool = True
    empty_samples: int | None = None  # 0: every pixel every step
    bright_weight: float | None = None
    param_dtype: str | None = None

    def fit_config(self) -> FitConfig:
        cfg = get_preset(self.preset).with_overrides(
            backend=self.backend,
            target_psnr=self.target_psnr,
            target_rel_l2=self.target_rel_l2,
            target_level=None if self.target_level == "none" else self.target_level,
            max_steps=self.max_steps,
            batch_size=self.batch_size,
            empty_samples=self.empty_samples or None,
            bright_weight=self.bright_weight,
            param_dtype=self.param_dtype,
        )
        if self.target_level == "none":  # run every step: no level stops a jet
            cfg = replace(cfg, target_level=None)
        return replace(cfg, empty_samples=None) if self.empty_samples == 0 else cfg


def add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="HDF5 jet file (X_jets, y, m0, pt)")
    parser.add_argument(
        "--out", required=True, help="run directory to write (resumed if it holds the same run)"
    )
    parser.add_argument(
        "--preset",
        default="fast",
        choices=list(PRESETS),
        help="training recipe (default: fast; seed is the 10,000-step baseline recipe, ~25 minutes a jet "
        "on 2 CPU cores)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="model implementation (default: the preset's: reference for seed, auto for fast and compact "
        "= the fused kernels on the CPU)",
    )
    sel = parser.add_mutually_exclusive_group()
    sel.add_argument("--n", type=int, default=None, help="fit the first N jets")
    sel.add_argument("--indices", default=None, help="jets to fit, e.g. 0,5,9 or 10:20 (default: all)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed (each jet's init depends on it and its index)"
    )
    parser.add_argument(
        "--target-psnr", type=float, default=None, metavar="DB", help="stop a jet at this PSNR"
    )
    parser.add_argument(
        "--target-rel-l2", type=float, default=None, metavar="X", help="stop a jet at this rel. L2"
    )
    parser.add_argument(
        "--target-level",
        choices=("Q1", "Q2", "none"),
        default=None,
        help="stop a jet once this quality level of DESIGN.md holds (Q2: rel_l2, channel totals, mass); "
        "none: run every step (e.g. --preset fast --max-steps 10000 --target-level none matches the "
        "full seed recipe's quality, BENCHMARKS.md Q3); default: the preset's (fast, compact: Q2)",
    )
    parser.add_argument("--max-steps", type=int, default=None, metavar="N", help="steps per jet at most")
    parser.add_argument("--batch-size", type=int, default=None, metavar="JETS", help="jets trained together")
    parser.add_argument(
        "--empty-samples",
        type=int,
        default=None,
        metavar="K",
        help="random empty pixels per jet and step, besides the non-empty ones (0: all; default: preset)",
    )
    parser.add_argument(
        "--bright-weight",
        type=float,
        default=None,
        metavar="L",
        help="loss weight 1 + L sqrt(E/E_max) of non-empty pixels (0: plain MSE; default: preset)",
    )
    parser.add_argument(
        "--param-dtype",
        choices=PARAM_DTYPES,
        default=None,
        help="stored parameter precision (default: preset)",
    )
    parser.add_argument("--channels-first", action="store_true", help="the file stores (N, 3, 125, 125)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a run directory with a different config"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--no-figures", action="store_true", help="skip curve.png and compare.png")


def run_fit(args: argparse.Namespace) -> int:
    cmd = FitCommand(
        file=args.file,
        out=args.out,
        preset=args.preset,
        backend=args.backend,
        n=args.n,
        indices=args.indices,
        device=args.device,
        seed=args.seed,
        target_psnr=args.target_psnr,
        target_rel_l2=args.target_rel_l2,
        target_level=args.target_level,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        empty_samples=args.empty_samples,
        bright_weight=args.bright_weight,
        param_dtype=args.param_dtype,
        channels_first=args.channels_first,
        overwrite=args.overwrite,
        progress=not args.quiet,
        figures=not args.no_figures,
    )
    summary = fit_run(cmd)
    print(summary)
    return 0


def fit_run(cmd: FitCommand) -> str:
    """Fit the selected jets of ``cmd.file`` into the run directory ``cmd.out``, chunk by chunk
    (``batch_size`` jets each, written atomically), skipping chunks already written by the same run.
    Returns a one-paragraph summary."""
    from tqdm.auto import tqdm

    from inr_fast import store
    from inr_fast.data import JetFile

    if cmd.n is not None and cmd.n < 1:
        raise ConfigError(f"--n must be a positive integer, got {cmd.n}")
    device = resolve_device(cmd.device)
    cfg = cmd.fit_config()
    cfg = replace(cfg, backend=resolve_backend(cfg.backend, cfg.model, device))  # config.json: the one used
    run = Path(cmd.out)
    t0 = time.perf_counter()
    with JetFile(cmd.file, channels_first=cmd.channels_first) as jf:
        spec = f"0:{cmd.n}" if cmd.n is not None else cmd.indices
        if cmd.n is not None and cmd.n > jf.n_jets:
            raise DataError(f"{cmd.file}: --n {cmd.n} but the file has {jf.n_jets} jets")
        indices = jf.resolve(spec)
        if len(indices) == 0:
            raise DataError(f"{cmd.file}: the jet selection {spec!r} is empty")
        if len(np.unique(indices)) != len(indices):
            raise DataError(f"{cmd.file}: the jet selection {spec!r} repeats jets; each jet is fitted once")
        run_cfg = store.RunConfig(
            data_path=str(Path(cmd.file).resolve()),
            channels_first=cmd.channels_first,
            n_jets_in_file=jf.n_jets,
            indices=[int(i) for i in indices],
            seed=cmd.seed,
            fit=cfg,
        )
        existing = store.prepare_run_dir(run, run_cfg, overwrite=cmd.overwrite)
        if existing is not None and existing.normaliser is not None:
            normaliser = existing.normaliser
        else:
            normaliser = fit_normaliser(
                cfg.normalisation, jetfile=jf, indices=indices, intensity_scale=cfg.intensity_scale
            )
        run_cfg = replace(run_cfg, normaliser=normaliser)
        store.write_config(run, run_cfg)
        forward_fn = get_forward(cfg.model, cfg.backend)
        check_forward(forward_fn, cfg.model, cfg.backend, device)
        chunks = run_cfg.chunks()
        todo = [c for c in range(len(chunks)) if not store.chunk_done(run, c)]
        n_done = sum(len(chunks[c]) for c in range(len(chunks)) if c not in set(todo))
        bar = tqdm(total=len(indices), initial=n_done, desc="fit", unit="jet", disable=not cmd.progress)
        try:
            for c in todo:
                images = jf.read(chunks[c])
                result = fit_chunk(images, chunks[c], cfg, cmd.seed, device, normaliser, cmd.progress)
                store.save_chunk(run, c, result)
                bar.update(len(chunks[c]))
        finally:
            bar.close()
    result = store.load_results(run)
    if cmd.figures:
        store.write_figures(run, result, overwrite=True)
    seconds = time.perf_counter() - t0
    return (
        f"{run}: {len(result)} jets with preset {cfg.name!r} on {device.type} "
        f"({len(todo)} of {len(chunks)} chunks fitted now, {seconds:.1f} s); "
        f"median psnr {np.median(result.psnr):.2f} dB, median rel_l2 "
        f"{np.median(result.rel_l2):.4f}, median steps {int(np.median(result.n_steps))}, "
        f"{int(result.reached_target.sum())} reached the target, "
        f"{int(result.retried.sum())} retried in float32, "
        f"{int(result.failed.sum())} failed; {param_count(cfg.model)} parameters, "
        f"{stored_bytes_per_jet(cfg.model, cfg.param_dtype)} bytes per jet"
    )
