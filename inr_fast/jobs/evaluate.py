"""The evaluate job: every metric of every fitted jet of a run directory, chunk by chunk (never the
whole run in memory), into ``metrics.csv`` and ``summary.json``, and the seed-style results table.

For every fitted jet the reconstruction x_hat is rendered from the STORED PARAMETERS on the original
(GeV) scale (the reference model in float32, as :func:`inr_fast.model.render.render_jet` does, batched
over the jets of a chunk), the original x is read from the run's data file
(:class:`inr_fast.data.jetfile.JetFile`), and :func:`inr_fast.metrics.levels.compute_all` gives every
metric. ``metrics.csv`` has one row per jet (columns :data:`ID_COLUMNS`, the metrics,
:data:`FIT_COLUMNS`); ``summary.json`` has mean, median, std (population, ddof = 0), min and max of every
numeric column over the finite values, overall and per label (quark = 1, gluon = 0 in the files we
write), and says whether the run is complete.

Resumable and never stale: each chunk's metrics are kept in ``RUN/eval/chunk_NNNNNN.json``, tied to the
sha256 of the chunk they measure, so a rerun measures only chunks that are new or changed; metrics.csv
and summary.json are written as a pair (summary.json records metrics.csv's sha256 and the run's state),
so an interrupted or out-of-date pair is simply redone, while an up-to-date one is replaced only with
``overwrite``. The originals are checked to be the jets that were fitted (content digests). LPIPS is
measured when its optional extra and weights are installed (``lpips="auto"``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from inr_fast import store
from inr_fast.atomic import atomic_write_bytes
from inr_fast.data.jetfile import JetFile
from inr_fast.data.stats import DataStats
from inr_fast.errors import ConfigError, DataError, InrFastError, OutputExistsError
from inr_fast.jobs.cluster import ClusterOptions, Executor, start_task
from inr_fast.jobs.physics import TAGGER_JETS, format_physics, physics_section, write_physics
from inr_fast.jobs.render import render_batch
from inr_fast.layout import label_name
from inr_fast.metrics.levels import compute_all, q2p
from inr_fast.metrics.lpips import available as lpips_available
from inr_fast.metrics.substructure import substructure
from inr_fast.progress import Progress, log
from inr_fast.train.backend import resolve_device
from inr_fast.util import jet_digests

METRICS_NAME = "metrics.csv"
SUMMARY_NAME = "summary.json"
ID_COLUMNS = ("index", "label", "failed", "empty")
#: per-jet facts of the fit: optimiser steps, wall seconds of the fit (the chunk's time shared equally
#: by its jets; NaN when the run does not record it), bytes on disk (the chunk file's size shared
#: equally by its jets), target reached.
FIT_COLUMNS = ("steps", "fit_seconds", "bytes", "reached_target")
INT_COLUMNS = (
    "index",
    "label",
    "failed",
    "empty",
    "steps",
    "bytes",
    "reached_target",
    "n_nonzero",
    "n_kept",
    "n_spurious",
)
EVAL_BATCH = 64  # jets rendered and measured together


def _refuse_existing(paths, overwrite: bool) -> None:
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{', '.join(existing)}: already exist(s); pass --overwrite to replace")


def _fmt_value(v) -> str:
    """CSV text of a value: integers as such, floats with full round-trip precision, nan/inf spelled."""
    if isinstance(v, int | np.integer | bool | np.bool_):
        return str(int(v))
    return repr(float(v))


def eval_path(run: str | os.PathLike, chunk: int) -> Path:
    return Path(run) / store.EVAL_DIR / f"chunk_{chunk:06d}.json"


def evaluate_chunk(
    run: Path,
    cfg: store.RunConfig,
    chunk: int,
    jf: JetFile,
    with_lpips: bool,
    device: torch.device,
    physics: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Every metric of the jets of one chunk (columns -> (k,) arrays), the originals checked against
    the digests of the jets that were fitted; with ``physics``, also the Q2p conditions (columns
    ``q2p``, ``q2p_*``) and the substructure observables of originals and reconstructions
    (``orig.NAME``, ``recon.NAME``, the second dict), judged with the run's zero-suppression
    levels."""
    result = store.load_chunk(run, chunk, cfg)
    digests = store.chunk_digests(run, chunk)
    nbytes = store.chunk_path(run, chunk).stat().st_size / max(len(result), 1)
    seconds = result.seconds / max(len(result), 1)
    columns: dict[str, list] = {}
    observables: dict[str, list] = {}
    levels = _levels(cfg, jf) if physics else None
    for start in range(0, len(result), EVAL_BATCH):
        pos = np.arange(start, min(start + EVAL_BATCH, len(result)))
        idx = result.indices[pos]
        x = jf.read(idx)
        store.check_digests(run, chunk, idx, digests[pos], jet_digests(x), jf.path)
        x_hat = render_batch(result, pos, device)
        metrics = compute_all(
            torch.from_numpy(x_hat).to(device), torch.from_numpy(x).to(device), with_lpips=with_lpips
        )
        rows = {
            "index": idx.astype(np.int64),
            "label": jf.labels(idx),
            "failed": np.asarray(result.failed)[pos].astype(np.int64),
            "empty": np.asarray(result.empty)[pos].astype(np.int64),
            **metrics,
            "steps": np.asarray(result.n_steps)[pos].astype(np.int64),
            "fit_seconds": np.full(len(pos), seconds),
            "bytes": np.full(len(pos), round(nbytes), dtype=np.int64),
            "reached_target": np.asarray(result.reached_target)[pos].astype(np.int64),
        }
        if physics:
            q = q2p(x_hat, x, levels=levels, lazy=False)
            rows["q2p"] = q["Q2p"].astype(np.int64)
            for name in Q2P_COLUMNS:
                rows[f"q2p_{name}"] = np.asarray(q[name], dtype=np.int64)
            for tag, images in (("orig", x), ("recon", x_hat)):
                for name, values in substructure(images, levels).items():
                    observables.setdefault(f"{tag}.{name}", []).append(np.asarray(values))
        for name, values in rows.items():
            columns.setdefault(name, []).append(np.asarray(values))
    cols = {name: np.concatenate(parts) for name, parts in columns.items()}
    return cols, ({name: np.concatenate(parts) for name, parts in observables.items()} if physics else None)


