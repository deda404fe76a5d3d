"""Every metric of a batch (:func:`compute_all`) and the quality levels Q1 and Q2 (docs/design.md).

Q1 (the seed's published level): psnr >= 55 dB and ssim >= 0.997. Q2 (physics): rel_l2 <= 0.05, every
channel's total within 1 %, the image-based jet mass within 2 %. :func:`quality_levels` judges both on
a batch; :func:`level_met` judges one level the cheap way (a necessary cheap condition first, the
expensive metrics only where it holds), which early stopping and the benchmarks use.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch

from inr_fast.errors import ConfigError, InrFastError
from inr_fast.layout import CHANNELS, PITCH
from inr_fast.metrics import physics
from inr_fast.metrics.arrays import check_pair, to_torch
from inr_fast.metrics.image import psnr, psnr_zero, rel_l2, rel_l2_per_channel, ssim
from inr_fast.metrics.image import rel_l2 as image_rel_l2
from inr_fast.metrics.lpips import lpips


def compute_all(
    x_hat,
    x,
    *,
    with_lpips: bool = True,
    cache_dir: str | os.PathLike | None = None,
    channels: Sequence[int] = physics.CALO_CHANNELS,
    threshold: float = physics.NONZERO_THRESHOLD,
) -> dict[str, np.ndarray]:
    """Every metric for a batch of jets: (B, H, W, 3) twice (or one (H, W, 3) image, as B = 1) ->
    dict of numpy float64 (counts: int64) arrays of shape (B,):

    ``psnr``, ``psnr_zero``, ``psnr_gain``, ``rel_l2``, ``rel_l2_{ecal,hcal,tracks}``, ``ssim``,
    ``lpips`` (unless ``with_lpips`` is False), and :func:`inr_fast.metrics.physics.physics_metrics`:
    ``sum_rel_err_{ecal,hcal,tracks}``, ``jet_pt``, ``jet_pt_hat``, ``jet_pt_rel_err``, ``jet_mass``,
    ``jet_mass_hat``, ``jet_mass_rel_err``, ``n_nonzero``, ``n_kept``, ``n_spurious``, ``nonzero_kept``,
    ``off_support``, ``off_support_abs``.
    Relative errors of sums, pT and mass are signed.
    """
    th, t = to_torch(x_hat), to_torch(x)
    if t.ndim == 3:
        th, t = th[None], t[None]
    check_pair(th, t)
    if t.ndim != 4:
        raise InrFastError(f"compute_all: expected (B, H, W, C) images, got shape {tuple(t.shape)}")
    out: dict[str, np.ndarray] = {}

    def put(name, v):
        out[name] = v.detach().cpu().numpy()

    put("psnr", psnr(th, t))
    put("psnr_zero", psnr_zero(t))
    out["psnr_gain"] = out["psnr"] - out["psnr_zero"]
    put("rel_l2", rel_l2(th, t))
    per = rel_l2_per_channel(th, t)
    names = CHANNELS if t.shape[-1] == len(CHANNELS) else tuple(f"ch{c}" for c in range(t.shape[-1]))
    for c, name in enumerate(names):
        put(f"rel_l2_{name.lower()}", per[:, c])
    put("ssim", ssim(th, t))
    if with_lpips:
        put("lpips", lpips(th, t, cache_dir=cache_dir))
    out.update(physics.physics_metrics(th, t, channels=channels, threshold=threshold))
    return out


# Quality levels of docs/design.md, used by benchmarks and early stopping.
Q1_PSNR, Q1_SSIM = 55.0, 0.997
Q2_REL_L2, Q2_SUM_REL, Q2_MASS_REL = 0.05, 0.01, 0.02


def quality_levels(x_hat, x, metrics: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Which jets meet each quality level: (B, H, W, 3) twice -> {"Q1": (B,) bool, "Q2": (B,) bool}.

    Q1 (the seed's published level): psnr >= 55 dB and ssim >= 0.997.
    Q2 (physics): rel_l2 <= 0.05, every channel's total within 1 % of the original's, and the
    image-based jet mass within 2 %. A channel whose original total is 0 must stay within 1 % of the
    jet's summed |total| over all channels (an empty Tracks channel must stay essentially empty). The
    mass tolerance is 2 % of max(m, pT x pitch): a jet narrower than one pixel (one or two lit pixels,
    m ~ 0) is judged on the mass scale a pixel can resolve instead of a relative error of ~0 / 0.
    ``metrics``: a :func:`compute_all` result for the same images, to avoid recomputing it.
    """
    th, t = to_torch(x_hat), to_torch(x)
    if t.ndim == 3:
        th, t = th[None], t[None]
    m = compute_all(th, t, with_lpips=False) if metrics is None else metrics
    s_hat = physics.channel_sums(th).detach().cpu().numpy()  # (B, C)
    s = physics.channel_sums(t).detach().cpu().numpy()
    floor = np.abs(s).sum(axis=-1, keepdims=True)
    scale = np.where(s != 0, np.abs(s), floor)
    sums_ok = np.all(np.abs(s_hat - s) <= Q2_SUM_REL * scale, axis=-1)
    if {"jet_mass", "jet_mass_hat", "jet_pt"} <= set(m):
        mass, mass_hat, pt = (
            np.asarray(m[k], dtype=np.float64) for k in ("jet_mass", "jet_mass_hat", "jet_pt")
        )
    else:
        mass, mass_hat, pt = (physics.jet_mass(t), physics.jet_mass(th), physics.jet_pt(t))
        mass, mass_hat, pt = (v.detach().cpu().numpy() for v in (mass, mass_hat, pt))
    mass_err = np.abs(mass_hat - mass) / np.maximum(mass, pt * PITCH)
    mass_err = np.nan_to_num(mass_err, nan=np.inf)
    q1 = (np.nan_to_num(m["psnr"], nan=-np.inf) >= Q1_PSNR) & (np.nan_to_num(m["ssim"], nan=-1) >= Q1_SSIM)
    q2 = (np.nan_to_num(m["rel_l2"], nan=np.inf) <= Q2_REL_L2) & sums_ok & (mass_err <= Q2_MASS_REL)
    return {"Q1": q1, "Q2": q2}


