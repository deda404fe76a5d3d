"""Run directories, the on-disk format of fitted jets: plan, lock, write, verify, load and rebuild them.

Layout of a run directory ``RUN/`` (format 2)::

    config.json                      RunConfig: the recipe (FitConfig, seed), the chunk plan (the jet
                                     indices of every chunk), the run-wide normaliser, where the data was
                                     last read, parameter count and bytes per jet
    jets/chunk_000000.safetensors    one file per chunk, written atomically (temporary file + rename),
                                     byte-identical between identical runs:
                                       indices (k,) int64, jet_digests (k, 16) uint8 (BLAKE2b-128 of each
                                       input jet, :func:`inr_fast.util.jet_digests`), weights.{l}
                                       (k, fan_out, fan_in) and biases.{l} (k, fan_out) (float16 where
                                       the preset stores so, output biases float32), n_steps (k,) int64,
                                       psnr / rel_l2 (k,) float64, reached_target / retried / failed /
                                       empty (k,) uint8, norm_scales (k,) float64 for per-jet
                                       normalisations, history_steps (S,) int64 and loss / psnr / rel_l2
                                       histories (k, S) float32 at up to 32 log-spaced check steps; with
                                       ``keep_diagnostics`` every step and the reconstructions
                                       (k, 125, 125, 3) float32 too. Header metadata: the format, the
                                       chunk number and ``tensors_sha256``
                                       (:func:`inr_fast.util.tensors_sha256`), checked at every load.
    jets/chunk_000000.json           when and where the chunk was fitted, in seconds (not checksummed)
    eval/chunk_000000.json           per-chunk metrics of ``inr-fast evaluate`` (tied to the chunk's sha256)
    metrics.csv, summary.json, report.html, *.png    outputs of evaluate, report and fit

A chunk exists only once all its jets are fitted, so a kill at any moment leaves whole chunks; re-running
the same ``inr-fast fit`` refits only the missing ones. A run is identified by its recipe (fit config,
seed, storage options), not by the data file's path: the jets are identified by their content digests,
so a run can move with its data, and grow (a wider selection adds chunks; a different recipe is refused).
Writers hold :class:`RunLock`. ``--overwrite`` removes only what this format owns (:func:`clear_run`).
Rendering a jet is :mod:`inr_fast.model.render`'s.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load, save

from inr_fast import __version__
from inr_fast.atomic import atomic_write_bytes, check_writable
from inr_fast.data.jetfile import JetFile
from inr_fast.data.normalise import normaliser_from_dict
from inr_fast.data.stats import DataStats
from inr_fast.errors import ConfigError, DataError, InrFastError, OutputExistsError
from inr_fast.layout import IMAGE_SIZE, N_CHANNELS
from inr_fast.model.reference import PEMLP, BatchedINR
from inr_fast.model.render import render_jet
from inr_fast.model.spec import ModelSpec, param_count, stored_bytes_per_jet
from inr_fast.model.support import Decoding, pack_supports, unpack_supports
from inr_fast.train.config import FitConfig
from inr_fast.train.result import FitResult
from inr_fast.util import cpu_name, format_indices, jet_digests, refuse_unknown, tensors_sha256

FORMAT_VERSION = 2
CONFIG_NAME = "config.json"
JETS_DIR = "jets"
EVAL_DIR = "eval"
LOCK_NAME = ".inr-fast.lock"
#: files of a run directory this format owns (``--overwrite`` removes these and the chunk files only)
OWNED_FILES = (
    CONFIG_NAME,
    "curve.png",
    "compare.png",
    "metrics.csv",
    "summary.json",
    "report.html",
    "distributions.png",
    "superres.png",
)
#: check steps kept per chunk in the stored histories (log-spaced), unless keep_diagnostics
HISTORY_POINTS = 32
#: jets whose digests are compared with the data file when a run resumes or grows
VERIFY_SAMPLE = 8


class RunBusyError(InrFastError):
    """Another live process holds the run directory's lock."""