#: the Q2p conditions recorded per jet in metrics.csv (1 = holds)
Q2P_COLUMNS = ("Q2", "off_support", "floor", "counts", "cone_mass", "cone_girth", "cone_e2")


def _levels(cfg: store.RunConfig, jf: JetFile) -> np.ndarray:
    """The zero-suppression levels observables and Q2p judge by: the run's data statistics, or (a run
    fitted before they were recorded) those of the run's jets, read from the data."""
    if cfg.data_stats is not None:
        return cfg.data_stats.levels()
    stats = DataStats.of(jf.read(cfg.indices[:0]))
    for chunk in range(len(cfg.chunks)):
        stats = stats + DataStats.of(jf.read(cfg.chunk_indices(chunk)))
    return stats.levels()


def _load_eval(
    path: Path, sha256: str, with_lpips: bool, physics: bool = False
) -> dict[str, np.ndarray] | None:
    """A chunk's stored metrics if they measure the chunk as it is now (same sha256, same LPIPS
    setting, observables when asked for); None otherwise."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if d.get("chunk_sha256") != sha256 or d.get("lpips") != with_lpips:
        return None
    if physics and not d.get("physics"):
        return None
    return {
        k: np.asarray(v, dtype=np.int64 if k in INT_COLUMNS else np.float64) for k, v in d["columns"].items()
    }


def evaluate_chunk_task(
    run: str,
    chunk: int,
    sha256: str,
    with_lpips: bool,
    device: str,
    data: str | None,
    threads: int,
    fresh: bool,
    physics: bool = False,
) -> int:
    """Measure one chunk into RUN/eval/chunk_NNNNNN.json (a worker task, also what the serial executor
    runs), with ``threads`` torch threads. Metrics measured before for the same chunk sha256, LPIPS and
    physics settings are kept unless ``fresh``; the originals are checked against the fitted jets'
    digests either way. Returns the chunk's number of jets."""
    start_task(threads)
    run = Path(run)
    cfg = store.read_config(run)
    path = eval_path(run, chunk)
    with store.open_data(run, cfg, data) as jf:
        if not fresh and _load_eval(path, sha256, with_lpips, physics) is not None:
            idx = cfg.chunk_indices(chunk)
            store.check_digests(
                run, chunk, idx, store.chunk_digests(run, chunk), jet_digests(jf.read(idx)), jf.path
            )
            return len(idx)
        cols, obs = evaluate_chunk(run, cfg, chunk, jf, with_lpips, resolve_device(device), physics)
    record = {"chunk": chunk, "chunk_sha256": sha256, "lpips": with_lpips, "physics": physics}
    record["columns"] = {k: v.tolist() for k, v in cols.items()}
    if obs is not None:
        record["observables"] = {k: v.tolist() for k, v in obs.items()}
    atomic_write_bytes(path, (json.dumps(record, allow_nan=True) + "\n").encode())
    return len(cols["index"])


