"""Physics figures of a run: original vs reconstruction distributions of the substructure observables
(with ratio panels) and the quark/gluon taggers' ROC curves (:mod:`inr_fast.metrics.fidelity`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.lines import Line2D

from inr_fast.errors import DataError
from inr_fast.metrics.fidelity import CLASSES, _np
from inr_fast.report.plots import new_figure

RATIO_RANGE = (0.5, 1.5)

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
    2 sqrt(jets in the smaller class), between 10 and 40. Returns the Figure."""
    names = [n for n in (FIGURE_OBSERVABLES if names is None else names) if n in obs and n in obs_hat]
    if not names:
        raise DataError("distribution_figure: none of the requested observables are in both dicts")
    y = np.asarray(labels)
    if n_bins is None:
        smallest = min(int((y == value).sum()) for value in classes)
        n_bins = int(np.clip(2 * math.sqrt(smallest), 10, 40))
    nrows = math.ceil(len(names) / ncols)
    fig = new_figure(4.2 * ncols, 4.0 * nrows, layout="constrained")
    grid = fig.add_gridspec(nrows, ncols)
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
    for j, cname in enumerate(classes.values()):
        col = colours.get(j, f"C{j}")
        handles.append(Line2D([], [], color=col, linestyle="-", label=f"{cname}, original"))
        handles.append(Line2D([], [], color=col, linestyle="--", label=f"{cname}, reconstruction"))
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), fontsize=9, frameon=False)
    return fig


def roc_figure(results: Mapping[str, Mapping], *, positive: str = "quark", negative: str = "gluon"):
    """ROC curves of each tagger of :func:`tagger_fidelity` on originals (solid) and reconstructions
    (dashed): ``negative``-class rejection 1 / fpr (log) against the ``positive``-class efficiency tpr,
    AUCs, dAUC and class flips in the legend. Returns the matplotlib Figure."""
    fig = new_figure(5.5, 4.5, layout="constrained")
    ax = fig.subplots()
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