# ------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class RunConfig:
    """What a run directory holds besides the fitted parameters (config.json).

    fit: the :class:`inr_fast.train.config.FitConfig` (backend as really used); seed: the run's seed (jet
    i starts from ``jet_seed(seed, i)``); chunks: the jet indices of every chunk, in order (chunks are
    appended when a run grows); data_path: the HDF5 file the jets were last read from (informational:
    the jets are identified by their digests); normaliser: the run-wide normaliser (None for per-jet
    normalisations), fitted when the run was created and kept when it grows; keep_diagnostics: store
    reconstructions and full histories too; data_stats: the zero-suppression levels, negative
    pixels and HCAL towers of the run's data (:class:`inr_fast.data.stats.DataStats`, from the data
    when the run was created), which decide how jets are decoded (:attr:`decoding`) and judged (Q2p).
    """

    fit: FitConfig
    seed: int
    chunks: tuple[tuple[int, ...], ...]
    data_path: str
    channels_first: bool
    n_jets_in_file: int
    normaliser: object = None
    keep_diagnostics: bool = False
    data_stats: DataStats | None = None
    format: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    @property
    def decoding(self) -> Decoding | None:
        """How the run's jets are decoded through their supports (``fit.support``), else None."""
        if not self.fit.support or self.data_stats is None:
            return None
        return Decoding.from_stats(self.data_stats)

    @property
    def indices(self) -> np.ndarray:
        """Every planned jet index, in chunk order, (n,) int64."""
        return np.asarray([i for c in self.chunks for i in c], dtype=np.int64)

    def chunk_indices(self, chunk: int) -> np.ndarray:
        return np.asarray(self.chunks[chunk], dtype=np.int64)

    def locate(self, index: int) -> tuple[int, int]:
        """(chunk, position in chunk) of jet ``index``."""
        for c, members in enumerate(self.chunks):
            if int(index) in members:
                return c, members.index(int(index))
        raise DataError(f"jet index {index} is not part of this run (it fits {format_indices(self.indices)})")

    def recipe(self) -> dict:
        """What decides how every jet is fitted: two runs with the same recipe can share a directory
        (resume, grow); anything else is refused."""
        return {
            "format": self.format,
            "seed": int(self.seed),
            "fit": self.fit.to_dict(),
            "channels_first": self.channels_first,
            "keep_diagnostics": self.keep_diagnostics,
        }

    def to_dict(self) -> dict:
        d = self.recipe()
        d.update(
            chunks=[list(c) for c in self.chunks],
            data_path=self.data_path,
            n_jets_in_file=self.n_jets_in_file,
            normaliser=None if self.normaliser is None else self.normaliser.to_dict(),
            data_stats=None if self.data_stats is None else self.data_stats.to_dict(),
        )
        spec = self.fit.model
        d["extra"] = {
            **self.extra,
            "inr_fast_version": __version__,
            "param_count": param_count(spec),
            "param_bytes_per_jet": stored_bytes_per_jet(spec, self.fit.param_dtype),
        }
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> RunConfig:
        if isinstance(d, dict) and d.get("format") != FORMAT_VERSION:
            raise ConfigError(
                f"{source}: run format {d.get('format')!r}; this version of inr-fast reads format "
                f"{FORMAT_VERSION} (refit the jets into a new run directory)"
            )
        refuse_unknown(cls, d, source)
        d = dict(d)
        d["fit"] = FitConfig.from_dict(d["fit"])
        d["chunks"] = tuple(tuple(int(i) for i in c) for c in d["chunks"])
        d["normaliser"] = None if d.get("normaliser") is None else normaliser_from_dict(d["normaliser"])
        d["data_stats"] = None if d.get("data_stats") is None else DataStats.from_dict(d["data_stats"])
        return cls(**d)


def plan_chunks(indices, batch_size: int) -> tuple[tuple[int, ...], ...]:
    """Consecutive chunks of ``batch_size`` jets of ``indices``."""
    idx = [int(i) for i in indices]
    return tuple(tuple(idx[s : s + batch_size]) for s in range(0, len(idx), batch_size))


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


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


# ------------------------------------------------------------------------------------------ the directory


def _owned_paths(run: Path) -> list[Path]:
    """Every path of ``run`` this format owns (files that exist), temporaries included."""
    out = [run / name for name in (*OWNED_FILES, LOCK_NAME) if (run / name).exists()]
    for sub, patterns in ((JETS_DIR, ("chunk_*.safetensors", "chunk_*.json")), (EVAL_DIR, ("chunk_*.json",))):
        if (run / sub).is_dir():
            for pattern in patterns:
                out += sorted((run / sub).glob(pattern))
    return out