def _load_observables(path: Path) -> dict[str, np.ndarray]:
    d = json.loads(path.read_text()).get("observables", {})
    return {k: np.asarray(v, dtype=np.int64 if "_n_" in k else np.float64) for k, v in d.items()}


def evaluate_run(
    run: str | os.PathLike,
    with_lpips: bool = True,
    device: str | torch.device = "cpu",
    data: str | os.PathLike | None = None,
    progress: bool = False,
    fresh: bool = False,
    executor: Executor | None = None,
    physics: bool = False,
) -> tuple[dict[str, np.ndarray], dict, dict[str, np.ndarray] | None]:
    """Every metric of every fitted jet of ``run``: (table, state). table: column -> (n,) array in the
    order of the run's jets (columns :data:`ID_COLUMNS`, the keys of ``compute_all``,
    :data:`FIT_COLUMNS`); state: :func:`inr_fast.store.run_state` of the chunks measured (unfinished
    chunks are left out). One task per chunk (:func:`evaluate_chunk_task`) on ``executor`` (default:
    here, one after another); chunks measured before (``RUN/eval/``) are reused when unchanged, unless
    ``fresh``. The table is then read back from the per-chunk files; with ``physics`` the third value
    holds every jet's substructure observables (``orig.NAME``, ``recon.NAME``), else None."""
    run = Path(run)
    cfg = store.read_config(run)
    device = str(resolve_device(device))
    state = store.run_state(run, cfg)
    done = state["done"]
    if not done:
        raise DataError(
            f"{run}: no fitted jets yet (0 of {len(cfg.chunks)} chunks); run `inr-fast fit` first"
        )
    data = None if data is None else str(data)
    executor = executor or Executor()
    with Progress(sum(len(cfg.chunks[c]) for c in done), "evaluate", enabled=progress) as bar:
        args = [(str(run), c, state["sha256"][str(c)], with_lpips, device, data) for c in done]
        if executor.serial:
            for a in args:
                bar.update(evaluate_chunk_task(*a, torch.get_num_threads(), fresh, physics))
        else:
            bar.set_status(executor.describe())
            rid = hashlib.blake2b(str(run.resolve()).encode(), digest_size=4).hexdigest()
            futures = [
                executor.submit(
                    evaluate_chunk_task,
                    *a,
                    executor.threads,
                    fresh,
                    physics,
                    key=f"inr-fast-eval-{rid}-{a[1]}",
                )
                for a in args
            ]
            for future in executor.as_completed(futures):
                bar.update(future.result())
    parts, obs_parts = [], []
    for c in done:
        cols = _load_eval(eval_path(run, c), state["sha256"][str(c)], with_lpips, physics)
        if physics:
            obs_parts.append(_load_observables(eval_path(run, c)))
        if cols is None:  # pragma: no cover - a task reported success without writing
            raise DataError(f"{eval_path(run, c)}: missing after its task; run `inr-fast evaluate` again")
        parts.append(cols)
    table = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    obs = {name: np.concatenate([p[name] for p in obs_parts]) for name in obs_parts[0]} if physics else None
    return table, state, obs


def metrics_csv(table: dict[str, np.ndarray]) -> str:
    """The table as CSV text: a header, one row per jet, full-precision floats."""
    names = list(table)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    for i in range(len(table[names[0]])):
        writer.writerow([_fmt_value(table[n][i]) for n in names])
    return buf.getvalue()


