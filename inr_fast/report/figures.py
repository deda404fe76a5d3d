"""Figures of a fitted run for ``inr-fast report``: loss curves, metric distributions, original vs
reconstruction vs residual, super-resolved renders.

Every function is pure (arrays in, a :class:`matplotlib.figure.Figure` out, Agg canvas, never
``show()``) and builds on :mod:`inr_fast.report.plots` (:func:`~inr_fast.report.plots.new_figure`,
:func:`~inr_fast.report.plots.draw_jet_panel`, :func:`~inr_fast.report.plots.jet_log_norm`). Images are
channels-last
(H, W, 3) in GeV, axis 0 = delta-eta rows, axis 1 = delta-phi columns, on physical axes of pitch
:data:`inr_fast.layout.PITCH` (scaled by 125 / P for a P x P render).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.colors import SymLogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from inr_fast.errors import DataError
from inr_fast.layout import CHANNELS, IMAGE_SIZE, N_CHANNELS, PITCH, label_name
from inr_fast.report.plots import draw_jet_panel, jet_extent, jet_figure, jet_log_norm, new_figure

__all__ = [
    "DISTRIBUTION_METRICS",
    "curve_band",
    "plot_compare_residuals",
    "plot_distributions",
    "plot_loss_curves",
    "plot_superres",
    "residual_norm",
    "residual_ticks",
]

LABEL_COLOURS = {1: "tab:blue", 0: "tab:orange"}
#: (metrics.csv column, axis label, scale factor) of the distribution panels; factor -1 draws 1 - value
#: on a log axis (SSIM: all values crowd below 1).
DISTRIBUTION_METRICS: tuple[tuple[str, str, float], ...] = (
    ("psnr_gain", "PSNR gain over the zero image [dB]", 1.0),
    ("rel_l2", r"relative $L_2$ error", 1.0),
    ("ssim", "1 - SSIM (log scale)", -1.0),
    ("jet_pt_rel_err", r"jet $p_T$ error [%]", 100.0),
    ("sum_rel_err_ecal", "ECAL energy error [%]", 100.0),
    ("sum_rel_err_hcal", "HCAL energy error [%]", 100.0),
    ("sum_rel_err_tracks", r"Tracks $p_T$ sum error [%]", 100.0),
    ("jet_mass_rel_err", "jet mass error [%]", 100.0),
)
RESIDUAL_CMAP = "RdBu_r"


# ------------------------------------------------------------------------------------------ curves


def curve_band(histories: np.ndarray, quantiles: Sequence[float] = (0.16, 0.5, 0.84)) -> np.ndarray:
    """Per-step quantiles over jets of histories (k, S) with NaN where not recorded (a jet that stopped
    early has NaN after its last step): (len(quantiles), S), NaN at steps no jet recorded."""
    h = np.asarray(histories, dtype=np.float64)
    if h.ndim != 2:
        raise DataError(f"histories must be (jets, steps), got shape {h.shape}")
    out = np.full((len(quantiles), h.shape[1]), np.nan)
    seen = np.isfinite(h).any(axis=0)
    if seen.any():
        out[:, seen] = np.nanquantile(h[:, seen], list(quantiles), axis=0)
    return out


def _history_panel(ax, hist: np.ndarray, indices, max_jets: int, ylabel: str, title: str, logy: bool):
    steps = np.arange(1, hist.shape[1] + 1)
    for j in range(min(len(hist), max_jets)):
        ok = np.isfinite(hist[j])
        if ok.any():
            ax.plot(steps[ok], hist[j][ok], lw=0.7, alpha=0.45, label=f"jet {int(indices[j])}")
    lo, med, hi = curve_band(hist)
    ok = np.isfinite(med)
    if ok.any():
        ax.fill_between(steps[ok], lo[ok], hi[ok], color="k", alpha=0.15, lw=0, label="16-84 %")
        ax.plot(steps[ok], med[ok], color="k", lw=1.8, label=f"median of {len(hist)} jets")
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, which="both", lw=0.4)


def plot_loss_curves(
    loss_history: np.ndarray,
    psnr_history: np.ndarray,
    rel_l2_history: np.ndarray,
    indices: Sequence[int],
    max_jets: int = 20,
    target_psnr: float | None = None,
    target_rel_l2: float | None = None,
) -> Figure:
    """Training loss (normalised MSE per step), PSNR and relative L2 (original scale, where recorded),
    three panels: thin lines for the first ``max_jets`` jets, the per-step median over all jets given
    (jets still training at that step) and its 16-84 % band. Histories (k, S), NaN where not recorded."""
    fig = new_figure(15, 4.2, layout="constrained")
    axes = fig.subplots(1, 3)
    k = len(indices)
    _history_panel(axes[0], loss_history, indices, max_jets, "MSE (normalised)", "training loss", True)
    _history_panel(axes[1], psnr_history, indices, max_jets, "PSNR [dB]", "PSNR (original scale)", False)
    _history_panel(
        axes[2], rel_l2_history, indices, max_jets, r"relative $L_2$", "relative $L_2$ error", True
    )
    if target_psnr is not None:
        axes[1].axhline(target_psnr, color="tab:red", ls="--", lw=0.9, label="target")
    if target_rel_l2 is not None:
        axes[2].axhline(target_rel_l2, color="tab:red", ls="--", lw=0.9, label="target")
    handles, labels = axes[0].get_legend_handles_labels()
    if k > max_jets:  # only the band entries; the jets would crowd the legend
        keep = [i for i, lab in enumerate(labels) if not lab.startswith("jet ")]
        handles, labels = [handles[i] for i in keep], [labels[i] for i in keep]
    if handles:
        axes[0].legend(handles, labels, fontsize=7, loc="lower left")
    for ax in axes[1:]:
        if any(lab == "target" for lab in ax.get_legend_handles_labels()[1]):
            ax.legend([h for h, lab in zip(*ax.get_legend_handles_labels(), strict=True) if lab == "target"],
                      ["target"], fontsize=7)  # fmt: skip
    return fig


# ------------------------------------------------------------------------------------------ distributions


def plot_distributions(
    table: dict[str, np.ndarray],
    metrics: Sequence[tuple[str, str, float]] = DISTRIBUTION_METRICS,
    bins: int = 20,
) -> Figure:
    """Histograms of per-jet metrics split by label (quark = 1, gluon = 0, others by value), one panel
    per metric present in ``table`` (column name -> (k,) array, with ``label``); shared bins per panel,
    finite values only (the count of non-finite ones is noted in the panel)."""
    present = [m for m in metrics if m[0] in table]
    ncols = 4
    nrows = max(1, -(-len(present) // ncols))
    fig = new_figure(4.0 * ncols, 3.2 * nrows, layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    labels = np.asarray(table["label"]).astype(np.int64)
    for ax, (name, xlabel, factor) in zip(axes, present, strict=False):
        logx = factor == -1.0
        values = np.asarray(table[name], dtype=np.float64)
        values = np.where(1 - values > 0, 1 - values, np.nan) if logx else values * factor
        finite = np.isfinite(values)
        if finite.any():
            lo, hi = float(values[finite].min()), float(values[finite].max())
            if hi <= lo:
                lo, hi = (
                    (lo / 2, hi * 2) if logx else (lo - 0.5 * (abs(lo) or 1.0), hi + 0.5 * (abs(hi) or 1.0))
                )
            edges = np.geomspace(lo, hi, bins + 1) if logx else np.linspace(lo, hi, bins + 1)
            for lab in sorted(np.unique(labels), reverse=True):
                sel = finite & (labels == lab)
                if sel.any():
                    ax.hist(
                        values[sel],
                        bins=edges,
                        histtype="step",
                        lw=1.5,
                        color=LABEL_COLOURS.get(int(lab)),
                        label=f"{label_name(lab)} ({int(sel.sum())})",
                    )
            if factor not in (1.0, -1.0) and lo < 0 < hi:
                ax.axvline(0.0, color="0.5", lw=0.7)
            ax.legend(fontsize=7)
        if logx:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels crowd a sub-decade range
        else:  # few, plain tick labels: no offset text, powers of ten for tiny or huge ranges
            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useOffset=False, useMathText=True)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        bad = int((~finite).sum())
        if bad:
            ax.text(0.02, 0.95, f"{bad} non-finite", transform=ax.transAxes, fontsize=7, va="top")
        ax.set(xlabel=xlabel, ylabel="jets")
    for ax in axes[len(present) :]:
        ax.set_axis_off()
    return fig


# ------------------------------------------------------------------------------------------ images


def residual_norm(residual: np.ndarray, reference: np.ndarray) -> SymLogNorm:
    """A symmetric-log colour scale for a residual (H, W): symmetric about 0 up to max |residual|, linear
    within +-linthresh, linthresh = the smallest positive value of ``reference`` (the original channel)
    but at least 1e-3 of the limit (three decades of log scale on each side)."""
    r = np.asarray(residual, dtype=np.float64)
    vmax = float(np.abs(r).max()) if r.size else 0.0
    if not vmax > 0:
        vmax = 1e-3
    pos = np.asarray(reference)[np.asarray(reference) > 0]
    linthresh = max(float(pos.min()) if pos.size else vmax / 100, vmax * 1e-3)
    linthresh = min(linthresh, vmax / 10)
    return SymLogNorm(linthresh=linthresh, vmin=-vmax, vmax=vmax, base=10)


def residual_ticks(norm: SymLogNorm) -> list[float]:
    """Colour-bar ticks of a :func:`residual_norm`: 0 and +-10^k for the decades above 10 x linthresh
    (the crowded ticks inside the linear band left out), or +-vmax when no decade fits."""
    lo = int(np.ceil(np.log10(norm.linthresh * 10)))
    hi = int(np.floor(np.log10(norm.vmax)))
    decades = [10.0**k for k in range(lo, hi + 1)] or [float(norm.vmax)]
    return sorted([-d for d in decades] + [0.0] + decades)


def draw_residual_panel(ax, residual: np.ndarray, norm: SymLogNorm, title: str | None = None, pitch=PITCH):
    """Residual (H, W) = reconstruction - original on physical axes, diverging symmetric-log colours
    (red: too much energy, blue: missing energy). Returns the AxesImage."""
    im = ax.imshow(
        residual,
        origin="lower",
        extent=jet_extent(residual.shape, pitch),
        cmap=RESIDUAL_CMAP,
        norm=norm,
        interpolation="nearest",
    )
    ax.set_xlabel(r"$\Delta\phi$")
    ax.set_ylabel(r"$\Delta\eta$")
    if title:
        ax.set_title(title)
    cbar = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03, ticks=residual_ticks(norm), format="%.3g")
    cbar.set_label(r"$\hat{x} - x$ [GeV]")
    return im


def _check_images(images: np.ndarray, what: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != N_CHANNELS:
        raise DataError(f"{what}: expected (k, H, W, {N_CHANNELS}) images, got shape {images.shape}")
    return images


def plot_compare_residuals(
    originals: np.ndarray,
    recons: np.ndarray,
    indices: Sequence[int],
    captions: Sequence[str] | None = None,
) -> Figure:
    """For each jet, three rows (original, reconstruction, residual) by three channels (columns).

    originals, recons (k, H, W, 3) GeV. Original and reconstruction of a channel share one log colour
    scale (:func:`inr_fast.report.plots.jet_log_norm`; non-positive pixels as background); the residual
    ``recon - original`` uses a diverging symmetric-log scale (:func:`residual_norm`). ``captions`` (k,)
    are added to each jet's original row (e.g. its metrics)."""
    originals = _check_images(originals, "originals")
    recons = _check_images(recons, "reconstructions")
    if originals.shape != recons.shape:
        raise DataError(f"originals {originals.shape} and reconstructions {recons.shape} differ in shape")
    k = len(originals)
    fig, axes = jet_figure(3 * k, N_CHANNELS)
    for j in range(k):
        cap = f" ({captions[j]})" if captions is not None and captions[j] else ""
        for c, name in enumerate(CHANNELS):
            x, xh = originals[j][..., c], recons[j][..., c]
            norm = jet_log_norm(x, xh)
            draw_jet_panel(
                axes[3 * j, c], x, norm, f"jet {int(indices[j])} {name}: original{cap if c == 0 else ''}"
            )
            draw_jet_panel(axes[3 * j + 1, c], xh, norm, f"jet {int(indices[j])} {name}: reconstruction")
            res = (xh.astype(np.float64) - x.astype(np.float64)).astype(np.float32)
            draw_residual_panel(
                axes[3 * j + 2, c], res, residual_norm(res, x), f"jet {int(indices[j])} {name}: residual"
            )
    return fig


