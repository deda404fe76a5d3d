"""Run directories, the on-disk format of fitted jets: write, resume, load and rebuild them.

Layout of a run directory ``RUN/``::

    config.json                      RunConfig: data file, jet indices, seed, the FitConfig (model spec,
                                     normalisation, optimiser, schedule, targets, backend), the run-wide
                                     normaliser, parameter count and bytes per jet
    jets/chunk_000000.safetensors    one file per batch of ``batch_size`` jets (in the order of
                                     ``indices``), written atomically (temporary file + rename):
                                       indices (k,) int64, weights.{l} (k, fan_out, fan_in) float32,
                                       biases.{l} (k, fan_out), reconstructions (k, 125, 125, 3) float32
                                       (GeV), loss_history / psnr_history / rel_l2_history (k, max_steps)
                                       float32 (NaN where not recorded), n_steps (k,) int64, psnr / rel_l2
                                       (k,) float64, reached_target / retried / failed (k,) uint8, and
                                       norm_scales (k,) float64 for per-jet normalisations
    curve.png, compare.png           loss curves and original vs reconstruction of the first jets

A chunk file exists only once all its jets are fitted, so a kill at any moment leaves whole chunks;
re-running the same ``inr-fast fit`` skips them. Rendering a jet is :mod:`inr_fast.model.render`'s.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from inr_fast import __version__
from inr_fast.atomic import atomic_write_bytes
from inr_fast.data.normalise import normaliser_from_dict
from inr_fast.errors import ConfigError, DataError, InrFastError, OutputExistsError
from inr_fast.layout import IMAGE_SIZE
from inr_fast.model.reference import PEMLP, BatchedINR
from inr_fast.model.render import render_jet
from inr_fast.model.spec import ModelSpec, param_count, stored_bytes_per_jet
from inr_fast.train.config import FitConfig
from inr_fast.train.result import FitResult
from inr_fast.util import format_indices, refuse_unknown

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
JETS_DIR = "jets"
FIGURES = ("curve.png", "compare.png")
# Outputs of other commands that describe a fit and go stale when it is replaced.
DERIVED = ("metrics.csv", "summary.json", "report.html")


@dataclass(frozen=True)
class RunConfig:
    """What a run directory holds besides the fitted parameters (config.json).

    data_path: the HDF5 file (absolute); indices: the fitted jets in order; chunk c holds
    ``indices[c * batch_size:(c + 1) * batch_size]``; fit: the :class:`inr_fast.train.config.FitConfig`;
    normaliser: the run-wide normaliser (None for per-jet normalisations).
    """

    data_path: str
    channels_first: bool
    n_jets_in_file: int
    indices: list[int]
    seed: int
    fit: FitConfig
    normaliser: object = None
    format: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    def chunks(self) -> list[np.ndarray]:
        """Jet indices of each chunk, (k,) int64 each."""
        idx = np.asarray(self.indices, dtype=np.int64)
        bs = self.fit.batch_size
        return [idx[s : s + bs] for s in range(0, len(idx), bs)]

    def locate(self, index: int) -> tuple[int, int]:
        """(chunk, position in chunk) of jet ``index``."""
        hits = np.flatnonzero(np.asarray(self.indices, dtype=np.int64) == int(index))
        if hits.size == 0:
            raise DataError(
                f"jet index {index} is not part of this run (it fits {format_indices(self.indices)})"
            )
        pos = int(hits[0])
        return pos // self.fit.batch_size, pos % self.fit.batch_size

    def identity(self) -> dict:
        """The fields that decide the result (two runs with equal identity resume each other)."""
        return {
            "format": self.format,
            "data_path": self.data_path,
            "channels_first": self.channels_first,
            "n_jets_in_file": self.n_jets_in_file,
            "indices": [int(i) for i in self.indices],
            "seed": int(self.seed),
            "fit": self.fit.to_dict(),
        }

    def to_dict(self) -> dict:
        d = self.identity()
        d["normaliser"] = None if self.normaliser is None else self.normaliser.to_dict()
        spec = self.fit.model
        d["extra"] = {
            **self.extra,
            "inr_fast_version": __version__,
            "param_count": param_count(spec),
            "bytes_per_jet": stored_bytes_per_jet(spec, self.fit.param_dtype),
        }
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> RunConfig:

        refuse_unknown(cls, d, source)
        d = dict(d)
        if d.get("format") != FORMAT_VERSION:
            raise ConfigError(
                f"{source}: run format {d.get('format')!r}, this version reads {FORMAT_VERSION}"
            )
        d["fit"] = FitConfig.from_dict(d["fit"])
        d["normaliser"] = None if d.get("normaliser") is None else normaliser_from_dict(d["normaliser"])
        return cls(**d)


def write_config(run: str | os.PathLike, cfg: RunConfig) -> Path:
    """Write RUN/config.json atomically."""
    path = Path(run) / CONFIG_NAME
    atomic_write_bytes(path, (json.dumps(cfg.to_dict(), indent=1) + "\n").encode())
    return path


def read_config(run: str | os.PathLike) -> RunConfig:
    """RUN/config.json as a :class:`RunConfig` (clear errors for a missing or foreign directory)."""
    path = Path(run) / CONFIG_NAME
    if not path.is_file():
        raise DataError(
            f"{run}: not an inr-fast run directory (no {CONFIG_NAME}); create one with `inr-fast fit`"
        )
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read the run configuration ({err})") from None
    return RunConfig.from_dict(d, str(path))


def clear_run(run: Path) -> None:
    """Remove what ``inr-fast fit`` (and the commands reading its result) wrote in ``run``."""
    shutil.rmtree(run / JETS_DIR, ignore_errors=True)
    for name in (CONFIG_NAME, *FIGURES, *DERIVED):
        (run / name).unlink(missing_ok=True)


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


def prepare_run_dir(run: str | os.PathLike, cfg: RunConfig, overwrite: bool = False) -> RunConfig | None:
    """Make ``run`` ready for ``cfg``: returns the stored RunConfig when it is the same run (resume),
    None for a new or cleared directory. A directory holding a different run (or other files) is
    refused with :class:`OutputExistsError` unless ``overwrite``."""
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise OutputExistsError(f"{run}: exists and is not a directory; choose another --out")
    if not run.exists():
        run.mkdir(parents=True)
        return None
    if (run / CONFIG_NAME).exists():
        try:
            stored = read_config(run)
            diff = _differences(stored.identity(), cfg.identity())
        except InrFastError as err:
            stored, diff = None, [f"unreadable config ({err})"]
        if not diff:
            return stored
        if not overwrite:
            raise OutputExistsError(
                f"{run}: holds a different run (differs in {', '.join(diff[:6])}); "
                "pass --overwrite to replace it, or choose another --out"
            )
        clear_run(run)
        return None
    if any(run.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"{run}: exists, is not empty and is not an inr-fast run directory; "
            "pass --overwrite or choose another --out"
        )
    clear_run(run)
    return None


def chunk_path(run: str | os.PathLike, chunk: int) -> Path:
    return Path(run) / JETS_DIR / f"chunk_{chunk:06d}.safetensors"


def chunk_done(run: str | os.PathLike, chunk: int) -> bool:
    return chunk_path(run, chunk).is_file()


def save_chunk(run: str | os.PathLike, chunk: int, result) -> Path:
    """Write one chunk's :class:`inr_fast.train.result.FitResult` atomically (temporary file + rename)."""
    path = chunk_path(run, chunk)
    data = save(
        result.to_tensors(),
        metadata={"format": str(FORMAT_VERSION), "chunk": str(chunk), "seconds": repr(float(result.seconds))},
    )
    atomic_write_bytes(path, data)
    return path


