"""Fitting jets: :func:`fit`, the Python API (images in, a :class:`~inr_fast.train.result.FitResult`
out), and :func:`fit_chunk`, one batch of jets trained together, retried in float32 where they go
non-finite, and rendered."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from inr_fast.data.grid import pixel_grid
from inr_fast.data.jetfile import implausible_jets
from inr_fast.data.normalise import batch_normaliser, fit_normaliser, jet_scales, subset_normaliser
from inr_fast.data.stats import DataStats
from inr_fast.errors import ConfigError, DataError
from inr_fast.layout import IMAGE_SIZE, N_CHANNELS
from inr_fast.model.render import render_jet
from inr_fast.model.spec import spec_layer_shapes
from inr_fast.model.support import Decoding, support_of
from inr_fast.progress import Progress, log
from inr_fast.train.backend import (
    check_forward,
    get_forward,
    get_loss_grad,
    resolve_amp,
    resolve_backend,
    resolve_device,
)
from inr_fast.train.checks import psnr_rel_l2
from inr_fast.train.config import FitConfig, get_preset
from inr_fast.train.loop import Monitor, jet_seed, train_batch
from inr_fast.train.result import FitResult
from inr_fast.util import format_indices

KEEP = object()  # "not given" for arguments where None has a meaning


def _by_id(monitor: Monitor | None, ids: np.ndarray) -> Monitor | None:
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
    progress: Progress | None = None,
    monitor: Monitor | None = None,
    stats: DataStats | None = None,
) -> FitResult:
    """Fit one batch of jets (k <= any size, trained together) and render their reconstructions.

    images (k, 125, 125, 3) float32 original values; indices (k,) their jet ids (seeds derive from
    them). Jets with no non-zero pixel are not fitted (``empty``: zero parameters, 0 steps, NaN metrics,
    rendered as zeros). Jets that go non-finite are retried together in float32; failures are stored as
    zeros. ``progress``: its status shows the step of the jets still training, and it advances by k
    when the chunk is done. ``monitor(step, ids, recon)``: see :func:`fit` (called with jet ids).
    ``stats``: the data statistics of the whole run (:class:`inr_fast.data.stats.DataStats`; default:
    of these jets), which decide how jets are decoded through their supports (``cfg.support``) and the
    zero-suppression levels Q2p judges by.
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
    for line in implausible_jets(images, indices):
        log.warning("%s; fitting it anyway", line)
    empty = ~(images != 0).reshape(k, -1).any(axis=1)
    live = np.flatnonzero(~empty)
    n_layers = cfg.model.depth + 1
    weights = [torch.zeros((k, fo, fi)) for fo, fi in spec_layer_shapes(cfg.model)]
    biases = [torch.zeros((k, fo)) for fo, _ in spec_layer_shapes(cfg.model)]
    hist = {n: np.full((k, cfg.max_steps), np.nan, np.float32) for n in ("loss", "psnr", "rel_l2")}
    n_steps = np.zeros(k, dtype=np.int64)
    reached = np.zeros(k, dtype=bool)
    retried = np.zeros(k, dtype=bool)
    failed = np.zeros(k, dtype=bool)
    recon = np.zeros_like(images)
    psnr = np.full(k, np.nan)
    rel = np.full(k, np.nan)
    scales = None
    support = support_of(images) if cfg.support else None
    stats = DataStats.of(images) if stats is None else stats
    decoding = Decoding.from_stats(stats) if cfg.support else None
    if live.size:
        live_support = None if support is None else support[live]
        out, norm, retried[live], failed[live] = _train_live(
            images[live],
            indices[live],
            cfg,
            seed,
            device,
            global_norm,
            progress,
            monitor,
            live_support,
            decoding,
            stats.levels(),
        )
        for i in range(n_layers):
            weights[i][live] = out.weights[i]
            biases[i][live] = out.biases[i]
        hist["loss"][live], hist["psnr"][live], hist["rel_l2"][live] = (
            out.loss_history, out.psnr_history, out.rel_l2_history,
        )  # fmt: skip
        n_steps[live], reached[live] = out.n_steps, out.reached
        flat = torch.from_numpy(images[live].reshape(len(live), -1, N_CHANNELS))
        for j, pos in enumerate(live):
            if failed[pos]:
                psnr[pos], rel[pos] = -math.inf, math.inf
                continue
            w = [t[j : j + 1] for t in out.weights]
            b = [t[j : j + 1] for t in out.biases]
            recon[pos] = render_jet(
                cfg.model, w, b, subset_normaliser(norm, [j]), IMAGE_SIZE, device,
                support=None if support is None else support[pos], decoding=decoding,
            )  # fmt: skip
            p, r = psnr_rel_l2(torch.from_numpy(recon[pos]).reshape(1, -1, 3), flat[j : j + 1])
            psnr[pos], rel[pos] = float(p[0]), float(r[0])
        live_scales = jet_scales(norm)
        if live_scales is not None:
            scales = np.zeros(k)
            scales[live] = live_scales
    elif cfg.normalisation == "per_jet_max":
        scales = np.zeros(k)
    if progress is not None:
        progress.update(k)
    return FitResult(
        config=cfg,
        indices=indices,
        weights=weights,
        biases=biases,
        reconstructions=recon,
        loss_history=hist["loss"],
        psnr_history=hist["psnr"],
        rel_l2_history=hist["rel_l2"],
        n_steps=n_steps,
        psnr=psnr,
        rel_l2=rel,
        reached_target=reached,
        retried=retried,
        failed=failed,
        empty=empty,
        norm_scales=scales,
        normaliser=global_norm,
        seed=seed,
        seconds=time.perf_counter() - t0,
        support=support,
        decoding=decoding,
    )