def read_metrics(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """metrics.csv back as column -> (k,) array (int64 for :data:`INT_COLUMNS`, else float64)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no metrics; run `inr-fast evaluate {path.parent}` first")
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2 or "index" not in rows[0]:
        raise DataError(f"{path}: not a metrics.csv written by `inr-fast evaluate` (no header or no rows)")
    header = rows[0]
    out = {}
    try:
        for j, name in enumerate(header):
            dtype = np.int64 if name in INT_COLUMNS else np.float64
            out[name] = np.array([float(r[j]) for r in rows[1:]]).astype(dtype)
    except (ValueError, IndexError) as err:
        raise DataError(f"{path}: unreadable row ({err}); re-run `inr-fast evaluate --overwrite`") from None
    return out


def _stats(values: np.ndarray) -> dict:
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    out = {"n": int(v.size), "n_nonfinite": int(v.size - finite.size)}
    if finite.size == 0:
        return {**out, "mean": None, "median": None, "std": None, "min": None, "max": None}
    return {
        **out,
        "mean": float(np.mean(finite)),
        "median": float(np.median(finite)),
        "std": float(np.std(finite)),
        "min": float(np.min(finite)),
        "max": float(np.max(finite)),
    }


def summarise(
    table: dict[str, np.ndarray], run: str = "", with_lpips: bool = True, extra: dict | None = None
) -> dict:
    """summary.json content: for every numeric column but index and label, mean / median / std (ddof 0)
    / min / max over its finite values (null if none) with counts n and n_nonfinite; overall
    (``metrics``) and per label (``by_label``: {"1": {"name": "quark", "n_jets", "metrics"}, ...});
    ``extra`` (the run's completeness, backend, storage, ...) is merged in at the top."""
    names = [n for n in table if n not in ("index", "label")]
    labels = np.asarray(table["label"], dtype=np.int64)
    by_label = {}
    for lab in sorted(np.unique(labels), reverse=True):
        sel = labels == lab
        by_label[str(int(lab))] = {
            "name": label_name(lab),
            "n_jets": int(sel.sum()),
            "metrics": {n: _stats(np.asarray(table[n])[sel]) for n in names},
        }
    return {
        "run": str(run),
        **(extra or {}),
        "n_jets": int(len(labels)),
        "n_empty": int(np.sum(table.get("empty", 0))),
        "n_failed": int(np.sum(table["failed"])),
        "lpips": bool(with_lpips),
        "statistics": "over finite values; std with ddof = 0",
        "label_convention": "quark = 1, gluon = 0 (files written by inr-fast simulate)",
        "metrics": {n: _stats(table[n]) for n in names},
        "by_label": by_label,
    }


#: (header, column, scale, format) of the printed table: the seed's sample / PSNR / SSIM / LPIPS, then
#: psnr_gain, rel_l2 and the physics errors in percent.
TABLE_COLUMNS = (
    ("Sample", "index", 1.0, "{:.0f}"),
    ("Label", "label", 1.0, "label"),
    ("PSNR (dB)", "psnr", 1.0, "{:.2f}"),
    ("SSIM", "ssim", 1.0, "{:.4f}"),
    ("LPIPS", "lpips", 1.0, "{:.4f}"),
    ("Gain (dB)", "psnr_gain", 1.0, "{:.2f}"),
    ("rel L2", "rel_l2", 1.0, "{:.4f}"),
    ("dE ECAL %", "sum_rel_err_ecal", 100.0, "{:+.2f}"),
    ("dE HCAL %", "sum_rel_err_hcal", 100.0, "{:+.2f}"),
    ("dpT Trk %", "sum_rel_err_tracks", 100.0, "{:+.2f}"),
    ("dpT jet %", "jet_pt_rel_err", 100.0, "{:+.2f}"),
    ("dm jet %", "jet_mass_rel_err", 100.0, "{:+.2f}"),
    ("off-jet %", "off_support_abs", 100.0, "{:.2f}"),
    ("Steps", "steps", 1.0, "{:.0f}"),
)


def _cell(fmt: str, v: float) -> str:
    if fmt == "label":
        return label_name(int(v))
    return fmt.format(v) if np.isfinite(v) else str(v)


def table_rows(table: dict[str, np.ndarray], max_rows: int | None = 20) -> tuple[list[str], list[list[str]]]:
    """Header and text rows of the seed-style table: one row per jet (the first ``max_rows``; None: all),
    then 'median' and 'mean' rows over the finite values of all jets."""
    cols = [c for c in TABLE_COLUMNS if c[1] in table]
    header = [c[0] for c in cols]
    n = len(table["index"])
    shown = n if max_rows is None else min(n, max_rows)
    rows = [[_cell(fmt, float(table[name][i]) * s) for _, name, s, fmt in cols] for i in range(shown)]
    for i in range(shown):  # jets that were not fitted say so in the steps column
        status = "empty" if table.get("empty", np.zeros(n))[i] else "failed" if table["failed"][i] else ""
        if status:
            rows[i][-1] = status
    if shown < n:
        rows.append([f"... {n - shown} more"] + [""] * (len(cols) - 1))
    for stat, fn in (("median", np.median), ("mean", np.mean)):
        row = [stat]
        for _, name, s, fmt in cols[1:]:
            v = np.asarray(table[name], dtype=np.float64) * s
            v = v[np.isfinite(v)]
            row.append("" if name in ("label",) or v.size == 0 else _cell(fmt, float(fn(v))))
        rows.append(row)
    return header, rows


def format_table(table: dict[str, np.ndarray], max_rows: int | None = 20) -> str:
    """The seed's results table (| Sample | PSNR (dB) | SSIM | LPIPS |, Markdown) extended with the
    PSNR gain, relative L2 and the physics errors (signed, %)."""
    header, rows = table_rows(table, max_rows)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


@dataclass(frozen=True)
class EvaluateCommand:
    """``inr-fast evaluate RUN [--lpips auto|yes|no] [--device D] [--data FILE] [--max-rows N]
    [--overwrite]``."""

    run: str
    lpips: str = "auto"
    device: str = "cpu"
    data: str | None = None
    max_rows: int = 20
    overwrite: bool = False
    progress: bool = True
    executor: str = "serial"
    workers: int = 1
    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    physics: bool = True
    tagger_jets: int = TAGGER_JETS


def _csv_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def outputs_state(
    run: Path, state: dict, with_lpips: bool, physics: bool = False, tagger_jets: int = 0
) -> str:
    """Whether RUN's metrics.csv / summary.json pair is ``missing``, ``incomplete`` (one of the two,
    or summary.json does not vouch for metrics.csv, or for physics.json / observables.npz: a writer
    was interrupted), ``stale`` (it measured other chunks, or with another LPIPS or physics setting)
    or ``current``."""
    csv_path, summary_path = run / METRICS_NAME, run / SUMMARY_NAME
    if not csv_path.exists() and not summary_path.exists():
        return "missing"
    try:
        summary = json.loads(summary_path.read_text())
        if summary.get("metrics_csv_sha256") != _csv_sha256(csv_path):
            return "incomplete"
        for name, digest in (summary.get("physics_sha256") or {}).items():
            if _csv_sha256(run / name) != digest:
                return "incomplete"
    except (OSError, ValueError):
        return "incomplete"
    if summary.get("run_state") != state or summary.get("lpips") != with_lpips:
        return "stale"
    if bool(summary.get("physics_sha256")) != physics:
        return "stale"
    if physics and summary.get("tagger_jets") != tagger_jets:
        return "stale"
    return "current"


def evaluate(cmd: EvaluateCommand, client=None) -> tuple[dict[str, np.ndarray], dict, str]:
    """Run :func:`evaluate_run` holding the run's lock and write RUN/metrics.csv, then RUN/summary.json
    (which vouches for it). Returns (table, summary, printable text)."""
    run = Path(cmd.run)
    store.read_config(run)  # a clear error for a directory that is not a run, before anything else
    with store.RunLock(run, "inr-fast evaluate"):
        return evaluate_locked(cmd, client=client)


def evaluate_locked(
    cmd: EvaluateCommand, refuse_current: bool = True, client=None
) -> tuple[dict[str, np.ndarray], dict, str]:
    """:func:`evaluate` for a caller that holds the run's lock (the report). With ``refuse_current``
    False an up-to-date pair is simply read back."""
    run = Path(cmd.run)
    cfg = store.read_config(run)
    resolve_device(cmd.device)
    if cmd.lpips not in ("auto", "yes", "no"):
        raise ConfigError(f"--lpips must be auto, yes or no, got {cmd.lpips!r}")
    ok, why = lpips_available()
    if cmd.lpips == "yes" and not ok:
        raise InrFastError(f"--lpips yes: {why}")
    with_lpips = cmd.lpips == "yes" or (cmd.lpips == "auto" and ok)
    notes = []
    if not with_lpips and cmd.lpips == "auto":
        notes.append(f"LPIPS not measured: {why}")
    t0 = time.perf_counter()
    store.clean_stale_temporaries(run)
    if cmd.tagger_jets < 0:
        raise ConfigError(f"--tagger-jets must be >= 0, got {cmd.tagger_jets}")
    status = outputs_state(run, store.run_state(run, cfg), with_lpips, cmd.physics, cmd.tagger_jets)
    if status == "current" and not cmd.overwrite and not refuse_current:
        table = read_metrics(run / METRICS_NAME)
        summary = json.loads((run / SUMMARY_NAME).read_text())
        return table, summary, format_table(table, cmd.max_rows)
    if status == "current" and not cmd.overwrite:
        raise OutputExistsError(
            f"{run / METRICS_NAME} and {run / SUMMARY_NAME}: up to date; pass --overwrite to measure again"
        )
    if status in ("incomplete", "stale"):
        log.info("%s: metrics.csv / summary.json are %s: measuring again", run, status)
    with Executor(cmd.executor, cmd.workers, cmd.cluster, client) as executor:
        table, state, obs = evaluate_run(
            run, with_lpips, cmd.device, cmd.data, cmd.progress, cmd.overwrite, executor, cmd.physics
        )
    n_done, n_chunks = len(state["done"]), state["chunks"]
    extra = {
        "complete": n_done == n_chunks,
        "n_chunks_fitted": n_done,
        "n_chunks": n_chunks,
        "n_jets_planned": len(cfg.indices),
        "preset": cfg.fit.name,
        "backend": cfg.fit.backend,
        "backend_choice": cfg.extra.get("backend", cfg.fit.backend),
        "bytes_per_jet_on_disk": store.bytes_on_disk(run) / max(len(table["index"]), 1),
    }
    if n_done < n_chunks:
        notes.append(
            f"partial run: {n_done} of {n_chunks} chunks fitted ({len(table['index'])} of "
            f"{len(cfg.indices)} jets); re-run `inr-fast fit` to finish it"
        )
    physics_text = ""
    if cmd.physics:
        section, arrays = physics_section(
            run, cfg, table, obs, tagger_jets=cmd.tagger_jets, data=cmd.data, device=cmd.device
        )
        if "taggers_note" in section:
            notes.append(section["taggers_note"])
        extra["physics_sha256"] = write_physics(run, section, arrays)
        extra["tagger_jets"] = cmd.tagger_jets
        physics_text = format_physics(section)
    summary = summarise(table, str(run), with_lpips, extra)
    summary["notes"] = notes
    summary["run_state"] = state
    csv_path = run / METRICS_NAME
    atomic_write_bytes(csv_path, metrics_csv(table).encode(), overwrite=True)
    summary["metrics_csv_sha256"] = _csv_sha256(csv_path)
    text = json.dumps(summary, indent=1, allow_nan=False) + "\n"
    atomic_write_bytes(run / SUMMARY_NAME, text.encode(), overwrite=True)
    out = format_table(table, cmd.max_rows)
    if physics_text:
        out += "\n\n" + physics_text
    out += f"\n{run}: {len(table['index'])} jets evaluated in {time.perf_counter() - t0:.1f} s"
    out += f"; wrote {csv_path} and {run / SUMMARY_NAME}"
    out += f"\nfitted with preset {cfg.fit.name!r}, backend {extra['backend_choice']}"
    for note in notes:
        out += f"\nnote: {note}"
    return table, summary, out