def load_chunk(run: str | os.PathLike, chunk: int, cfg: RunConfig | None = None):
    """One chunk as a :class:`inr_fast.train.result.FitResult` (checked against the config's indices)."""

    cfg = read_config(run) if cfg is None else cfg
    path = chunk_path(run, chunk)
    if not path.is_file():
        raise DataError(
            f"{path}: missing; the run is not finished (re-run the same `inr-fast fit` to resume)"
        )
    try:
        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types
        raise DataError(f"{path}: cannot read the fitted parameters ({err})") from None
    result = FitResult.from_tensors(tensors, cfg.fit, cfg.normaliser, cfg.seed)
    expected = cfg.chunks()[chunk]
    if not np.array_equal(result.indices, expected):
        raise DataError(
            f"{path}: holds jets {format_indices(result.indices)}, "
            f"the config expects {format_indices(expected)}"
        )
    return result


def load_results(run: str | os.PathLike, allow_partial: bool = True):
    """All finished chunks of a run, joined into one :class:`inr_fast.train.result.FitResult`."""
    cfg = read_config(run)
    n = len(cfg.chunks())
    done = [c for c in range(n) if chunk_done(run, c)]
    if not done or (not allow_partial and len(done) < n):
        raise DataError(
            f"{run}: {len(done)} of {n} chunks fitted; re-run the same `inr-fast fit` to finish it"
        )
    return FitResult.concat([load_chunk(run, c, cfg) for c in done])


