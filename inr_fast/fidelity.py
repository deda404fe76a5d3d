"""Physics fidelity of reconstructions: observable biases and resolutions, distributions, quark/gluon
taggers trained on the original jets, and the physics quality level Q2p (pure functions).

Conventions: images (B, H, W, 3) in GeV, channels last, as :mod:`inr_fast.observables`; observables
from :func:`inr_fast.substructure.substructure`, computed for the original x and the reconstruction
x_hat with the SAME zero-suppression levels (those of the originals). Labels are used as given: the
positive class of every AUC and ROC curve is ``positive`` (default :data:`inr_fast.layout.QUARK` = 1,
what our files write; the public file's convention is not certain, so pass it where it differs).

Observable errors (:func:`observable_errors`)
    Signed relative error (value(x_hat) - value(x)) / value(x) for every observable, except those in
    :data:`ABSOLUTE_OBSERVABLES` (the HCAL within-tower variation, exactly 0 in the data), whose error
    is the difference value(x_hat) - value(x). 0/0 (both zero, e.g. an empty Tracks cone) is nan and
    means agreement; x/0 is +-inf.

Fidelity table (:func:`fidelity_table`), per observable and class (quark, gluon, all):
    ``bias`` = median of the error; ``res68`` = half the width of its central 68 % interval,
    (q84 - q16) / 2; ``frac_out`` = fraction of jets with |error| > ``tolerance`` (2 %). Jets whose
    error is nan (0/0) are left out of bias and res68 (``n_undefined`` counts them) and count as inside;
    +-inf counts as outside and enters the quantiles as +-inf.

Taggers (:func:`tagger_fidelity`)
    Trained on ORIGINAL jets only, applied to originals and reconstructions of held-out jets:
    k-fold cross-fitting (folds stratified by label, drawn from ``seed``), so every jet is scored by a
    model that did not see it, once as original and once as reconstruction.
    (a) ``bdt``: scikit-learn's HistGradientBoostingClassifier on the observables of
        :func:`tagger_features` (every observable of ``substructure``, multiplicities included, except
        the within-tower variation); nan / inf features are passed as missing values (nan).
    (b) ``cnn``: :class:`SmallCNN` on log-scaled images ``sign(E) log1p(|E| / 0.01 GeV)`` (= the usual
        log1p(E / 0.01 GeV) on the non-negative originals; the sign keeps a reconstruction's negative
        pixels finite), channels first.
    Reported: ``auc`` (originals), ``auc_hat`` (reconstructions), ``dauc`` = auc_hat - auc with ``dauc_err``,
    the standard deviation of dauc over a paired bootstrap (the same resampled jets for both; ``n_boot``
    resamples from ``seed``) and its central 68 % interval, and ``flip_frac``: the fraction of jets whose
    decision changes, deciding "positive" when score > threshold, with the threshold the median of the
    originals' scores (a balanced working point that needs no calibration) or a given number (e.g. 0.5).
    AUC = the Mann-Whitney statistic with tied scores counted one half, equal to
    ``sklearn.metrics.roc_auc_score``. Deterministic for a given seed (and thread count).

Q2p (:func:`q2p`), the physics quality level, per jet:
    Q2 (:func:`inr_fast.metrics.quality_levels`: rel_l2 <= 0.05, every channel's total within 1 %,
    window jet mass within 2 %) and
    - ``off_support``: absolute off-support energy sum |x_hat| over pixels where x = 0, ECAL + HCAL, at
      most 1 % of the original calorimeter total (:func:`inr_fast.observables.off_support`);
    - ``floor``: no floor pixel (x = 0 in that channel) with x_hat >= the channel's zero-suppression
      level (it would survive the detector's own suppression; negative floor pixels do not, and are
      bounded by ``off_support``);
    - ``counts``: per channel, the number of pixels at or above the level, |n(x_hat) - n(x)| <= 2 % of
      n(x) (an empty channel must stay empty);
    - ``cone_mass``, ``cone_girth``, ``cone_e2``: the calorimeter (ECAL + HCAL) cone observables of
      :mod:`inr_fast.substructure` (R < 0.4 around the image centre) within 1 % per jet,
      |v(x_hat) - v(x)| <= 0.01 |v(x)| (so a value 0 must stay 0; nan, an empty cone, fails).
    The zero-suppression levels default to :func:`inr_fast.substructure.zero_suppression_levels` of
    the given originals; pass the whole file's levels so that every batch is judged alike. With
    ``lazy=True`` (early stopping), the cone observables are computed only for the jets that pass every
    other condition; the others get False there and ``evaluated`` False.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from . import metrics, observables
from . import substructure as sub
from .errors import DataError, InrFastError
from .layout import CHANNELS, GLUON, QUARK
from .observables import _check_pair, _to_torch

#: observables whose error is a difference, not a ratio (their original value is 0)
ABSOLUTE_OBSERVABLES = ("hcal_cone_tower_var", "hcal_window_tower_var")
TOLERANCE = 0.02
CLASSES: dict[int, str] = {QUARK: "quark", GLUON: "gluon"}
#: reference energy of the CNN's log scale (GeV)
CNN_E0 = 0.01
Q2P_OFF_SUPPORT = 0.01
Q2P_COUNT_REL = 0.02
Q2P_CONE_REL = 0.01


# --------------------------------------------------------------------------------------------------
# Observable errors and the fidelity table
# --------------------------------------------------------------------------------------------------
def _np(v) -> np.ndarray:
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)


def observable_errors(
    obs: Mapping[str, np.ndarray], obs_hat: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Per-jet error of every observable present in both dicts (module docstring): (B,) each -> (B,)
    float64, relative except for :data:`ABSOLUTE_OBSERVABLES`."""
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in obs:
            if k not in obs_hat:
                continue
            a, b = _np(obs_hat[k]).astype(np.float64), _np(obs[k]).astype(np.float64)
            if a.shape != b.shape:
                raise DataError(f"observable {k!r}: shapes {a.shape} (reconstruction) and {b.shape} differ")
            out[k] = a - b if k in ABSOLUTE_OBSERVABLES else (a - b) / b
    return out


