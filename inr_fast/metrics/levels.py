"""Every metric of a batch (:func:`compute_all`) and the quality levels Q1, Q2 and Q2p (docs/design.md).

Q1 (the seed's published level): psnr >= 55 dB and ssim >= 0.997. Q2 (physics): rel_l2 <= 0.05, every
channel's total within 1 %, the image-based jet mass within 2 %. :func:`quality_levels` judges both on
a batch; :func:`level_met` judges one level the cheap way (a necessary cheap condition first, the
expensive metrics only where it holds), which early stopping and the benchmarks use.

Q2p (:func:`q2p`), the physics quality level, per jet:
    Q2 (:func:`quality_levels`: rel_l2 <= 0.05, every channel's total within 1 %,
    window jet mass within 2 %) and
    - ``off_support``: absolute off-support energy sum |x_hat| over pixels where x = 0, ECAL + HCAL, at
      most 1 % of the original calorimeter total (:func:`inr_fast.metrics.physics.off_support`);
    - ``floor``: no floor pixel (x = 0 in that channel) with x_hat >= the channel's zero-suppression
      level (it would survive the detector's own suppression; negative floor pixels do not, and are
      bounded by ``off_support``);
    - ``counts``: per channel, the number of pixels at or above the level, |n(x_hat) - n(x)| <= 2 % of
      n(x) (an empty channel must stay empty);
    - ``cone_mass``, ``cone_girth``, ``cone_e2``: the calorimeter (ECAL + HCAL) cone observables of
      :mod:`inr_fast.metrics.substructure` (R < 0.4 around the image centre) within 1 % per jet,
      |v(x_hat) - v(x)| <= 0.01 |v(x)| (so a value 0 must stay 0; nan, an empty cone, fails).
    The zero-suppression levels default to :func:`inr_fast.data.stats.zero_suppression_levels` of
    the given originals; pass the whole file's levels so that every batch is judged alike. With
    ``lazy=True`` (early stopping), the cone observables are computed only for the jets that pass every
    other condition; the others get False there and ``evaluated`` False.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch

from inr_fast.arrays import check_pair, to_torch
from inr_fast.data.stats import zero_suppression_levels
from inr_fast.errors import ConfigError, DataError, InrFastError
from inr_fast.layout import CHANNELS, PITCH
from inr_fast.metrics import physics, substructure
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
Q2P_OFF_SUPPORT, Q2P_COUNT_REL, Q2P_CONE_REL = 0.01, 0.02, 0.01


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
    q1 = (np.nan_to_num(m["psnr"], nan=-np.inf) >= Q1_PSNR) & (np.nan_to_num(m["ssim"], nan=-1) >= Q1_SSIM)
    return {"Q1": q1, "Q2": q2_conditions(th, t, m)["Q2"]}


def q2_conditions(th: torch.Tensor, t: torch.Tensor, metrics: dict | None = None) -> dict[str, np.ndarray]:
    """The conditions of Q2 for (B, H, W, 3) tensors, (B,) each: ``rel_l2``, ``sums``, ``mass`` (bool),
    ``Q2`` (all three), and the values ``rel_l2_value`` and ``mass_err`` (|dm| / max(m, pT x pitch)).
    ``metrics``: values already computed (``rel_l2``, ``jet_mass``, ``jet_mass_hat``, ``jet_pt``)."""
    m = metrics or {}
    rel = m["rel_l2"] if "rel_l2" in m else rel_l2(th, t).cpu().numpy()
    rel = np.nan_to_num(np.asarray(rel, dtype=np.float64), nan=np.inf)
    s_hat = physics.channel_sums(th).detach().cpu().numpy()  # (B, C)
    s = physics.channel_sums(t).detach().cpu().numpy()
    scale = np.where(s != 0, np.abs(s), np.abs(s).sum(axis=-1, keepdims=True))
    if {"jet_mass", "jet_mass_hat", "jet_pt"} <= set(m):
        mass, mass_hat, pt = (
            np.asarray(m[k], dtype=np.float64) for k in ("jet_mass", "jet_mass_hat", "jet_pt")
        )
    else:
        mass, mass_hat, pt = (physics.jet_mass(t), physics.jet_mass(th), physics.jet_pt(t))
        mass, mass_hat, pt = (v.detach().cpu().numpy() for v in (mass, mass_hat, pt))
    with np.errstate(divide="ignore", invalid="ignore"):  # an empty jet: 0 / 0, judged as failing
        mass_err = np.nan_to_num(np.abs(mass_hat - mass) / np.maximum(mass, pt * PITCH), nan=np.inf)
    out = {
        "rel_l2": rel <= Q2_REL_L2,
        "sums": np.all(np.abs(s_hat - s) <= Q2_SUM_REL * scale, axis=-1),
        "mass": mass_err <= Q2_MASS_REL,
        "rel_l2_value": rel,
        "mass_err": mass_err,
    }
    out["Q2"] = out["rel_l2"] & out["sums"] & out["mass"]
    return out


def levels_met(x_hat, x, levels: Sequence[str] = ("Q1", "Q2"), rel_l2=None, zs=None) -> dict[str, np.ndarray]:
    """Which jets meet each of ``levels``, the cheap way: (B, H, W, 3) twice (numpy or torch, GeV) ->
    {level: (B,) bool}, equal to :func:`quality_levels`.

    A cheap necessary condition selects the candidates first (Q1: psnr >= 55 dB; Q2: rel_l2 <= 0.05),
    and the full predicate is evaluated on those only; Q2 computes only rel_l2 (or takes ``rel_l2``
    (B,) given), the channel totals and the jet mass, never SSIM; Q2p (:func:`q2p`, with the
    zero-suppression levels ``zs`` (3,), default those of these originals) computes its cone
    observables only where the cheap conditions hold. Early stopping, the benchmarks and
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
        elif level == "Q2p":  # the cheap conditions first, the cone observables where they hold
            rel = rel_l2 if rel_l2 is not None else image_rel_l2(th, t)
            rel = torch.nan_to_num(torch.as_tensor(rel, dtype=torch.float64).cpu(), nan=math.inf).numpy()
            cand = np.flatnonzero(rel <= Q2_REL_L2)
            if cand.size:
                met[cand] = q2p(th[cand], t[cand], levels=zs, lazy=True, rel_l2=rel[cand])["Q2p"]
        else:
            raise ConfigError(f"unknown quality level {level!r}; known: Q1, Q2, Q2p")
        out[level] = met
    return out