def stale_temporaries(run: str | os.PathLike) -> list[Path]:
    """Temporary files that atomic writes of this run left behind (a writer was killed)."""
    run = Path(run)
    return [p for d in (run, run / JETS_DIR, run / EVAL_DIR) if d.is_dir() for p in sorted(d.glob(".*.tmp"))]


def clean_stale_temporaries(run: str | os.PathLike) -> int:
    """Remove :func:`stale_temporaries` (call only while holding the run's lock); returns how many."""
    found = stale_temporaries(run)
    for p in found:
        p.unlink(missing_ok=True)
    return len(found)


def clear_run(run: str | os.PathLike) -> None:
    """Remove what this format owns in ``run`` (config, chunks, evaluations, outputs, temporaries);
    any other file is left alone, and ``jets/`` and ``eval/`` are removed only when left empty."""
    run = Path(run)
    for p in _owned_paths(run):
        if p.name != LOCK_NAME:
            p.unlink(missing_ok=True)
    clean_stale_temporaries(run)
    for sub in (JETS_DIR, EVAL_DIR):
        try:
            (run / sub).rmdir()
        except OSError:
            pass


def prepare_run(
    run: str | os.PathLike, new: RunConfig, overwrite: bool = False
) -> tuple[RunConfig, list[int]]:
    """Make ``run`` ready for ``new`` (whose chunks plan the selected jets; the caller holds the
    run's lock). Returns the run's config (written) and the chunks to fit now:

    - a new or empty folder: ``new``, all its chunks;
    - a run with the same recipe: resumed and grown: jets of ``new`` not yet planned are appended as new
      chunks (the stored normaliser and data path are kept), and every unfinished chunk is returned;
    - a run with a different recipe: refused (OutputExistsError) unless ``overwrite``, which clears it;
    - a non-empty folder that is not a run: refused, even with ``overwrite`` (nothing of it is ours).
    """
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise OutputExistsError(f"{run}: exists and is not a directory; choose another --out")
    check_writable(run, "--out")
    run.mkdir(parents=True, exist_ok=True)
    other = [p for p in run.iterdir() if p.name != LOCK_NAME]
    if other and not (run / CONFIG_NAME).exists():
        raise OutputExistsError(
            f"{run}: is not empty and is not an inr-fast run directory (no {CONFIG_NAME}); "
            "choose another --out (--overwrite never deletes files inr-fast did not write)"
        )
    stored = None
    if (run / CONFIG_NAME).exists():
        try:
            stored = read_config(run)
            diff = _differences(stored.recipe(), new.recipe())
        except InrFastError as err:
            diff = [f"unreadable config ({err})"]
        if diff:
            if not overwrite:
                raise OutputExistsError(
                    f"{run}: holds a run with a different recipe (differs in {', '.join(diff[:6])}); "
                    "pass --overwrite to replace it, or choose another --out"
                )
            clear_run(run)
            stored = None
    if stored is None:
        write_config(run, new)
        return new, list(range(len(new.chunks)))
    planned = set(int(i) for i in stored.indices)
    added = [int(i) for i in new.indices if int(i) not in planned]
    cfg = replace(
        stored,
        chunks=stored.chunks + plan_chunks(added, new.fit.batch_size),
        data_path=new.data_path,
        n_jets_in_file=new.n_jets_in_file,
    )
    write_config(run, cfg)
    return cfg, [c for c in range(len(cfg.chunks)) if not chunk_done(run, c)]