def error_summary(err: np.ndarray, tolerance: float = TOLERANCE) -> dict[str, float]:
    """bias, res68, frac_out, n, n_undefined of one observable's per-jet errors (B,) (module docstring)."""
    err = np.asarray(err, dtype=np.float64)
    defined = err[~np.isnan(err)]
    if defined.size:
        with np.errstate(invalid="ignore"):
            q = np.quantile(defined, [0.16, 0.5, 0.84], method="linear")
            # interpolating between two infinities gives nan: take the nearest order statistic there
            q = np.where(np.isnan(q), np.quantile(defined, [0.16, 0.5, 0.84], method="nearest"), q)
            q16, q50, q84 = q
            res = 0.5 * (q84 - q16)
    else:
        q50 = res = float("nan")
    outside = np.abs(defined) > tolerance
    return {
        "bias": float(q50),
        "res68": float(res),
        "frac_out": float(outside.sum() / err.size) if err.size else float("nan"),
        "n": int(err.size),
        "n_undefined": int(err.size - defined.size),
    }


def fidelity_table(
    obs: Mapping[str, np.ndarray],
    obs_hat: Mapping[str, np.ndarray],
    labels,
    *,
    tolerance: float = TOLERANCE,
    classes: Mapping[int, str] = CLASSES,
    names: Sequence[str] | None = None,
) -> list[dict]:
    """One row per (observable, class) with :func:`error_summary` of the errors of
    :func:`observable_errors`: keys ``observable``, ``class`` ("quark", "gluon", "all"), ``bias``,
    ``res68``, ``frac_out``, ``n``, ``n_undefined``. labels (B,); ``names`` defaults to every observable."""
    err = observable_errors(obs, obs_hat)
    y = np.asarray(labels)
    rows = []
    for name in names if names is not None else list(err):
        if name not in err:
            raise DataError(f"fidelity_table: no observable {name!r}; known: {', '.join(err)}")
        e = err[name]
        if y.shape != e.shape:
            raise DataError(f"fidelity_table: labels of shape {y.shape} for {e.shape[0]} jets")
        for value, cname in list(classes.items()) + [(None, "all")]:
            sel = np.ones_like(y, dtype=bool) if value is None else y == value
            rows.append({"observable": name, "class": cname, **error_summary(e[sel], tolerance)})
    return rows


