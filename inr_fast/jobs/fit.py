"""The fit job: the selected jets of an HDF5 file fitted into a run directory, chunk by chunk, resumable
(:func:`fit_run`, driven by :class:`FitCommand`, the options of ``inr-fast fit``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from inr_fast import store
from inr_fast.atomic import check_writable
from inr_fast.data.jetfile import JetFile
from inr_fast.data.normalise import fit_normaliser
from inr_fast.errors import ConfigError, DataError
from inr_fast.model.spec import param_count
from inr_fast.progress import Progress, log
from inr_fast.train.api import fit_chunk
from inr_fast.train.backend import backend_choice, check_forward, get_forward, resolve_device
from inr_fast.train.config import FitConfig, get_preset
from inr_fast.util import jet_digests


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
    empty_samples: int | None = None  # 0: every pixel every step
    bright_weight: float | None = None
    param_dtype: str | None = None
    keep_diagnostics: bool = False  # also store reconstructions and every step's history

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


def fit_run(cmd: FitCommand) -> str:
    """Fit the selected jets of ``cmd.file`` into the run directory ``cmd.out``, chunk by chunk
    (``batch_size`` jets each, written atomically), holding the run's lock. A run with the same recipe
    is resumed (finished chunks are kept) and grown (selected jets it does not hold yet become new
    chunks); its data is checked to be the jets it fitted (content digests). Returns a one-paragraph
    summary."""
    if cmd.n is not None and cmd.n < 1:
        raise ConfigError(f"--n must be a positive integer, got {cmd.n}")
    device = resolve_device(cmd.device)
    cfg = cmd.fit_config()
    choice = backend_choice(cfg.backend, cfg.model, device)
    cfg = replace(cfg, backend=choice.backend)  # config.json: the one used
    run = Path(cmd.out)
    check_writable(run, "--out")
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
        forward_fn = get_forward(cfg.model, cfg.backend)
        check_forward(forward_fn, cfg.model, cfg.backend, device)
        planned = store.RunConfig(
            fit=cfg,
            seed=cmd.seed,
            chunks=store.plan_chunks(indices, cfg.batch_size),
            data_path=str(Path(cmd.file).resolve()),
            channels_first=cmd.channels_first,
            n_jets_in_file=jf.n_jets,
            keep_diagnostics=cmd.keep_diagnostics,
        )
        with store.RunLock(run, "inr-fast fit"):
            n_tmp = store.clean_stale_temporaries(run)
            if n_tmp:
                log.info("%s: removed %d temporary file(s) left by an interrupted run", run, n_tmp)
            run_cfg, todo = store.prepare_run(run, planned, overwrite=cmd.overwrite)
            run_cfg = replace(run_cfg, extra={**run_cfg.extra, "backend": str(choice)})
            store.write_config(run, run_cfg)
            store.verify_data(run, run_cfg, jf)
            if run_cfg.normaliser is None:
                normaliser = fit_normaliser(
                    cfg.normalisation,
                    jetfile=jf,
                    indices=run_cfg.indices,
                    intensity_scale=cfg.intensity_scale,
                )
                if normaliser is not None:
                    run_cfg = replace(run_cfg, normaliser=normaliser)
                    store.write_config(run, run_cfg)
            n_done = len(run_cfg.indices) - sum(len(run_cfg.chunks[c]) for c in todo)
            with Progress(len(run_cfg.indices), "fit", enabled=cmd.progress, initial=n_done) as bar:
                for c in todo:
                    idx = run_cfg.chunk_indices(c)
                    images = jf.read(idx)
                    result = fit_chunk(images, idx, cfg, cmd.seed, device, run_cfg.normaliser, bar)
                    store.save_chunk(run, c, result, jet_digests(images), run_cfg.keep_diagnostics)
    return summary_line(run, run_cfg, device, len(todo), time.perf_counter() - t0)


def summary_line(run: Path, cfg: store.RunConfig, device, n_fitted_now: int, seconds: float) -> str:
    """One paragraph on a run: jets, status counts, medians over the fitted jets, storage."""
    facts = store.fit_facts(run)
    n = len(facts["indices"])
    fitted = (facts["empty"] == 0) & (facts["failed"] == 0)
    med = lambda a: float(np.median(a[fitted])) if fitted.any() else float("nan")  # noqa: E731
    text = (
        f"{run}: {n} jets with preset {cfg.fit.name!r} on {device.type}, backend {cfg.extra.get('backend')} "
        f"({n_fitted_now} of {len(cfg.chunks)} chunks fitted now, {seconds:.1f} s); "
        f"median psnr {med(facts['psnr']):.2f} dB, median rel_l2 {med(facts['rel_l2']):.4f}, "
        f"median steps {int(med(facts['n_steps'])) if fitted.any() else 0}, "
        f"{int(facts['reached_target'].sum())} reached the target, "
        f"{int(facts['retried'].sum())} retried in float32, {int(facts['failed'].sum())} failed"
    )
    n_empty = int(facts["empty"].sum())
    if n_empty:
        text += f", {n_empty} empty (all-zero jets, not fitted)"
    text += (
        f"; {param_count(cfg.fit.model)} parameters, "
        f"{store.bytes_on_disk(run) / max(n, 1):,.0f} bytes per jet on disk"
    )
    if n_empty > n // 2:
        log.warning(
            "%d of %d jets are all zero: is the data file complete? "
            "(a file whose writer died reads as zeros)",
            n_empty,
            n,
        )
    return text