class RunLock:
    """An exclusive lock on a run directory for one writer (fit, evaluate, report), held while the
    ``with`` block runs and released on any exit. The lock is an ``flock`` on RUN/.inr-fast.lock, which
    the kernel releases when its holder dies (``kill -9``), so a stale lock never blocks; the file
    records the holder's pid, host and command for the message a second writer gets, and is removed
    when the lock is released."""

    def __init__(self, run: str | os.PathLike, command: str):
        self.run, self.command = Path(run), command
        self.path = self.run / LOCK_NAME
        self._fd: int | None = None

    def _busy(self) -> RunBusyError:
        try:
            holder = json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            holder = {}
        return RunBusyError(
            f"{self.run}: in use by `{holder.get('command', 'another inr-fast command')}` (pid "
            f"{holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since', '?')}); "
            "wait for it to finish or stop it, then run again"
        )

    def __enter__(self) -> RunLock:
        self.run.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise self._busy() from None
                raise
            try:  # the file we locked must still be the lock file (a releasing holder unlinks it)
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:  # pragma: no cover - a lock file that keeps vanishing
            raise RunBusyError(f"{self.run}: could not take the lock {self.path}")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command}
        info["since"] = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# ------------------------------------------------------------------------------------------ chunks


def chunk_path(run: str | os.PathLike, chunk: int) -> Path:
    return Path(run) / JETS_DIR / f"chunk_{chunk:06d}.safetensors"


def chunk_info_path(run: str | os.PathLike, chunk: int) -> Path:
    return Path(run) / JETS_DIR / f"chunk_{chunk:06d}.json"


def chunk_done(run: str | os.PathLike, chunk: int) -> bool:
    return chunk_path(run, chunk).is_file()


def done_chunks(run: str | os.PathLike, cfg: RunConfig) -> list[int]:
    return [c for c in range(len(cfg.chunks)) if chunk_done(run, c)]


def thin_steps(steps: np.ndarray, points: int = HISTORY_POINTS) -> np.ndarray:
    """At most ``points`` of the increasing ``steps``, log-spaced by rank (the first and last kept)."""
    steps = np.asarray(steps, dtype=np.int64)
    if len(steps) <= points:
        return steps
    ranks = np.unique(np.round(np.geomspace(1, len(steps), points)).astype(np.int64) - 1)
    return steps[ranks]


def chunk_tensors(result: FitResult, digests: np.ndarray, keep_diagnostics: bool) -> dict[str, torch.Tensor]:
    """The tensors of one chunk file (see the module docstring) from a chunk's :class:`FitResult`."""
    t = {
        "indices": torch.from_numpy(np.asarray(result.indices, dtype=np.int64)),
        "jet_digests": torch.from_numpy(np.ascontiguousarray(digests, dtype=np.uint8)),
    }
    half = result.config.param_dtype == "float16"
    last = len(result.biases) - 1
    for i, (w, b) in enumerate(zip(result.weights, result.biases, strict=True)):
        t[f"weights.{i}"] = (w.half() if half else w).contiguous()
        t[f"biases.{i}"] = (b.half() if half and i < last else b).contiguous()
    t["n_steps"] = torch.from_numpy(np.asarray(result.n_steps, dtype=np.int64))
    for name in ("psnr", "rel_l2"):
        t[name] = torch.from_numpy(np.asarray(getattr(result, name), dtype=np.float64))
    for name in ("reached_target", "retried", "failed", "empty"):
        t[name] = torch.from_numpy(np.asarray(getattr(result, name), dtype=np.uint8))
    if result.norm_scales is not None:
        t["norm_scales"] = torch.from_numpy(np.asarray(result.norm_scales, dtype=np.float64))
    if result.support is not None:
        blob, offsets = pack_supports(result.support, result.decoding is not None and result.decoding.towers)
        t["support_blob"], t["support_offsets"] = torch.from_numpy(blob), torch.from_numpy(offsets)
    hists = [
        np.asarray(getattr(result, n), np.float32) for n in ("loss_history", "psnr_history", "rel_l2_history")
    ]
    if keep_diagnostics:
        steps = np.arange(hists[0].shape[1], dtype=np.int64)
        t["reconstructions"] = torch.from_numpy(
            np.ascontiguousarray(result.reconstructions, dtype=np.float32)
        )
    else:
        steps = thin_steps(np.flatnonzero(np.isfinite(hists[1]).any(axis=0)))
    t["history_steps"] = torch.from_numpy(steps)
    for name, h in zip(("loss_history", "psnr_history", "rel_l2_history"), hists, strict=True):
        t[name] = torch.from_numpy(np.ascontiguousarray(h[:, steps]))
    return t