#: the per-jet scalars of a chunk (what summaries need, without parameters, renders or histories)
FACT_KEYS = ("indices", "n_steps", "psnr", "rel_l2", "reached_target", "retried", "failed")


def fit_facts(run: str | os.PathLike) -> dict[str, np.ndarray]:
    """The per-jet scalars :data:`FACT_KEYS` of every finished chunk of ``run``, concatenated in run
    order; reads only those tensors of each chunk file (memory independent of the run's size)."""
    cfg = read_config(run)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in FACT_KEYS}
    for c in range(len(cfg.chunks())):
        path = chunk_path(run, c)
        if not path.is_file():
            continue
        try:
            with safe_open(str(path), framework="pt") as fh:
                for k in FACT_KEYS:
                    parts[k].append(fh.get_tensor(k).numpy())
        except Exception as err:  # safetensors raises its own error types
            raise DataError(f"{path}: cannot read the fitted jets ({err})") from None
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}


@dataclass(frozen=True)
class FittedJet:
    """One fitted jet, enough to evaluate it anywhere: spec, B = 1 parameter stacks, its normaliser."""

    index: int
    spec: ModelSpec
    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    normaliser: object
    reconstruction: np.ndarray
    failed: bool

    def render(self, resolution: int = IMAGE_SIZE, device="cpu", conserve: bool = True) -> np.ndarray:
        if self.failed:
            raise InrFastError(
                f"jet {self.index} failed to fit (non-finite loss even in float32); nothing to render"
            )
        return render_jet(self.spec, self.weights, self.biases, self.normaliser, resolution, device, conserve)

    def module(self) -> torch.nn.Module:
        """The jet as a single-network nn.Module (pe_relu: :class:`inr_fast.model.reference.PEMLP`), which
        outputs NORMALISED values; see ``normaliser.inverse``."""
        if self.spec.kind == "pe_relu":
            return PEMLP.from_params(self.spec, self.weights, self.biases)
        return BatchedINR(self.spec, [w.clone() for w in self.weights], [b.clone() for b in self.biases])


def load_jet(run: str | os.PathLike, index: int) -> FittedJet:
    """Rebuild jet ``index`` (its file index) of a run directory."""
    cfg = read_config(run)
    chunk, pos = cfg.locate(index)
    res = load_chunk(run, chunk, cfg)
    w, b = res.jet_params(pos)
    return FittedJet(
        int(index),
        cfg.fit.model,
        w,
        b,
        res.jet_normaliser(pos),
        res.reconstructions[pos],
        bool(res.failed[pos]),
    )


def chunk_fit_seconds(run: Path, chunk: int, n_jets: int) -> float:
    """Fit seconds per jet of one chunk: the ``seconds`` entry of the chunk file's safetensors metadata
    (the chunk's wall time) divided by its jets, or NaN when the run does not record it."""

    try:
        with safe_open(str(chunk_path(run, chunk)), framework="pt") as fh:
            meta = fh.metadata() or {}
        return float(meta["seconds"]) / max(n_jets, 1)
    except (KeyError, ValueError, TypeError, OSError):
        return math.nan


def fitted_indices(run: Path, cfg) -> list[int]:
    """File indices of the jets in the run's finished chunks, in run order."""
    chunks = cfg.chunks()
    return [int(i) for c in range(len(chunks)) if chunk_done(run, c) for i in chunks[c]]