def _train_live(
    images,
    indices,
    cfg,
    seed,
    device,
    global_norm,
    progress,
    monitor,
    support=None,
    decoding=None,
    levels=None,
):
    """Train the non-empty jets of a chunk (retrying non-finite ones in float32): (BatchOutcome with
    failed jets' parameters zeroed, their normaliser, retried (k,), failed (k,))."""
    k = len(indices)
    forward_fn = get_forward(cfg.model, cfg.backend)
    coords = pixel_grid(IMAGE_SIZE, device=device)
    flat = torch.from_numpy(images.reshape(k, -1, N_CHANNELS)).to(device)
    norm = batch_normaliser(cfg.normalisation, global_norm, images)
    seeds = [jet_seed(seed, int(i)) for i in indices]
    amp_dtype = resolve_amp(cfg.amp, device)
    on_step = None
    if progress is not None:
        label = f"jets {format_indices(indices, 3)}"
        on_step = lambda step, active: progress.set_status(f"{label}: step {step}, {active} training")  # noqa: E731
    loss_grad = get_loss_grad(cfg.model, cfg.backend, device, amp_dtype)
    sup = None if support is None else torch.from_numpy(support.reshape(k, -1, N_CHANNELS)).to(device)
    out = train_batch(
        flat, norm, seeds, cfg, coords, forward_fn, amp_dtype, on_step, loss_grad, _by_id(monitor, indices),
        sup, decoding, levels,
    )  # fmt: skip
    retried = np.zeros(k, dtype=bool)
    failed = np.zeros(k, dtype=bool)
    redo = np.flatnonzero(out.nonfinite)
    if redo.size:
        sub = subset_normaliser(norm, redo.tolist())
        loss_grad = get_loss_grad(cfg.model, cfg.backend, device, None)
        again = train_batch(
            flat[redo], sub, [seeds[i] for i in redo], cfg, coords, forward_fn, None, on_step, loss_grad,
            _by_id(monitor, indices[redo]), None if sup is None else sup[redo], decoding, levels,
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
    return out, norm, retried, failed


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
    order of :func:`inr_fast.data.grid.pixel_grid`); it may return a (k,) bool array of jets to stop now
    (e.g. a quality level reached; :mod:`inr_fast.bench.suite` uses it). None: no monitoring.
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
    stats = DataStats.of(images)  # of every jet: a jet fitted in a batch equals the jet fitted alone
    parts = []
    with Progress(len(images), "fit", enabled=progress) as bar:
        for start in range(0, len(images), cfg.batch_size):
            sl = slice(start, start + cfg.batch_size)
            parts.append(fit_chunk(images[sl], ids[sl], cfg, seed, dev, normaliser, bar, monitor, stats))
    return FitResult.concat(parts)