# --------------------------------------------------------------------------------------------------
# Distributions
# --------------------------------------------------------------------------------------------------
RATIO_RANGE = (0.5, 1.5)
#: a readable default set for the distribution figure
FIGURE_OBSERVABLES = (
    "calo_cone_pt",
    "calo_cone_mass",
    "calo_cone_girth",
    "calo_cone_ptd",
    "calo_cone_lead_frac",
    "calo_cone_e2",
    "calo_cone_c2",
    "calo_cone_tau21",
    "calo_cone_n_pos",
    "calo_cone_n_zs",
    "tracks_cone_n_pos",
    "tracks_cone_n_zs",
    "calo_window_mass",
    "tracks_cone_ptd",
    "hcal_window_tower_var",
    "hcal_window_n_zs",
)


def _bins(a: np.ndarray, b: np.ndarray, n_bins: int, integer: bool) -> tuple[np.ndarray, bool]:
    """Common bin edges over the central 99 % of both samples; log spacing when both are positive and
    span more than two decades."""
    both = np.concatenate([a[np.isfinite(a)], b[np.isfinite(b)]])
    if both.size == 0:
        return np.linspace(0, 1, n_bins + 1), False
    lo, hi = np.quantile(both, [0.005, 0.995])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    log = bool(lo > 0 and hi / lo > 100)
    if integer and not log:
        step = max(1.0, math.ceil((hi - lo + 1) / n_bins))
        return np.arange(math.floor(lo) - 0.5, math.ceil(hi) + step + 0.5, step), False
    if log:
        return np.geomspace(lo, hi, n_bins + 1), True
    return np.linspace(lo, hi, n_bins + 1), False


