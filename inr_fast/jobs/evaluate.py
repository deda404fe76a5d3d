"""The evaluate job: every metric of every fitted jet of a run directory, chunk by chunk (never the
whole run in memory), into ``metrics.csv`` and ``summary.json``, and the seed-style results table.

For every fitted jet the reconstruction x_hat is rendered from the STORED PARAMETERS on the original
(GeV) scale (the reference model in float32, as :func:`inr_fast.model.render.render_jet` does, batched
over the jets of a chunk), the original x is read from the run's data file
(:class:`inr_fast.data.jetfile.JetFile`), and :func:`inr_fast.metrics.levels.compute_all` gives every
metric. ``metrics.csv`` has one row per jet (columns :data:`ID_COLUMNS`, the metrics,
:data:`FIT_COLUMNS`); ``summary.json`` has mean, median, std (population, ddof = 0), min and max of every
numeric column over the finite values, overall and per label (quark = 1, gluon = 0 in the files we
write). Outputs are written atomically and refused when they exist unless ``overwrite``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from inr_fast import store
from inr_fast.atomic import atomic_write_bytes
from inr_fast.data.grid import pixel_grid
from inr_fast.data.jetfile import JetFile
from inr_fast.data.normalise import PerJetMaxScaler
from inr_fast.errors import ConfigError, DataError, OutputExistsError
from inr_fast.layout import IMAGE_SIZE, N_CHANNELS, label_name
from inr_fast.metrics.levels import compute_all
from inr_fast.model.render import evaluate_params
from inr_fast.model.spec import stored_bytes_per_jet

METRICS_NAME = "metrics.csv"
SUMMARY_NAME = "summary.json"
ID_COLUMNS = ("index", "label", "failed")
#: per-jet facts of the fit: optimiser steps, wall seconds of the fit (the chunk's time shared equally
#: by its jets; NaN when the run does not store it), bytes of the float32 parameters, target reached.
FIT_COLUMNS = ("steps", "fit_seconds", "bytes", "reached_target")
INT_COLUMNS = (
    "index",
    "label",
    "failed",
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


def render_batch(result, positions: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """Reconstructions of the jets at ``positions`` of a :class:`inr_fast.train.result.FitResult` (one chunk),
    rendered from their stored parameters on the native grid: (k, 125, 125, 3) float32 GeV.

    Same arithmetic as :func:`inr_fast.model.render.render_jet` at 125 x 125 (reference model, float32, no
    autocast, then the jet's normaliser inverted), batched over the k jets; failed jets are zeros.
    """

    positions = np.asarray(positions, dtype=np.int64)
    out = np.zeros((len(positions), IMAGE_SIZE, IMAGE_SIZE, N_CHANNELS), dtype=np.float32)
    ok = positions[~np.asarray(result.failed, dtype=bool)[positions]]
    if ok.size == 0:
        return out
    dev = torch.device(device)
    sel = torch.from_numpy(ok)
    weights = [w[sel] for w in result.weights]
    biases = [b[sel] for b in result.biases]
    values = evaluate_params(result.config.model, weights, biases, pixel_grid(IMAGE_SIZE, device=dev))
    if result.norm_scales is not None:
        norm = PerJetMaxScaler(np.asarray(result.norm_scales)[ok], mode="jet")
    else:
        norm = result.normaliser
    if norm is not None:
        values = norm.inverse(values)
    images = values.to("cpu", torch.float32).numpy().reshape(len(ok), IMAGE_SIZE, IMAGE_SIZE, N_CHANNELS)
    out[np.isin(positions, ok)] = images
    return out


def evaluate_run(
    run: str | os.PathLike,
    with_lpips: bool = True,
    device: str = "cpu",
    lpips_cache: str | None = None,
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], str]:
    """Every metric of every fitted jet of ``run``: (table, note). table: column -> (k,) array in the
    order of the run's jets (columns :data:`ID_COLUMNS`, the keys of ``compute_all``,
    :data:`FIT_COLUMNS`); note: '' or which chunks are not fitted yet (they are left out)."""

    run = Path(run)
    cfg = store.read_config(run)
    chunks = cfg.chunks()
    done = [c for c in range(len(chunks)) if store.chunk_done(run, c)]
    if not done:
        raise DataError(f"{run}: no fitted jets yet (0 of {len(chunks)} chunks); run `inr-fast fit` first")
    note = (
        "" if len(done) == len(chunks) else f"{len(done)} of {len(chunks)} chunks fitted; the rest left out"
    )
    nbytes = stored_bytes_per_jet(cfg.fit.model, cfg.fit.param_dtype)
    columns: dict[str, list] = {}
    bar = None
    if progress:
        bar = tqdm(total=sum(len(chunks[c]) for c in done), desc="evaluate", unit="jet", leave=False)
    with JetFile(cfg.data_path, channels_first=cfg.channels_first) as jf:
        for c in done:
            result = store.load_chunk(run, c, cfg)
            seconds = store.chunk_fit_seconds(run, c, len(result))
            for start in range(0, len(result), EVAL_BATCH):
                pos = np.arange(start, min(start + EVAL_BATCH, len(result)))
                idx = result.indices[pos]
                x = jf.read(idx)
                x_hat = render_batch(result, pos, device)
                dev = torch.device(device)
                metrics = compute_all(
                    torch.from_numpy(x_hat).to(dev),
                    torch.from_numpy(x).to(dev),
                    with_lpips=with_lpips,
                    cache_dir=lpips_cache,
                )
                rows = {
                    "index": idx.astype(np.int64),
                    "label": jf.labels(idx),
                    "failed": np.asarray(result.failed)[pos].astype(np.int64),
                    **metrics,
                    "steps": np.asarray(result.n_steps)[pos].astype(np.int64),
                    "fit_seconds": np.full(len(pos), seconds),
                    "bytes": np.full(len(pos), nbytes, dtype=np.int64),
                    "reached_target": np.asarray(result.reached_target)[pos].astype(np.int64),
                }
                for name, values in rows.items():
                    columns.setdefault(name, []).append(np.asarray(values))
                if bar is not None:
                    bar.update(len(pos))
    if bar is not None:
        bar.close()
    return {name: np.concatenate(parts) for name, parts in columns.items()}, note


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


def summarise(table: dict[str, np.ndarray], run: str = "", with_lpips: bool = True) -> dict:
    """summary.json content: for every numeric column but index and label, mean / median / std (ddof 0)
    / min / max over its finite values (null if none) with counts n and n_nonfinite; overall
    (``metrics``) and per label (``by_label``: {"1": {"name": "quark", "n_jets", "metrics"}, ...})."""
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
        "n_jets": int(len(labels)),
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
    ("Label", "label", 1.0, "{:.0f}"),
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
    return fmt.format(v) if np.isfinite(v) else str(v)


def table_rows(table: dict[str, np.ndarray], max_rows: int | None = 20) -> tuple[list[str], list[list[str]]]:
    """Header and text rows of the seed-style table: one row per jet (the first ``max_rows``; None: all),
    then 'median' and 'mean' rows over the finite values of all jets."""
    cols = [c for c in TABLE_COLUMNS if c[1] in table]
    header = [c[0] for c in cols]
    n = len(table["index"])
    shown = n if max_rows is None else min(n, max_rows)
    rows = [[_cell(fmt, float(table[name][i]) * s) for _, name, s, fmt in cols] for i in range(shown)]
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
    """``inr-fast evaluate RUN [--no-lpips] [--device D] [--max-rows N] [--overwrite]``."""

    run: str
    lpips: bool = True
    device: str = "cpu"
    max_rows: int = 20
    overwrite: bool = False
    progress: bool = True


def _check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available to torch here; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ConfigError(f"--device must be cpu or cuda, got {device!r}")


def evaluate(cmd: EvaluateCommand) -> tuple[dict[str, np.ndarray], dict, str]:
    """Run :func:`evaluate_run` and write RUN/metrics.csv and RUN/summary.json atomically.
    Returns (table, summary, printable text)."""
    run = Path(cmd.run)
    store.read_config(run)  # a clear error for a directory that is not a run, before anything else
    _check_device(cmd.device)
    outputs = (run / METRICS_NAME, run / SUMMARY_NAME)
    _refuse_existing(outputs, cmd.overwrite)
    t0 = time.perf_counter()
    table, note = evaluate_run(run, cmd.lpips, cmd.device, progress=cmd.progress)
    summary = summarise(table, str(run), cmd.lpips)
    atomic_write_bytes(outputs[0], metrics_csv(table).encode())
    atomic_write_bytes(outputs[1], (json.dumps(summary, indent=1, allow_nan=False) + "\n").encode())
    text = format_table(table, cmd.max_rows)
    text += f"\n{run}: {len(table['index'])} jets evaluated in {time.perf_counter() - t0:.1f} s"
    text += f"{'' if cmd.lpips else ' (no LPIPS)'}; wrote {outputs[0]} and {outputs[1]}"
    if note:
        text += f"\nnote: {note}"
    return table, summary, text
