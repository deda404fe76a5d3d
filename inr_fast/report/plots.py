"""Figures of jet images: the drawing primitives every figure of the project builds on.

All figures are built on :class:`matplotlib.figure.Figure` directly (Agg canvas, no pyplot state, never
``show()``), so they are safe in scripts, tests and worker processes. Jet panels share helpers:
:func:`jet_log_norm` (a log colour scale for sparse, heavy-tailed energies, shareable between images),
:func:`draw_jet_panel` (one channel on physical axes with a GeV colourbar), :func:`jet_figure` (a grid
of panels) and :func:`save_figure` (atomic write, refuses to overwrite unless asked). Later figures
(loss curves, original vs reconstruction) build on the same helpers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from inr_fast.atomic import atomic_output
from inr_fast.data.jetfile import JetFile, mean_image, resolve_indices
from inr_fast.errors import ConfigError, DataError, OutputExistsError
from inr_fast.layout import CHANNELS, IMAGE_SIZE, N_CHANNELS, PITCH

__all__ = [
    "draw_jet_panel",
    "jet_extent",
    "jet_figure",
    "jet_log_norm",
    "new_figure",
    "plot_jet",
    "plot_mean_jet",
    "save_figure",
]

CMAP = "viridis"
BACKGROUND = "white"  # zero (and negative) pixels
CHANNEL_UNITS = {"ECAL": "$E_T$ [GeV]", "HCAL": "$E_T$ [GeV]", "Tracks": "$p_T$ [GeV]"}  # per pixel
DYNAMIC_RANGE = 1e4  # vmin is at least vmax / DYNAMIC_RANGE
PANEL_SIZE = (4.4, 3.8)  # inches per panel, colourbar included


def jet_extent(
    shape: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE), pitch: float = PITCH
) -> tuple[float, float, float, float]:
    """``imshow`` extent (left, right, bottom, top) = (delta-phi min, max, delta-eta min, max) of a
    centred (H, W) image at ``pitch``: pixel edges at ``(i - H / 2) * pitch`` and ``(j - W / 2) * pitch``."""
    h, w = shape
    return (-w / 2 * pitch, w / 2 * pitch, -h / 2 * pitch, h / 2 * pitch)


def jet_log_norm(*arrays: np.ndarray, dynamic_range: float = DYNAMIC_RANGE) -> LogNorm:
    """A :class:`LogNorm` for sparse non-negative data, shared by all ``arrays``.

    vmax is the largest value; vmin the smallest positive value but at least vmax / ``dynamic_range``
    (smaller positive values are drawn in the lowest colour, zeros and negatives as background). With
    no positive value at all, a nominal (1e-3, 1) GeV range.
    """
    positives = [a[a > 0] for a in (np.asarray(x) for x in arrays)]
    positives = [p for p in positives if p.size]
    if not positives:
        return LogNorm(vmin=1e-3, vmax=1.0)
    vmax = float(max(p.max() for p in positives))
    vmin = max(float(min(p.min() for p in positives)), vmax / dynamic_range)
    if vmin >= vmax:
        vmin = vmax / 10
    return LogNorm(vmin=vmin, vmax=vmax)


def _cmap(name: str = CMAP):
    import matplotlib

    base = matplotlib.colormaps[name]
    return base.with_extremes(bad=BACKGROUND, under=base(0.0))


def new_figure(width: float, height: float, **kwargs) -> Figure:
    """A pyplot-free figure with an Agg canvas attached."""
    fig = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(fig)
    return fig


def draw_jet_panel(
    ax,
    channel: np.ndarray,
    norm: LogNorm | None = None,
    title: str | None = None,
    cbar_label: str | None = "$E_T$ [GeV]",
    pitch: float = PITCH,
    colorbar: bool = True,
):
    """Draw one channel (H, W) on ``ax`` with a log colour scale on physical axes.

    Rows are delta-eta (image axis 0, upwards), columns delta-phi; non-positive pixels are masked and
    shown as background. Returns the ``AxesImage`` (its array is the masked channel).
    """
    channel = np.asarray(channel)
    if channel.ndim != 2:
        raise DataError(f"a jet panel needs one channel (H, W), got shape {channel.shape}")
    norm = jet_log_norm(channel) if norm is None else norm
    masked = np.ma.masked_less_equal(channel, 0.0)
    extent = jet_extent(channel.shape, pitch)
    im = ax.imshow(masked, origin="lower", extent=extent, cmap=_cmap(), norm=norm, interpolation="nearest")
    ax.set_facecolor(BACKGROUND)
    ax.set_xlabel(r"$\Delta\phi$")
    ax.set_ylabel(r"$\Delta\eta$")
    if title:
        ax.set_title(title)
    if not (channel > 0).any():
        ax.text(0.5, 0.5, "no deposits", transform=ax.transAxes, ha="center", va="center", color="0.4")
    if colorbar:
        cbar = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03, extend="min")
        if cbar_label:
            cbar.set_label(cbar_label)
    return im


def jet_figure(nrows: int = 1, ncols: int = N_CHANNELS, title: str | None = None):
    """An empty figure of ``nrows`` x ``ncols`` jet panels; returns ``(fig, axes (nrows, ncols))``."""
    fig = new_figure(
        PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows + (0.4 if title else 0.0), layout="constrained"
    )
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False))
    for ax in axes.flat:
        ax.set_aspect("equal")
    if title:
        fig.suptitle(title)
    return fig, axes


def _check_image(image, what: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != N_CHANNELS:
        raise DataError(
            f"{what}: expected a channels-last jet image (H, W, {N_CHANNELS}), got shape {image.shape}"
        )
    if not np.isfinite(image).all():
        raise DataError(f"{what}: the image has NaN or Inf values")
    return image


def plot_jet(image: np.ndarray, title: str | None = None, pitch: float = PITCH) -> Figure:
    """The three channels of one jet image (125, 125, 3) side by side: log colour (each channel its own
    scale), physical axes (delta-phi across, delta-eta up, centred), GeV colourbars, channel titles."""
    image = _check_image(image)
    fig, axes = jet_figure(1, N_CHANNELS, title)
    for c, name in enumerate(CHANNELS):
        draw_jet_panel(axes[0, c], image[..., c], title=name, cbar_label=CHANNEL_UNITS[name], pitch=pitch)
    return fig


def plot_mean_jet(
    source,
    indices=None,
    title: str | None = None,
    pitch: float = PITCH,
    chunk_size: int = 256,
) -> Figure:
    """The average image of a selection, drawn like :func:`plot_jet`.

    ``source``: images (B, 125, 125, 3) in memory, a :class:`inr_fast.data.jetfile.JetFile`, or a path (opened
    channels-last). ``indices`` selects jets (anything :func:`inr_fast.data.jetfile.resolve_indices` takes);
    files are streamed in chunks of ``chunk_size`` jets.
    """
    if isinstance(source, str | os.PathLike):
        with JetFile(source) as jf:
            return plot_mean_jet(jf, indices, title, pitch, chunk_size)
    if isinstance(source, JetFile):
        n = len(source.resolve(indices))
        mean = mean_image(source, indices, chunk_size)
        default = f"{source.path.name}: mean of {n} jets"
    else:
        images = np.asarray(source)
        if images.ndim != 4:
            raise DataError(f"images: expected (B, H, W, {N_CHANNELS}), got shape {images.shape}")
        sel = resolve_indices(indices, len(images), "images")
        if sel.size == 0:
            raise DataError("images: the jet selection is empty; cannot average it")
        mean = np.add.reduce(images[sel], axis=0, dtype=np.float64) / len(sel)
        default = f"mean of {len(sel)} jets"
    return plot_jet(mean, title=default if title is None else title, pitch=pitch)


def save_figure(fig: Figure, path: str | os.PathLike, overwrite: bool = False, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` atomically (a temporary file in the same folder, then a rename).

    The format comes from the suffix (png, pdf, svg, ...). An existing ``path`` raises
    :class:`OutputExistsError` unless ``overwrite``; a folder that cannot be created or written raises
    :class:`ConfigError`. Missing parent folders are created.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; expected a file name such as {path / 'jet.png'}")
    fmt = path.suffix.lower().lstrip(".")
    supported = FigureCanvasAgg(Figure()).get_supported_filetypes()
    if fmt not in supported:
        raise ConfigError(
            f"{path}: unknown figure format {path.suffix!r}; use one of .{', .'.join(sorted(supported))}"
        )
    try:
        with atomic_output(path, overwrite=overwrite) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi)
    except OutputExistsError:
        raise
    except OSError as err:
        raise ConfigError(f"{path}: cannot write the figure ({err.strerror or err})") from None
    return path