def distribution_figure(
    obs: Mapping[str, np.ndarray],
    obs_hat: Mapping[str, np.ndarray],
    labels,
    names: Sequence[str] | None = None,
    *,
    classes: Mapping[int, str] = CLASSES,
    n_bins: int | None = None,
    ncols: int = 4,
):
    """Original vs reconstruction distributions: one panel per observable with step histograms of the
    originals (solid) and reconstructions (dashed) per class, and below it the ratio reconstruction /
    original per bin (Poisson errors of the reconstruction's count; ratios outside 0.5-1.5 are drawn as
    triangles at the panel's edge). Values outside the central 99 % of
    both samples are drawn in the first / last bin (the panel says how many); log x where the values
    are positive and span more than two decades, log y where the counts do. ``n_bins`` defaults to
    2 sqrt(jets in the smaller class), between 10 and 40. Returns the matplotlib Figure (save it with
    ``fig.savefig``)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    names = [n for n in (FIGURE_OBSERVABLES if names is None else names) if n in obs and n in obs_hat]
    if not names:
        raise DataError("distribution_figure: none of the requested observables are in both dicts")
    y = np.asarray(labels)
    if n_bins is None:
        smallest = min(int((y == value).sum()) for value in classes)
        n_bins = int(np.clip(2 * math.sqrt(smallest), 10, 40))
    nrows = math.ceil(len(names) / ncols)
    fig = plt.figure(figsize=(4.2 * ncols, 4.0 * nrows), layout="constrained")
    grid = GridSpec(nrows, ncols, figure=fig)
    colours = {0: "tab:blue", 1: "tab:red", 2: "tab:green"}
    for i, name in enumerate(names):
        cell = grid[i // ncols, i % ncols].subgridspec(2, 1, height_ratios=(3, 1), hspace=0.05)
        ax, rx = fig.add_subplot(cell[0]), fig.add_subplot(cell[1])
        a, b = _np(obs[name]).astype(np.float64), _np(obs_hat[name]).astype(np.float64)
        integer = np.issubdtype(_np(obs[name]).dtype, np.integer)
        edges, logx = _bins(a, b, n_bins, integer)
        centres = np.sqrt(edges[1:] * edges[:-1]) if logx else 0.5 * (edges[1:] + edges[:-1])
        clipped = 0
        peak = 0.0
        for j, value in enumerate(classes):
            sel = y == value
            col = colours.get(j, f"C{j}")
            counts = []
            for data, style in ((a[sel], "-"), (b[sel], "--")):
                d = data[np.isfinite(data)]
                clipped += int(((d < edges[0]) | (d > edges[-1])).sum())
                h, _ = np.histogram(np.clip(d, edges[0], edges[-1]), edges)
                counts.append(h)
                peak = max(peak, h.max(initial=0))
                ax.stairs(h, edges, color=col, linestyle=style, linewidth=1.4)
            h0, h1 = counts
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = h1 / h0
                err = np.sqrt(h1) / h0
            ok = (h0 > 0) & (ratio >= RATIO_RANGE[0]) & (ratio <= RATIO_RANGE[1])
            rx.errorbar(centres[ok], ratio[ok], yerr=err[ok], fmt="o", ms=2.5, color=col, lw=0.8)
            for side, marker in ((0, "v"), (1, "^")):  # ratios off the panel: a triangle at its edge
                off = (h0 > 0) & ((ratio < RATIO_RANGE[0]) if side == 0 else (ratio > RATIO_RANGE[1]))
                rx.plot(
                    centres[off], np.full(off.sum(), RATIO_RANGE[side]), marker, ms=4, color=col, ls="none"
                )
        ax.set_title(name, fontsize=9)
        if peak > 0:
            nz = [np.histogram(np.clip(d[np.isfinite(d)], edges[0], edges[-1]), edges)[0] for d in (a, b)]
            positive = np.concatenate(nz)
            positive = positive[positive > 0]
            if positive.size and positive.max() / positive.min() > 100:
                ax.set_yscale("log")
        if clipped:
            ax.text(
                0.98,
                0.95,
                f"{clipped} in edge bins",
                ha="right",
                va="top",
                fontsize=7,
                transform=ax.transAxes,
            )
        ax.set_ylabel("jets", fontsize=8)
        rx.axhline(1.0, color="grey", lw=0.8)
        rx.set_ylim(RATIO_RANGE[0] - 0.05, RATIO_RANGE[1] + 0.05)
        rx.set_ylabel("reco / orig", fontsize=7)
        for axis in (ax, rx):
            axis.set_xlim(edges[0], edges[-1])
            if logx:
                axis.set_xscale("log")
            axis.tick_params(labelsize=7)
        ax.tick_params(labelbottom=False)
    handles = []
    from matplotlib.lines import Line2D

    for j, cname in enumerate(classes.values()):
        col = colours.get(j, f"C{j}")
        handles.append(Line2D([], [], color=col, linestyle="-", label=f"{cname}, original"))
        handles.append(Line2D([], [], color=col, linestyle="--", label=f"{cname}, reconstruction"))
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), fontsize=9, frameon=False)
    return fig


# --------------------------------------------------------------------------------------------------
# AUC, ROC, bootstrap comparison
# --------------------------------------------------------------------------------------------------
def _ranks(s: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) along the last axis, ties sharing their mean rank."""
    from scipy.stats import rankdata

    return rankdata(s, axis=-1, method="average")