def plot_superres(original: np.ndarray, native: np.ndarray, fine: np.ndarray, index: int) -> Figure:
    """One jet three ways (rows) by channel (columns): the original (125 x 125), the INR at the native
    125 x 125 grid, and the INR rendered on a finer P x P grid (values per fine pixel, so each row has
    its own log colour scale); physical axes, the fine grid's pitch is PITCH * 125 / P."""
    for what, img in (("original", original), ("native render", native), ("fine render", fine)):
        if np.asarray(img).ndim != 3 or np.asarray(img).shape[-1] != N_CHANNELS:
            raise DataError(f"{what}: expected (H, W, {N_CHANNELS}), got shape {np.asarray(img).shape}")
    p = fine.shape[0]
    fig, axes = jet_figure(3, N_CHANNELS)
    rows = (
        (original, PITCH, f"original {IMAGE_SIZE} x {IMAGE_SIZE}"),
        (native, PITCH, f"INR at {native.shape[0]} x {native.shape[1]}"),
        (fine, PITCH * IMAGE_SIZE / p, f"INR at {p} x {p}"),
    )
    for r, (img, pitch, what) in enumerate(rows):
        for c, name in enumerate(CHANNELS):
            draw_jet_panel(axes[r, c], img[..., c], None, f"jet {int(index)} {name}: {what}", pitch=pitch)
    return fig