def save_chunk(
    run: str | os.PathLike, chunk: int, result: FitResult, digests: np.ndarray, keep_diagnostics: bool = False
) -> Path:
    """Write one chunk atomically: the timing sidecar, then its tensors (checksummed; identical runs
    write identical bytes). The tensors file marks the chunk done, so it comes last: a process killed
    between the two writes leaves a sidecar that the refit overwrites, never a done chunk without one."""
    tensors = chunk_tensors(result, digests, keep_diagnostics)
    # one metadata key: safetensors writes several in a per-process hash order (different bytes)
    meta = {"format": FORMAT_VERSION, "chunk": chunk, "tensors_sha256": tensors_sha256(tensors)}
    path = chunk_path(run, chunk)
    info = {
        "chunk": chunk,
        "n_jets": len(result),
        "seconds": float(result.seconds),
        "host": socket.gethostname(),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "inr_fast_version": __version__,
    }
    atomic_write_bytes(chunk_info_path(run, chunk), (json.dumps(info) + "\n").encode())
    atomic_write_bytes(path, save(tensors, metadata={"inr_fast": json.dumps(meta, sort_keys=True)}))
    return path


def _refit_hint(run: Path, cfg: RunConfig, chunk: int) -> str:
    return (
        f"delete it and run `inr-fast fit {cfg.data_path} --out {run}` with the run's options to refit "
        f"just this chunk (jets {format_indices(cfg.chunks[chunk])})"
    )


def read_chunk_tensors(run: str | os.PathLike, chunk: int, cfg: RunConfig) -> tuple[dict, dict]:
    """(tensors, metadata) of one chunk file, verified: readable, its checksum, its jets those the plan
    says. A damaged chunk raises DataError naming the file and how to refit just that chunk."""
    run = Path(run)
    path = chunk_path(run, chunk)
    if not path.is_file():
        raise DataError(
            f"{path}: missing; the run is not finished (re-run the same `inr-fast fit` to resume)"
        )
    try:
        tensors = load(path.read_bytes())
        meta = _chunk_meta(path)
    except Exception as err:  # safetensors raises its own error types for a damaged header
        raise DataError(f"{path}: unreadable chunk file ({err}); {_refit_hint(run, cfg, chunk)}") from None
    if meta.get("format") != FORMAT_VERSION:
        raise DataError(f"{path}: chunk format {meta.get('format')!r}, expected {FORMAT_VERSION}")
    if tensors_sha256(tensors) != meta.get("tensors_sha256"):
        raise DataError(f"{path}: fails its checksum (the file is damaged); {_refit_hint(run, cfg, chunk)}")
    expected = cfg.chunk_indices(chunk)
    if not np.array_equal(tensors["indices"].numpy(), expected):
        raise DataError(
            f"{path}: holds jets {format_indices(tensors['indices'].numpy())}, "
            f"the config expects {format_indices(expected)}"
        )
    return tensors, meta


def _chunk_meta(path: Path) -> dict:
    """The inr_fast metadata of a chunk file's header (format, chunk, tensors_sha256)."""
    with safe_open(str(path), framework="pt") as fh:
        return json.loads((fh.metadata() or {}).get("inr_fast", "{}"))


def chunk_checksum(run: str | os.PathLike, chunk: int) -> str:
    """The chunk file's recorded tensors sha256 (read from its header only; not verified)."""
    try:
        return _chunk_meta(chunk_path(run, chunk)).get("tensors_sha256", "")
    except Exception as err:  # a damaged header
        raise DataError(f"{chunk_path(run, chunk)}: unreadable chunk file ({err})") from None


def chunk_digests(run: str | os.PathLike, chunk: int) -> np.ndarray:
    """The input-jet digests (k, 16) of a chunk (read without loading its parameters)."""
    with safe_open(str(chunk_path(run, chunk)), framework="pt") as fh:
        return fh.get_tensor("jet_digests").numpy()