def auc(scores, labels, positive: int = QUARK):
    """Area under the ROC curve of ``scores`` for ``labels == positive``, the Mann-Whitney statistic with
    ties counted one half: (B,) -> float; (R, B) -> (R,) (one AUC per row). nan when a class is absent."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(labels) == positive
    if pos.shape != s.shape[-1:]:
        raise DataError(f"auc: {s.shape[-1]} scores for {pos.shape} labels")
    n1, n0 = pos.sum(), (~pos).sum()
    if n1 == 0 or n0 == 0:
        return float("nan") if s.ndim == 1 else np.full(s.shape[0], np.nan)
    r = _ranks(s)
    out = (r[..., pos].sum(-1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return float(out) if s.ndim == 1 else out


def roc_curve(scores, labels, positive: int = QUARK) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates (fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1)."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(labels) == positive
    order = np.argsort(-s, kind="stable")
    s, pos = s[order], pos[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # the last index of each distinct score
    tp = np.cumsum(pos)[last]
    fp = np.cumsum(~pos)[last]
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def compare_scores(
    scores,
    scores_hat,
    labels,
    *,
    positive: int = QUARK,
    n_boot: int = 1000,
    seed: int = 0,
    threshold: str | float = "median",
) -> dict[str, float]:
    """AUC of a tagger on originals and reconstructions of the same jets (B,) and their paired
    bootstrap (module docstring): ``auc``, ``auc_hat``, ``dauc``, ``dauc_err``, ``dauc_lo``, ``dauc_hi``
    (central 68 % of the bootstrap), ``flip_frac``, ``threshold``, ``n``."""
    s, sh = np.asarray(scores, dtype=np.float64), np.asarray(scores_hat, dtype=np.float64)
    y = np.asarray(labels)
    if not (s.shape == sh.shape == y.shape) or s.ndim != 1:
        raise DataError(f"compare_scores: shapes {s.shape}, {sh.shape}, {y.shape} must be equal (B,)")
    a, ah = auc(s, y, positive), auc(sh, y, positive)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, s.size, size=(n_boot, s.size))
    yb = y[idx]
    # one AUC per resample: rank each row; resamples with a single class give nan and are dropped
    pos = yb == positive
    n1, n0 = pos.sum(1), (~pos).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ab = ((_ranks(s[idx]) * pos).sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)
        ahb = ((_ranks(sh[idx]) * pos).sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    d = (ahb - ab)[(n1 > 0) & (n0 > 0)]
    if threshold == "median":
        thr = float(np.median(s))
    elif isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        thr = float(threshold)
    else:
        raise DataError(f"compare_scores: threshold must be 'median' or a number, got {threshold!r}")
    lo, hi = np.quantile(d, [0.16, 0.84]) if d.size else (float("nan"), float("nan"))
    return {
        "auc": a,
        "auc_hat": ah,
        "dauc": ah - a,
        "dauc_err": float(d.std(ddof=1)) if d.size > 1 else float("nan"),
        "dauc_lo": float(lo),
        "dauc_hi": float(hi),
        "flip_frac": float(((s > thr) != (sh > thr)).mean()),
        "threshold": thr,
        "n": int(s.size),
    }


# --------------------------------------------------------------------------------------------------
# Taggers
# --------------------------------------------------------------------------------------------------
def tagger_features(
    obs: Mapping[str, np.ndarray], names: Sequence[str] | None = None
) -> tuple[np.ndarray, list]:
    """Feature matrix (B, F) float64 of the observables ``names`` (default: every key of ``obs`` except
    the within-tower variations), non-finite values as nan (missing), and the names used."""
    names = [k for k in obs if k not in ABSOLUTE_OBSERVABLES] if names is None else list(names)
    missing = [k for k in names if k not in obs]
    if missing:
        raise DataError(f"tagger_features: no observable(s) {missing}")
    f = np.stack([_np(obs[k]).astype(np.float64) for k in names], axis=-1)
    return np.where(np.isfinite(f), f, np.nan), names


def _bdt():
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise InrFastError(
            "the observable tagger needs scikit-learn: pip install 'inr_fast[physics]'"
        ) from exc
    return HistGradientBoostingClassifier


def train_bdt(features, labels, *, positive: int = QUARK, seed: int = 0, max_iter: int = 200, **kwargs):
    """HistGradientBoostingClassifier on features (B, F) for ``labels == positive``; deterministic
    (``random_state=seed``, no early stopping). Extra keyword arguments go to the classifier."""
    cls = _bdt()
    model = cls(max_iter=max_iter, early_stopping=False, random_state=seed, **kwargs)
    return model.fit(np.asarray(features), (np.asarray(labels) == positive).astype(int))


def bdt_scores(model, features) -> np.ndarray:
    """Probability of the positive class: (B, F) -> (B,)."""
    return model.predict_proba(np.asarray(features))[:, 1]


def cnn_inputs(images, e0: float = CNN_E0) -> torch.Tensor:
    """Log-scaled CNN input sign(E) log1p(|E| / e0), channels first, float32: (B, H, W, C) -> (B, C, H, W)."""
    t = _to_torch(images)
    observables._check_image(t)
    return (torch.sign(t) * torch.log1p(t.abs() / e0)).permute(0, 3, 1, 2).to(torch.float32).contiguous()


class SmallCNN(torch.nn.Module):
    """A small jet-image CNN: a 5 x 5 convolution with stride 5 (one output per HCAL tower, 8 maps), a
    3 x 3 convolution (16 maps), 5 x 5 max pooling, two linear layers (32 hidden) -> one logit.
    Input (B, 3, 125, 125) from :func:`cnn_inputs` (any H, W divisible by 25)."""

    def __init__(self, channels: int = 3, size: int = 125, scale: float = 10.0) -> None:
        super().__init__()
        self.scale = scale
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(channels, 8, 5, stride=5),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(5),
            torch.nn.Flatten(),
        )
        n = 16 * (size // 25) ** 2
        self.head = torch.nn.Sequential(torch.nn.Linear(n, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x / self.scale)).squeeze(-1)


def train_cnn(
    inputs: torch.Tensor,
    labels,
    *,
    positive: int = QUARK,
    seed: int = 0,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    device: str | torch.device = "cpu",
) -> SmallCNN:
    """Train :class:`SmallCNN` on inputs (B, C, H, W) (from :func:`cnn_inputs`) for ``labels == positive``
    with Adam and the binary cross-entropy; initialisation and batch order from ``seed`` (the global
    torch RNG is left untouched)."""
    x = inputs.to(device)
    y = torch.as_tensor(np.asarray(labels) == positive, dtype=torch.float32, device=device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallCNN(x.shape[1], x.shape[-1]).to(device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen).to(device)
        for i in range(0, x.shape[0], batch_size):
            idx = order[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    return model.eval()


def cnn_scores(model: SmallCNN, inputs: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Sigmoid of the CNN's logit: (B, C, H, W) -> (B,) float64."""
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, inputs.shape[0], batch_size):
            out.append(torch.sigmoid(model(inputs[i : i + batch_size].to(device))).double().cpu())
    return torch.cat(out).numpy()


