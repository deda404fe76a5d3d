"""What a fit computes: :class:`FitConfig` and the named presets :data:`SEED`, :data:`FAST`,
:data:`COMPACT` (each derived from the one before where they share a recipe)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

from inr_fast.data.normalise import NORMALISATIONS
from inr_fast.errors import ConfigError
from inr_fast.model.spec import PARAM_DTYPES, ModelSpec
from inr_fast.util import refuse_unknown

BACKENDS = ("reference", "fused", "auto")
TARGET_LEVELS = ("Q1", "Q2", "Q2p")
AMP_MODES = ("auto", "off", "fp16", "bf16")


@dataclass(frozen=True)
class FitConfig:
    """Everything that decides what a fit computes (the device does not, up to rounding).

    model: the network (:class:`inr_fast.model.spec.ModelSpec`).
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
    target_level: ``Q1``, ``Q2`` or ``Q2p`` (docs/design.md, :mod:`inr_fast.metrics.levels` on the
    original
        scale) as one more early-stopping target, checked every ``check_every`` steps (Q2 is cheap:
        rel_l2, channel totals, jet mass; Q1 computes SSIM).
    sum_correction: on every check step and after the last step, shift each jet's output bias per
        channel (:func:`inr_fast.train.checks.match_channel_sums`) so that the channel totals of the
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
    support: decode every jet through its stored support (:mod:`inr_fast.model.support`): exactly zero
        where the original is zero, at least the data's zero-suppression level where it is not (when
        the data has no negative pixels), HCAL uniform over its 5 x 5 towers (when the data's HCAL
        is); training then sees only the support's pixels (``empty_samples`` does not apply). The
        support costs ~150-250 bytes per jet.
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
    support: bool = False

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
        if self.target_rel_l2 is not None and not (0 < self.target_rel_l2 < math.inf):
            raise ConfigError(f"target_rel_l2 must be positive and finite, got {self.target_rel_l2!r}")
        if self.target_psnr is not None and not math.isfinite(self.target_psnr):
            raise ConfigError(f"target_psnr must be a finite number of dB, got {self.target_psnr!r}")
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
        refuse_unknown(cls, d, "fit config")
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


def _documented(cfg: FitConfig, doc: str) -> FitConfig:
    """``cfg`` with its own docstring (``help(FAST)`` and the docs show the recipe's rationale)."""
    object.__setattr__(cfg, "__doc__", doc)
    return cfg


SEED = _documented(
    FitConfig(
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
    ),
    """The seed recipe (docs/design.md, "The baseline") exactly.

Global per-channel mean/std normalisation (over the jets being fitted), all 125 x 125 pixel
coordinates every step (one image per batch: per-jet losses are independent), MSE over all pixels
and channels, AdamW(lr=1e-3, weight_decay=5e-5, betas=(0.9, 0.999), eps=1e-8), cosine annealing
over 10,000 steps, 10,000 steps. The seed does not say L, W, D: we use L = 10 frequencies (42 features)
and 4 hidden ReLU layers of 256 (nn.Linear default initialisation). AMP: fp16 autocast with dynamic
loss scaling (GradScaler's rule, per jet) on CUDA; on the CPU float32 (no autocast): bf16 autocast
on CPUs without AMX is slower than float32 here and coarser than the seed's fp16, and loss scaling
is not needed in float32. No early stopping unless a target is given.""",
)

FAST = _documented(
    replace(
        SEED,
        name="fast",
        model=ModelSpec(kind="pe_relu", n_freqs=10, width=64, depth=3),
        normalisation="asinh_standardiser",
        intensity_scale=0.02,
        lr=1e-2,
        weight_decay=0.0,
        max_steps=3000,
        schedule_steps=None,
        target_level="Q2p",
        target_rel_l2=0.005,
        sum_correction=True,
        check_every=20,
        batch_size=64,
        empty_samples=512,
        bright_weight=100.0,
        support=True,
        backend="auto",
    ),
    """Best time to the physics level Q2p (BENCHMARKS.md). L = 10, 3 hidden layers of 64 (11,267
parameters, 45,068 bytes per jet in float32), decoded through the jet's stored support (``support``:
exact zeros off the jet's pixels, the zero-suppression floor, HCAL on its towers; ~200 bytes per
jet) and trained on the support's pixels, on asinh(x / 0.02 GeV) standardised per channel, AdamW
lr 1e-2 without weight decay, cosine over 3,000 steps; non-empty pixels weigh
1 + 100 sqrt(E / E_max) (``bright_weight``: the bright pixels that dominate rel_l2 and the mass in
GeV, which the asinh compresses). On every check (every 20 steps, all pixels) each channel's output
bias is re-solved (Newton, :func:`inr_fast.train.checks.match_channel_sums`) so the channel totals in
GeV are exact, and a jet stops as soon as Q2p holds and rel_l2 <= 0.005 (Q2p alone left the Tracks
e2 / e3 / girth / tau and the leading-pixel fraction with 68 % intervals up to 6 % wide; rel_l2 <=
0.01 brought them to 1.98 %, 0.005 to 1.06 %, at the same time per jet; 100 jets of bench set A).
Without ``support`` the fit spreads a faint +- floor over the empty pixels that Q2 does not see
(pixel multiplicities x5 to x100).""",
)

COMPACT = _documented(
    replace(
        FAST,
        name="compact",
        model=ModelSpec(kind="pe_relu", n_freqs=6, width=32, depth=2),
        max_steps=8000,
        param_dtype="float16",
    ),
    """Fewest bytes per jet at Q2p: the ``fast`` recipe (support decoding, stop at Q2p and
rel_l2 <= 0.005) on a network of L = 6, 2 hidden layers of 32 (2,019 parameters) stored in float16
except the 3 output biases (4,044 bytes of parameters per jet, vs 187,500 for the float32 image), up
to 8,000 steps (cosine over 8,000). Every check judges, and every stopped jet keeps, the rounded
network with its output biases re-solved so that the channel totals stay exact: judging the unrounded
network lost Q2 on 5 of 29 jets after rounding.""",
)

PRESETS: dict[str, FitConfig] = {"seed": SEED, "fast": FAST, "compact": COMPACT}


def get_preset(name: str | FitConfig) -> FitConfig:
    """A preset by name (or a FitConfig passed through)."""
    if isinstance(name, FitConfig):
        return name
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
