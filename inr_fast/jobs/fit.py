"""The fit job: the selected jets of an HDF5 file fitted into a run directory, chunk by chunk, resumable
(:func:`fit_run`, driven by :class:`FitCommand`, the options of ``inr-fast fit``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from inr_fast import store
from inr_fast.data.jetfile import JetFile
from inr_fast.data.normalise import fit_normaliser
from inr_fast.errors import ConfigError, DataError
from inr_fast.model.spec import param_count, stored_bytes_per_jet
from inr_fast.train.api import fit_chunk
from inr_fast.train.backend import check_forward, get_forward, resolve_backend, resolve_device
from inr_fast.train.config import FitConfig, get_preset


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
    (``batch_size`` jets each, written atomically), skipping chunks already written by the same run.
    Returns a one-paragraph summary."""
    if cmd.n is not None and cmd.n < 1:
        raise ConfigError(f"--n must be a positive integer, got {cmd.n}")
    device = resolve_device(cmd.device)
    cfg = cmd.fit_config()
    cfg = replace(cfg, backend=resolve_backend(cfg.backend, cfg.model, device))  # config.json: the one used
    run = Path(cmd.out)
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
        run_cfg = store.RunConfig(
            data_path=str(Path(cmd.file).resolve()),
            channels_first=cmd.channels_first,
            n_jets_in_file=jf.n_jets,
            indices=[int(i) for i in indices],
            seed=cmd.seed,
            fit=cfg,
        )
        existing = store.prepare_run_dir(run, run_cfg, overwrite=cmd.overwrite)
        if existing is not None and existing.normaliser is not None:
            normaliser = existing.normaliser
        else:
            normaliser = fit_normaliser(
                cfg.normalisation, jetfile=jf, indices=indices, intensity_scale=cfg.intensity_scale
            )
        run_cfg = replace(run_cfg, normaliser=normaliser)
        store.write_config(run, run_cfg)
        forward_fn = get_forward(cfg.model, cfg.backend)
        check_forward(forward_fn, cfg.model, cfg.backend, device)
        chunks = run_cfg.chunks()
        todo = [c for c in range(len(chunks)) if not store.chunk_done(run, c)]
        n_done = sum(len(chunks[c]) for c in range(len(chunks)) if c not in set(todo))
        bar = tqdm(total=len(indices), initial=n_done, desc="fit", unit="jet", disable=not cmd.progress)
        try:
            for c in todo:
                images = jf.read(chunks[c])
                result = fit_chunk(images, chunks[c], cfg, cmd.seed, device, normaliser, cmd.progress)
                store.save_chunk(run, c, result)
                bar.update(len(chunks[c]))
        finally:
            bar.close()
    facts = store.fit_facts(run)
    seconds = time.perf_counter() - t0
    return (
        f"{run}: {len(facts['indices'])} jets with preset {cfg.name!r} on {device.type} "
        f"({len(todo)} of {len(chunks)} chunks fitted now, {seconds:.1f} s); "
        f"median psnr {np.median(facts['psnr']):.2f} dB, median rel_l2 "
        f"{np.median(facts['rel_l2']):.4f}, median steps {int(np.median(facts['n_steps']))}, "
        f"{int(facts['reached_target'].sum())} reached the target, "
        f"{int(facts['retried'].sum())} retried in float32, "
        f"{int(facts['failed'].sum())} failed; {param_count(cfg.model)} parameters, "
        f"{stored_bytes_per_jet(cfg.model, cfg.param_dtype)} bytes per jet"
    )