def levels_met(x_hat, x, levels: Sequence[str] = ("Q1", "Q2"), rel_l2=None) -> dict[str, np.ndarray]:
    """Which jets meet each of ``levels``, the cheap way: (B, H, W, 3) twice (numpy or torch, GeV) ->
    {level: (B,) bool}, equal to :func:`quality_levels`.

    A cheap necessary condition selects the candidates first (Q1: psnr >= 55 dB; Q2: rel_l2 <= 0.05),
    and the full predicate is evaluated on those only; Q2 computes only rel_l2 (or takes ``rel_l2``
    (B,) given), the channel totals and the jet mass, never SSIM. Early stopping, the benchmarks and
    the parity runs all judge levels through this function.
    """
    th, t = to_torch(x_hat), to_torch(x)
    if t.ndim == 3:
        th, t = th[None], t[None]
    check_pair(th, t)
    out: dict[str, np.ndarray] = {}
    for level in levels:
        met = np.zeros(t.shape[0], dtype=bool)
        if level == "Q1":
            cand = np.flatnonzero(psnr(th, t).cpu().numpy() >= Q1_PSNR)
            if cand.size:
                met[cand] = quality_levels(th[cand], t[cand])["Q1"]
        elif level == "Q2":
            rel = rel_l2 if rel_l2 is not None else image_rel_l2(th, t)
            rel = torch.nan_to_num(torch.as_tensor(rel, dtype=torch.float64).cpu(), nan=math.inf).numpy()
            cand = np.flatnonzero(rel <= Q2_REL_L2)
            if cand.size:
                nan = np.full(cand.size, np.nan)
                metrics = {"psnr": nan, "ssim": nan, "rel_l2": rel[cand]}
                met[cand] = quality_levels(th[cand], t[cand], metrics=metrics)["Q2"]
        else:
            raise ConfigError(f"unknown quality level {level!r}; known: Q1, Q2")
        out[level] = met
    return out