def load_chunk(run: str | os.PathLike, chunk: int, cfg: RunConfig | None = None) -> FitResult:
    """One chunk as a :class:`inr_fast.train.result.FitResult`, verified (see :func:`read_chunk_tensors`).
    Histories come back as (k, max_steps) with NaN where not stored; reconstructions are None unless
    the run keeps diagnostics."""
    cfg = read_config(run) if cfg is None else cfg
    t, _ = read_chunk_tensors(run, chunk, cfg)
    n_layers = cfg.fit.model.depth + 1
    k = len(t["indices"])
    steps = t["history_steps"].numpy()
    hist = {}
    for name in ("loss_history", "psnr_history", "rel_l2_history"):
        full = np.full((k, cfg.fit.max_steps), np.nan, dtype=np.float32)
        full[:, steps] = t[name].numpy()
        hist[name] = full
    seconds = chunk_seconds(run, chunk)
    return FitResult(
        config=cfg.fit,
        indices=t["indices"].numpy(),
        weights=[t[f"weights.{i}"].float() for i in range(n_layers)],
        biases=[t[f"biases.{i}"].float() for i in range(n_layers)],
        reconstructions=t["reconstructions"].numpy() if "reconstructions" in t else None,
        **hist,
        n_steps=t["n_steps"].numpy(),
        psnr=t["psnr"].numpy(),
        rel_l2=t["rel_l2"].numpy(),
        reached_target=t["reached_target"].numpy().astype(bool),
        retried=t["retried"].numpy().astype(bool),
        failed=t["failed"].numpy().astype(bool),
        empty=t["empty"].numpy().astype(bool),
        norm_scales=t["norm_scales"].numpy() if "norm_scales" in t else None,
        normaliser=cfg.normaliser,
        seed=cfg.seed,
        seconds=seconds,
        support=_supports(t, cfg),
        decoding=cfg.decoding,
    )


def _supports(t: dict, cfg: RunConfig) -> np.ndarray | None:
    if "support_blob" not in t:
        return None
    towers = cfg.decoding is not None and cfg.decoding.towers
    return unpack_supports(t["support_blob"].numpy(), t["support_offsets"].numpy(), towers)


def load_results(run: str | os.PathLike, allow_partial: bool = True) -> FitResult:
    """All finished chunks of a run, joined into one :class:`inr_fast.train.result.FitResult` (for small
    runs and the Python API; jobs read chunk by chunk)."""
    cfg = read_config(run)
    done = done_chunks(run, cfg)
    if not done or (not allow_partial and len(done) < len(cfg.chunks)):
        raise DataError(
            f"{run}: {len(done)} of {len(cfg.chunks)} chunks fitted; "
            "re-run the same `inr-fast fit` to finish it"
        )
    return FitResult.concat([load_chunk(run, c, cfg) for c in done])


#: the per-jet scalars of a chunk (what summaries need, without parameters, renders or histories)
FACT_KEYS = ("indices", "n_steps", "psnr", "rel_l2", "reached_target", "retried", "failed", "empty")


def fit_facts(run: str | os.PathLike) -> dict[str, np.ndarray]:
    """The per-jet scalars :data:`FACT_KEYS` of every finished chunk of ``run``, concatenated in run
    order; reads only those tensors of each chunk file (memory independent of the run's size)."""
    cfg = read_config(run)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in FACT_KEYS}
    for c in done_chunks(run, cfg):
        path = chunk_path(run, c)
        try:
            with safe_open(str(path), framework="pt") as fh:
                for k in FACT_KEYS:
                    parts[k].append(fh.get_tensor(k).numpy())
        except Exception as err:  # safetensors raises its own error types
            raise DataError(
                f"{path}: cannot read the fitted jets ({err}); {_refit_hint(Path(run), cfg, c)}"
            ) from None
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}


def fit_seconds(run: str | os.PathLike) -> float:
    """Seconds spent fitting the run's finished chunks, summed over their timing sidecars (NaN when a
    sidecar is missing): the fit time of a run that was resumed, where one command's wall time is not."""
    cfg = read_config(run)
    return float(sum(chunk_seconds(run, c) for c in done_chunks(run, cfg)))


