"""The fit job: the selected jets of an HDF5 file fitted into a run directory, chunk by chunk, resumable
(:func:`fit_run`, driven by :class:`FitCommand`, the options of ``inr-fast fit``)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from inr_fast import store
from inr_fast.atomic import check_writable
from inr_fast.data.jetfile import JetFile
from inr_fast.data.moments import Moments
from inr_fast.data.normalise import needs_moments, normaliser_from_moments, normaliser_moments, reduce_moments
from inr_fast.data.stats import DataStats
from inr_fast.errors import ConfigError, DataError
from inr_fast.jobs.cluster import ClusterOptions, Executor, start_task
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
    support: bool | None = None  # None: the preset's
    keep_diagnostics: bool = False  # also store reconstructions and every step's history
    executor: str = "serial"  # serial, local, slurm, htcondor or a scheduler address
    workers: int = 1
    cluster: ClusterOptions = field(default_factory=ClusterOptions)

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
            support=self.support,
        )
        if self.target_level == "none":  # run every step: only targets given here stop a jet
            cfg = replace(
                cfg, target_level=None, target_rel_l2=self.target_rel_l2, target_psnr=self.target_psnr
            )
        return replace(cfg, empty_samples=None) if self.empty_samples == 0 else cfg


def run_id(run: Path) -> str:
    """A short name of a run directory for Dask task keys (the same run gets the same keys)."""
    return hashlib.blake2b(str(run.resolve()).encode(), digest_size=4).hexdigest()


def chunk_stats_task(
    data_path: str, channels_first: bool, indices, kind: str, scale: float
) -> tuple[Moments | None, DataStats]:
    """What one chunk's jets contribute to the run-wide state (a worker task): the normaliser's moments
    (None when the normalisation needs none) and the data statistics decoding needs."""
    with JetFile(data_path, channels_first=channels_first) as jf:
        images = jf.read(indices)
    moments = normaliser_moments(kind, images, scale) if needs_moments(kind) else None
    return moments, DataStats.of(images)


def fit_chunk_task(run: str, chunk: int, device: str, threads: int, progress: Progress | None = None) -> dict:
    """Fit one chunk of a run and write it (a worker task, also what the serial executor runs): reads
    the run's config and the chunk's jets, fits them with ``threads`` torch threads, writes the chunk
    file atomically. Idempotent: a chunk already written (by an attempt whose report was lost) is kept.
    Returns {"chunk", "n_jets", "seconds", "skipped"}."""
    start_task(threads)
    run = Path(run)
    cfg = store.read_config(run)
    idx = cfg.chunk_indices(chunk)
    if store.chunk_done(run, chunk):
        return {"chunk": chunk, "n_jets": len(idx), "seconds": 0.0, "skipped": True}
    with store.open_data(run, cfg) as jf:
        images = jf.read(idx)
    result = fit_chunk(
        images,
        idx,
        cfg.fit,
        cfg.seed,
        resolve_device(device),
        cfg.normaliser,
        progress,
        stats=cfg.data_stats,
    )
    store.save_chunk(run, chunk, result, jet_digests(images), cfg.keep_diagnostics)
    return {"chunk": chunk, "n_jets": len(idx), "seconds": result.seconds, "skipped": False}


def fit_run(cmd: FitCommand, client=None) -> str:
    """Fit the selected jets of ``cmd.file`` into the run directory ``cmd.out``, one task per unfinished
    chunk (``batch_size`` jets each, written atomically) on ``cmd.executor`` (or the Dask ``client``
    given), holding the run's lock. A run with the same recipe is resumed (finished chunks are kept) and
    grown (selected jets it does not hold yet become new chunks); its data is checked to be the jets it
    fitted (content digests). The run-wide normaliser is a tree reduction of per-chunk moments. Only
    this driver writes config.json. Returns a one-paragraph summary."""
    if cmd.n is not None and cmd.n < 1:
        raise ConfigError(f"--n must be a positive integer, got {cmd.n}")
    device = resolve_device(cmd.device)
    cfg = cmd.fit_config()
    choice = backend_choice(cfg.backend, cfg.model, device)
    cfg = replace(cfg, backend=choice.backend)  # config.json: the one used
    run = Path(cmd.out)
    check_writable(run, "--out")
    executor = Executor(cmd.executor, cmd.workers, cmd.cluster, client)
    t0 = time.perf_counter()
    with store.RunLock(run, "inr-fast fit"):
        run_cfg, todo = _plan(cmd, cfg, run, str(choice))
        with executor:
            missing = run_cfg.data_stats is None or (
                run_cfg.normaliser is None and needs_moments(cfg.normalisation)
            )
            if todo and missing:
                normaliser, stats = _run_state(run, run_cfg, executor)
                run_cfg = replace(run_cfg, normaliser=run_cfg.normaliser or normaliser)
                run_cfg = replace(run_cfg, data_stats=run_cfg.data_stats or stats)
                store.write_config(run, run_cfg)
            _fit_chunks(run, run_cfg, todo, cmd, executor)
    return summary_line(run, run_cfg, device, len(todo), time.perf_counter() - t0, executor)


def _plan(cmd: FitCommand, cfg: FitConfig, run: Path, backend: str) -> tuple[store.RunConfig, list[int]]:
    """Resolve the selection, check the backend runs, create / resume / grow the run directory (the
    caller holds its lock) and check its data: (the run's config, the chunks to fit now)."""
    with JetFile(cmd.file, channels_first=cmd.channels_first) as jf:
        spec = f"0:{cmd.n}" if cmd.n is not None else cmd.indices
        if cmd.n is not None and cmd.n > jf.n_jets:
            raise DataError(f"{cmd.file}: --n {cmd.n} but the file has {jf.n_jets} jets")
        indices = jf.resolve(spec)
        if len(indices) == 0:
            raise DataError(f"{cmd.file}: the jet selection {spec!r} is empty")
        if len(np.unique(indices)) != len(indices):
            raise DataError(f"{cmd.file}: the jet selection {spec!r} repeats jets; each jet is fitted once")
        device = resolve_device(cmd.device)
        check_forward(get_forward(cfg.model, cfg.backend), cfg.model, cfg.backend, device)
        planned = store.RunConfig(
            fit=cfg,
            seed=cmd.seed,
            chunks=store.plan_chunks(indices, cfg.batch_size),
            data_path=str(Path(cmd.file).resolve()),
            channels_first=cmd.channels_first,
            n_jets_in_file=jf.n_jets,
            keep_diagnostics=cmd.keep_diagnostics,
        )
        n_tmp = store.clean_stale_temporaries(run)
        if n_tmp:
            log.info("%s: removed %d temporary file(s) left by an interrupted run", run, n_tmp)
        run_cfg, todo = store.prepare_run(run, planned, overwrite=cmd.overwrite)
        run_cfg = replace(run_cfg, extra={**run_cfg.extra, "backend": backend})
        store.write_config(run, run_cfg)
        store.verify_data(run, run_cfg, jf)
    return run_cfg, todo


def _run_state(run: Path, cfg: store.RunConfig, executor: Executor):
    """The run-wide normaliser (per-chunk moments merged as a tree in chunk order; None for per-jet
    normalisations) and the data statistics of every chunk, merged; one task per chunk."""
    kind, scale = cfg.fit.normalisation, cfg.fit.intensity_scale
    args = [
        (cfg.data_path, cfg.channels_first, cfg.chunk_indices(c), kind, scale) for c in range(len(cfg.chunks))
    ]
    if executor.serial:
        parts = [chunk_stats_task(*a) for a in args]
    else:
        rid = run_id(run)
        futures = [
            executor.submit(chunk_stats_task, *a, key=f"inr-fast-stats-{rid}-{c}") for c, a in enumerate(args)
        ]
        parts = executor.client.gather(futures)
    normaliser = None
    if needs_moments(kind):
        normaliser = normaliser_from_moments(
            kind, reduce_moments([m for m, _ in parts]), scale, cfg.data_path
        )
    stats = parts[0][1]
    for _, more in parts[1:]:
        stats = stats + more
    return normaliser, stats


def _fit_chunks(
    run: Path, cfg: store.RunConfig, todo: list[int], cmd: FitCommand, executor: Executor
) -> None:
    n_done = len(cfg.indices) - sum(len(cfg.chunks[c]) for c in todo)
    with Progress(len(cfg.indices), "fit", enabled=cmd.progress, initial=n_done) as bar:
        if executor.serial:
            for c in todo:
                fit_chunk_task(str(run), c, cmd.device, torch.get_num_threads(), bar)
            return
        bar.set_status(executor.describe())
        rid = run_id(run)
        futures = [
            executor.submit(
                fit_chunk_task, str(run), c, cmd.device, executor.threads, key=f"inr-fast-fit-{rid}-{c}"
            )
            for c in todo
        ]
        for future in executor.as_completed(futures):
            facts = future.result()
            bar.update(facts["n_jets"])


def summary_line(
    run: Path,
    cfg: store.RunConfig,
    device,
    n_fitted_now: int,
    seconds: float,
    executor: Executor | None = None,
) -> str:
    """One paragraph on a run: jets, status counts, medians over the fitted jets, storage."""
    facts = store.fit_facts(run)
    n = len(facts["indices"])
    fitted = (facts["empty"] == 0) & (facts["failed"] == 0)
    med = lambda a: float(np.median(a[fitted])) if fitted.any() else float("nan")  # noqa: E731
    text = (
        f"{run}: {n} jets with preset {cfg.fit.name!r} on {device.type}, backend {cfg.extra.get('backend')} "
        f"({n_fitted_now} of {len(cfg.chunks)} chunks fitted now"
        f"{'' if executor is None or executor.serial else ' on ' + executor.describe()}, {seconds:.1f} s); "
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