def folds(labels, n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold index (B,) in [0, n_folds): each label's jets shuffled by ``seed`` and dealt in turn."""
    y = np.asarray(labels)
    if n_folds < 2:
        raise DataError(f"folds: n_folds must be >= 2, got {n_folds}")
    out = np.empty(y.shape[0], dtype=np.int64)
    rng = np.random.default_rng(seed)
    for value in np.unique(y):
        idx = np.nonzero(y == value)[0]
        out[rng.permutation(idx)] = np.arange(idx.size) % n_folds
    return out


def cross_fit(train, score, inputs, inputs_hat, labels, *, n_folds: int = 5, seed: int = 0):
    """Out-of-fold scores of a tagger trained on originals: ``train(inputs[sel], labels[sel], seed)`` ->
    model, ``score(model, inputs[sel])`` -> scores. Returns (scores, scores_hat), each (B,)."""
    y = np.asarray(labels)
    f = folds(y, n_folds, seed)
    s, sh = np.empty(y.shape[0]), np.empty(y.shape[0])
    for k in range(n_folds):
        test = f == k
        model = train(inputs[~test], y[~test], seed + k)
        s[test] = score(model, inputs[test])
        sh[test] = score(model, inputs_hat[test])
    return s, sh


def tagger_fidelity(
    x,
    x_hat,
    labels,
    *,
    obs: Mapping[str, np.ndarray] | None = None,
    obs_hat: Mapping[str, np.ndarray] | None = None,
    levels=None,
    taggers: Sequence[str] = ("bdt", "cnn"),
    positive: int = QUARK,
    n_folds: int = 5,
    seed: int = 0,
    cnn_epochs: int = 20,
    bdt_iter: int = 200,
    n_boot: int = 1000,
    threshold: str | float = "median",
    device: str | torch.device = "cpu",
) -> dict[str, dict]:
    """Both taggers, trained on the original jets x (B, H, W, 3) and applied to x and x_hat by
    cross-fitting (module docstring). ``obs`` / ``obs_hat``: :func:`inr_fast.substructure.substructure`
    of x and x_hat (computed here with ``levels`` if not given). Returns ``{tagger: {**compare_scores,
    "scores": (B,), "scores_hat": (B,), "roc": (fpr, tpr), "roc_hat": (fpr, tpr)}}``."""
    y = np.asarray(labels)
    out: dict[str, dict] = {}
    for name in taggers:
        if name == "bdt":
            if obs is None or obs_hat is None:
                lv = sub.zero_suppression_levels(x) if levels is None else levels
                obs = sub.substructure(np.asarray(x), lv) if obs is None else obs
                obs_hat = sub.substructure(np.asarray(x_hat), lv) if obs_hat is None else obs_hat
            f, names = tagger_features(obs)
            fh, _ = tagger_features(obs_hat, names)
            s, sh = cross_fit(
                lambda a, b, k: train_bdt(a, b, positive=positive, seed=k, max_iter=bdt_iter),
                bdt_scores,
                f,
                fh,
                y,
                n_folds=n_folds,
                seed=seed,
            )
        elif name == "cnn":
            s, sh = cross_fit(
                lambda a, b, k: train_cnn(a, b, positive=positive, seed=k, epochs=cnn_epochs, device=device),
                cnn_scores,
                cnn_inputs(x),
                cnn_inputs(x_hat),
                y,
                n_folds=n_folds,
                seed=seed,
            )
        else:
            raise DataError(f"tagger_fidelity: unknown tagger {name!r}; known: bdt, cnn")
        res = compare_scores(s, sh, y, positive=positive, n_boot=n_boot, seed=seed, threshold=threshold)
        res.update(scores=s, scores_hat=sh, roc=roc_curve(s, y, positive), roc_hat=roc_curve(sh, y, positive))
        out[name] = res
    return out


def roc_figure(results: Mapping[str, Mapping], *, positive: str = "quark", negative: str = "gluon"):
    """ROC curves of each tagger of :func:`tagger_fidelity` on originals (solid) and reconstructions
    (dashed): ``negative``-class rejection 1 / fpr (log) against the ``positive``-class efficiency tpr,
    AUCs, dAUC and class flips in the legend. Returns the matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5), layout="constrained")
    for i, (name, r) in enumerate(results.items()):
        for key, style, what in (("roc", "-", "original"), ("roc_hat", "--", "reconstruction")):
            fpr, tpr = r[key]
            ok = fpr > 0
            a = r["auc"] if key == "roc" else r["auc_hat"]
            ax.plot(tpr[ok], 1 / fpr[ok], style, color=f"C{i}", label=f"{name} {what}: AUC {a:.3f}")
        ax.plot(
            [],
            [],
            " ",
            label=f"{name}: dAUC {r['dauc']:+.3f} ± {r['dauc_err']:.3f}, flips {r['flip_frac']:.1%}",
        )
    ax.set_yscale("log")
    ax.set_xlabel(f"{positive} efficiency")
    ax.set_ylabel(f"{negative} rejection (1 / false-positive rate)")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=7)
    return fig


# --------------------------------------------------------------------------------------------------
# Q2p
# --------------------------------------------------------------------------------------------------
def q2p(
    x_hat,
    x,
    *,
    levels=None,
    lazy: bool = True,
    cone_r: float = sub.CONE_R,
) -> dict[str, np.ndarray]:
    """The physics quality level Q2p per jet (module docstring): (B, H, W, 3) twice (or one image) ->
    dict of numpy arrays (B,): ``Q2p`` and the conditions ``rel_l2``, ``sums``, ``mass``, ``Q2``,
    ``off_support``, ``floor``, ``counts``, ``cone_mass``, ``cone_girth``, ``cone_e2`` (bool),
    ``evaluated`` (bool: the cone conditions were computed), and the values behind them:
    ``rel_l2_value``, ``mass_rel_err``, ``off_support_abs``, ``floor_max_{ecal,hcal,tracks}`` (largest
    x_hat over the channel's floor pixels), ``count_rel_err_{ecal,hcal,tracks}``,
    ``cone_{mass,girth,e2}_rel_err`` (nan where not evaluated)."""
    th, t = _to_torch(x_hat), _to_torch(x)
    if t.ndim == 3:
        th, t = th[None], t[None]
    _check_pair(th, t)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise DataError(f"q2p: expected (B, H, W, 3) images, got shape {tuple(t.shape)}")
    lv = sub.zero_suppression_levels(t) if levels is None else _to_torch(levels).reshape(-1)
    lv = sub._levels(lv, 3, t.device)
    b = t.shape[0]
    out: dict[str, np.ndarray] = {}
    # Q2 (metrics.quality_levels without SSIM/PSNR)
    rl2 = _np(metrics.rel_l2(th, t))
    s_hat, s = _np(th.sum(dim=(1, 2))), _np(t.sum(dim=(1, 2)))
    scale = np.where(s != 0, np.abs(s), np.abs(s).sum(-1, keepdims=True))
    mass_err = _np(observables.jet_mass_rel_err(th, t))
    out["rel_l2"] = np.nan_to_num(rl2, nan=np.inf) <= metrics.Q2_REL_L2
    out["sums"] = np.all(np.abs(s_hat - s) <= metrics.Q2_SUM_REL * scale, axis=-1)
    out["mass"] = np.nan_to_num(np.abs(mass_err), nan=np.inf) <= metrics.Q2_MASS_REL
    out["Q2"] = out["rel_l2"] & out["sums"] & out["mass"]
    out["rel_l2_value"], out["mass_rel_err"] = rl2, mass_err
    # support, floor, counts
    off = _np(observables.off_support(th, t)[1])
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
        o, oh = sub.substructure(t[sel], lv, **kw), sub.substructure(th[sel], lv, **kw)
        for name in names:
            v, vh = _np(o[f"calo_cone_{name}"]), _np(oh[f"calo_cone_{name}"])
            with np.errstate(divide="ignore", invalid="ignore"):
                out[f"cone_{name}_rel_err"][todo] = (vh - v) / v
            out[f"cone_{name}"][todo] = np.abs(vh - v) <= Q2P_CONE_REL * np.abs(v)  # nan: False
    out["evaluated"] = todo
    out["Q2p"] = cheap & out["cone_mass"] & out["cone_girth"] & out["cone_e2"]
    return out