def _np(v) -> np.ndarray:
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)


def q2p(
    x_hat,
    x,
    *,
    levels=None,
    lazy: bool = True,
    cone_r: float = substructure.CONE_R,
    rel_l2=None,
) -> dict[str, np.ndarray]:
    """The physics quality level Q2p per jet (module docstring): (B, H, W, 3) twice (or one image) ->
    dict of numpy arrays (B,): ``Q2p`` and the conditions (see the module docstring for each)
    ``rel_l2``, ``sums``, ``mass``, ``Q2``,
    ``off_support``, ``floor``, ``counts``, ``cone_mass``, ``cone_girth``, ``cone_e2`` (bool),
    ``evaluated`` (bool: the cone conditions were computed), and the values behind them:
    ``rel_l2_value``, ``mass_err``, ``off_support_abs``, ``floor_max_{ecal,hcal,tracks}`` (largest
    x_hat over the channel's floor pixels), ``count_rel_err_{ecal,hcal,tracks}``,
    ``cone_{mass,girth,e2}_rel_err`` (nan where not evaluated)."""
    th, t = to_torch(x_hat), to_torch(x)
    if t.ndim == 3:
        th, t = th[None], t[None]
    check_pair(th, t)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise DataError(f"q2p: expected (B, H, W, 3) images, got shape {tuple(t.shape)}")
    lv = zero_suppression_levels(t) if levels is None else to_torch(levels).reshape(-1)
    lv = substructure._levels(lv, 3, t.device)
    b = t.shape[0]
    out: dict[str, np.ndarray] = {}
    out.update(q2_conditions(th, t, None if rel_l2 is None else {"rel_l2": rel_l2}))
    # support, floor, counts
    off = _np(physics.off_support(th, t)[1])
    out["off_support_abs"] = off
    out["off_support"] = np.nan_to_num(off, nan=np.inf) <= Q2P_OFF_SUPPORT
    empty = t == 0
    floor_max = torch.where(empty, th, torch.full_like(th, -torch.inf)).amax(dim=(1, 2))  # (B, 3)
    out["floor"] = _np((floor_max < lv).all(-1))
    n = (t >= lv).sum(dim=(1, 2))
    n_hat = (th >= lv).sum(dim=(1, 2))
    out["counts"] = _np((torch.abs(n_hat - n) <= Q2P_COUNT_REL * n).all(-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        count_err = _np(n_hat - n).astype(np.float64) / _np(n)
    for c, cname in enumerate(CHANNELS):
        out[f"floor_max_{cname.lower()}"] = _np(floor_max[:, c])
        out[f"count_rel_err_{cname.lower()}"] = count_err[:, c]
    cheap = out["Q2"] & out["off_support"] & out["floor"] & out["counts"]
    todo = cheap if lazy else np.ones(b, dtype=bool)
    names = ("mass", "girth", "e2")
    for name in names:
        out[f"cone_{name}_rel_err"] = np.full(b, np.nan)
        out[f"cone_{name}"] = np.zeros(b, dtype=bool)
    if todo.any():
        sel = torch.as_tensor(np.nonzero(todo)[0], device=t.device)
        kw = dict(groups=("calo",), regions=("cone",), names=names, cone_r=cone_r)
        o, oh = substructure.substructure(t[sel], lv, **kw), substructure.substructure(th[sel], lv, **kw)
        for name in names:
            v, vh = _np(o[f"calo_cone_{name}"]), _np(oh[f"calo_cone_{name}"])
            with np.errstate(divide="ignore", invalid="ignore"):
                out[f"cone_{name}_rel_err"][todo] = (vh - v) / v
            out[f"cone_{name}"][todo] = np.abs(vh - v) <= Q2P_CONE_REL * np.abs(v)  # nan: False
    out["evaluated"] = todo
    out["Q2p"] = cheap & out["cone_mass"] & out["cone_girth"] & out["cone_e2"]
    return out