def chunk_seconds(run: str | os.PathLike, chunk: int) -> float:
    """Seconds the chunk's fit took, from its timing sidecar (NaN when the sidecar is missing or bad)."""
    try:
        return float(json.loads(chunk_info_path(run, chunk).read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return math.nan


def fitted_indices(run: str | os.PathLike, cfg: RunConfig) -> list[int]:
    """File indices of the jets in the run's finished chunks, in run order."""
    return [int(i) for c in done_chunks(run, cfg) for i in cfg.chunks[c]]


def run_state(run: str | os.PathLike, cfg: RunConfig) -> dict:
    """What the run's finished chunks are: {"chunks": n planned, "done": [chunk, ...], "sha256":
    {chunk: tensors sha256}}; outputs derived from a run record it to know when they are stale."""
    done = done_chunks(run, cfg)
    return {"chunks": len(cfg.chunks), "done": done, "sha256": {str(c): chunk_checksum(run, c) for c in done}}


def bytes_on_disk(run: str | os.PathLike) -> int:
    """Bytes of everything a user must keep to rebuild the run's jets: config.json and the chunk files
    (parameters, per-jet metrics, thinned histories), not the figures, reports or timing sidecars."""
    run = Path(run)
    files = [run / CONFIG_NAME, *sorted((run / JETS_DIR).glob("chunk_*.safetensors"))]
    return sum(p.stat().st_size for p in files if p.is_file())


# ------------------------------------------------------------------------------------------ data identity


def open_data(run: str | os.PathLike, cfg: RunConfig, data: str | os.PathLike | None = None) -> JetFile:
    """The run's data file (``data`` when given: a moved copy), opened; a clear error naming
    ``--data`` when it is not where the run last read it."""
    path = Path(data) if data is not None else Path(cfg.data_path)
    if not path.exists():
        raise DataError(
            f"{path}: the data of run {run} is not there (moved?); pass its new location with --data FILE"
        )
    return JetFile(path, channels_first=cfg.channels_first)


def check_digests(run, chunk: int, indices, expected: np.ndarray, got: np.ndarray, source) -> None:
    """DataError naming the first jet whose digest in the data file differs from the fitted one."""
    bad = np.flatnonzero((np.asarray(expected) != np.asarray(got)).any(axis=1))
    if bad.size:
        jet = int(np.asarray(indices)[bad[0]])
        raise DataError(
            f"{source}: jet {jet} is not the jet run {run} fitted (chunk {chunk}; {bad.size} of "
            f"{len(indices)} jets of that chunk differ): the file was regenerated or replaced. Point to "
            "the original data (--data), or refit with --overwrite"
        )


def verify_data(run: str | os.PathLike, cfg: RunConfig, jf: JetFile, sample: int = VERIFY_SAMPLE) -> None:
    """Compare the digests of up to ``sample`` fitted jets, spread over the finished chunks, with the
    same jets of ``jf``; a regenerated or replaced file raises DataError (see :func:`check_digests`)."""
    done = done_chunks(run, cfg)
    if not done:
        return
    picks = sorted({done[int(i)] for i in np.linspace(0, len(done) - 1, min(sample, len(done)))})
    for c in picks:
        idx = cfg.chunk_indices(c)
        stored = chunk_digests(run, c)
        pos = np.unique(np.linspace(0, len(idx) - 1, min(2, len(idx))).astype(int))
        check_digests(run, c, idx[pos], stored[pos], jet_digests(jf.read(idx[pos])), jf.path)


# ------------------------------------------------------------------------------------------ one jet


@dataclass(frozen=True)
class FittedJet:
    """One fitted jet, enough to evaluate it anywhere: spec, B = 1 parameter stacks, its normaliser, and
    its status (an empty jet was not fitted and renders as zeros; a failed one cannot be rendered)."""

    index: int
    spec: ModelSpec
    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    normaliser: object
    failed: bool
    empty: bool = False
    digest: np.ndarray | None = None
    support: np.ndarray | None = None
    decoding: Decoding | None = None

    def render(self, resolution: int = IMAGE_SIZE, device="cpu", conserve: bool = True) -> np.ndarray:
        if self.failed:
            raise InrFastError(
                f"jet {self.index} failed to fit (non-finite loss even in float32); nothing to render"
            )
        if self.empty:
            return np.zeros((resolution, resolution, N_CHANNELS), dtype=np.float32)
        return render_jet(
            self.spec, self.weights, self.biases, self.normaliser, resolution, device, conserve,
            support=self.support, decoding=self.decoding,
        )  # fmt: skip

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
        bool(res.failed[pos]),
        bool(res.empty[pos]),
        chunk_digests(run, chunk)[pos],
        None if res.support is None else res.support[pos],
        res.decoding,
    )
