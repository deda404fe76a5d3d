"""``inr-fast evaluate RUN`` (metrics.csv, summary.json, a table) and ``inr-fast report RUN`` (a
self-contained report.html and its figures as PNG).

Evaluate: for every fitted jet of the run directory (chunk by chunk, never the whole run in memory),
the reconstruction x_hat is rendered from the STORED PARAMETERS on the original (GeV) scale (the
reference model in float32, as :func:`inr_fast.store.render_jet` does, batched over the jets of a
chunk), the original x is read from the run's data file (:class:`inr_fast.data.JetFile`), and
:func:`inr_fast.metrics.compute_all` gives every metric. ``metrics.csv`` has one row per jet (columns
:data:`ID_COLUMNS`, the metrics, :data:`FIT_COLUMNS`); ``summary.json`` has mean, median, std
(population, ddof = 0), min and max of every numeric column over the finite values, overall and per
label (quark = 1, gluon = 0 in the files we write).

Report: configuration, summary and per-jet tables, and the figures of :mod:`inr_fast.figures`
(``curve.png``, ``distributions.png``, ``compare.png``, ``superres.png`` in RUN, embedded in
``report.html`` as base64 PNG: no scripts, no external resources). ``curve.png`` and ``compare.png``
replace the fit's quick versions of the same names. Runs evaluate first when metrics.csv is missing.

Outputs are written atomically (temporary file in RUN, then rename) and refused when they exist unless
``--overwrite``.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from inr_fast.atomic import atomic_write_bytes
from inr_fast.errors import ConfigError, DataError, OutputExistsError
from inr_fast.layout import IMAGE_SIZE, N_CHANNELS

__all__ = [
    "EvaluateCommand",
    "ReportCommand",
    "add_evaluate_arguments",
    "add_report_arguments",
    "evaluate_run",
    "format_table",
    "read_metrics",
    "render_batch",
    "run_evaluate",
    "run_report",
    "summarise",
    "write_report",
]

METRICS_NAME = "metrics.csv"
SUMMARY_NAME = "summary.json"
REPORT_NAME = "report.html"
FIGURE_NAMES = ("curve.png", "distributions.png", "compare.png", "superres.png")
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
SUPERRES = 375


# ------------------------------------------------------------------------------------------ small I/O


def _atomic_write(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :mod:`inr_fast.atomic`)."""
    return atomic_write_bytes(path, data)


def _refuse_existing(paths, overwrite: bool) -> None:
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{', '.join(existing)}: already exist(s); pass --overwrite to replace")


def _fmt_value(v) -> str:
    """CSV text of a value: integers as such, floats with full round-trip precision, nan/inf spelled."""
    if isinstance(v, int | np.integer | bool | np.bool_):
        return str(int(v))
    return repr(float(v))


# ------------------------------------------------------------------------------------------ rendering


def render_batch(result, positions: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """Reconstructions of the jets at ``positions`` of a :class:`inr_fast.train.FitResult` (one chunk),
    rendered from their stored parameters on the native grid: (k, 125, 125, 3) float32 GeV.

    Same arithmetic as :func:`inr_fast.store.render_jet` at 125 x 125 (reference model, float32, no
    autocast, then the jet's normaliser inverted), batched over the k jets; failed jets are zeros.
    """
    from inr_fast.data import PerJetMaxScaler, pixel_grid
    from inr_fast.store import evaluate_params

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


def chunk_fit_seconds(run: Path, chunk: int, n_jets: int) -> float:
    """Fit seconds per jet of one chunk: the ``seconds`` entry of the chunk file's safetensors metadata
    (the chunk's wall time) divided by its jets, or NaN when the run does not record it."""
    from safetensors import safe_open

    from inr_fast.store import chunk_path

    try:
        with safe_open(str(chunk_path(run, chunk)), framework="pt") as fh:
            meta = fh.metadata() or {}
        return float(meta["seconds"]) / max(n_jets, 1)
    except (KeyError, ValueError, TypeError, OSError):
        return math.nan


# ------------------------------------------------------------------------------------------ evaluate


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
    from inr_fast.data import JetFile
    from inr_fast.metrics import compute_all
    from inr_fast.reference import stored_bytes_per_jet
    from inr_fast.store import chunk_done, load_chunk, read_config

    run = Path(run)
    cfg = read_config(run)
    chunks = cfg.chunks()
    done = [c for c in range(len(chunks)) if chunk_done(run, c)]
    if not done:
        raise DataError(f"{run}: no fitted jets yet (0 of {len(chunks)} chunks); run `inr-fast fit` first")
    note = (
        "" if len(done) == len(chunks) else f"{len(done)} of {len(chunks)} chunks fitted; the rest left out"
    )
    nbytes = stored_bytes_per_jet(cfg.fit.model, cfg.fit.param_dtype)
    columns: dict[str, list] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(chunks[c]) for c in done), desc="evaluate", unit="jet", leave=False)
    with JetFile(cfg.data_path, channels_first=cfg.channels_first) as jf:
        for c in done:
            result = load_chunk(run, c, cfg)
            seconds = chunk_fit_seconds(run, c, len(result))
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
    from inr_fast.figures import label_name

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


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory written by `inr-fast fit`")
    parser.add_argument("--no-lpips", action="store_true", help="skip LPIPS (no AlexNet weights needed)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: where to render and measure")
    parser.add_argument("--max-rows", type=int, default=20, metavar="N", help="jets printed (default 20)")
    parser.add_argument("--overwrite", action="store_true", help="replace metrics.csv and summary.json")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available to torch here; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ConfigError(f"--device must be cpu or cuda, got {device!r}")


def evaluate(cmd: EvaluateCommand) -> tuple[dict[str, np.ndarray], dict, str]:
    """Run :func:`evaluate_run` and write RUN/metrics.csv and RUN/summary.json atomically.
    Returns (table, summary, printable text)."""
    run = Path(cmd.run)
    from inr_fast.store import read_config

    read_config(run)  # a clear error for a directory that is not a run, before anything else
    _check_device(cmd.device)
    outputs = (run / METRICS_NAME, run / SUMMARY_NAME)
    _refuse_existing(outputs, cmd.overwrite)
    t0 = time.perf_counter()
    table, note = evaluate_run(run, cmd.lpips, cmd.device, progress=cmd.progress)
    summary = summarise(table, str(run), cmd.lpips)
    _atomic_write(outputs[0], metrics_csv(table).encode())
    _atomic_write(outputs[1], (json.dumps(summary, indent=1, allow_nan=False) + "\n").encode())
    text = format_table(table, cmd.max_rows)
    text += f"\n{run}: {len(table['index'])} jets evaluated in {time.perf_counter() - t0:.1f} s"
    text += f"{'' if cmd.lpips else ' (no LPIPS)'}; wrote {outputs[0]} and {outputs[1]}"
    if note:
        text += f"\nnote: {note}"
    return table, summary, text


def run_evaluate(args: argparse.Namespace) -> int:
    cmd = EvaluateCommand(
        run=args.run,
        lpips=not args.no_lpips,
        device=args.device,
        max_rows=args.max_rows,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(evaluate(cmd)[2])
    return 0


# ------------------------------------------------------------------------------------------ report


def figure_png(fig) -> bytes:
    """A Figure as PNG bytes (dpi 100)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def choose_jets(table: dict[str, np.ndarray], n: int = 2) -> list[int]:
    """Default jets to show: the median and the worst by rel_l2 among jets that did not fail (distinct,
    up to ``n``); file indices."""
    ok = np.flatnonzero((np.asarray(table["failed"]) == 0) & np.isfinite(table["rel_l2"]))
    if ok.size == 0:
        return []
    order = ok[np.argsort(table["rel_l2"][ok], kind="stable")]
    picks = [order[len(order) // 2], order[-1], order[0]]
    out: list[int] = []
    for p in picks:
        if int(table["index"][p]) not in out and len(out) < n:
            out.append(int(table["index"][p]))
    return out


def parse_jets(text: str | None) -> list[int] | None:
    """'0,3' -> [0, 3]; None -> None."""
    if text is None:
        return None
    try:
        jets = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--jets must be comma-separated jet indices such as 0,3, got {text!r}") from None
    if not jets:
        raise ConfigError("--jets is empty; give jet indices such as 0,3")
    return jets


def fitted_indices(run: Path, cfg) -> list[int]:
    """File indices of the jets in the run's finished chunks, in run order."""
    from inr_fast.store import chunk_done

    chunks = cfg.chunks()
    return [int(i) for c in range(len(chunks)) if chunk_done(run, c) for i in chunks[c]]


def _histories(run: Path, cfg, max_band: int = 500) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(indices, loss, psnr, rel_l2 histories) of up to ``max_band`` jets spread evenly over the run's
    finished chunks, read one chunk at a time."""
    from inr_fast.store import chunk_done, load_chunk

    chunks = cfg.chunks()
    done = [c for c in range(len(chunks)) if chunk_done(run, c)]
    total = sum(len(chunks[c]) for c in done)
    step = max(1, -(-total // max_band))
    parts: dict[str, list] = {k: [] for k in ("indices", "loss_history", "psnr_history", "rel_l2_history")}
    offset = 0
    for c in done:
        res = load_chunk(run, c, cfg)
        keep = np.arange((-offset) % step, len(res), step)
        offset += len(res)
        for k in parts:
            parts[k].append(np.asarray(getattr(res, k))[keep])
    return tuple(np.concatenate(parts[k]) for k in parts)


def _html_table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        elif isinstance(v, list) and len(v) > 12:
            out.append((f"{prefix}{k}", f"[{', '.join(map(str, v[:12]))}, ... ({len(v)} values)]"))
        else:
            out.append((f"{prefix}{k}", json.dumps(v) if not isinstance(v, str) else v))
    return out


SUMMARY_ROWS = (
    ("psnr", "PSNR [dB]"),
    ("psnr_gain", "PSNR gain [dB]"),
    ("ssim", "SSIM"),
    ("lpips", "LPIPS"),
    ("rel_l2", "relative L2"),
    ("rel_l2_ecal", "relative L2, ECAL"),
    ("rel_l2_hcal", "relative L2, HCAL"),
    ("rel_l2_tracks", "relative L2, Tracks"),
    ("sum_rel_err_ecal", "ECAL energy error"),
    ("sum_rel_err_hcal", "HCAL energy error"),
    ("sum_rel_err_tracks", "Tracks pT sum error"),
    ("jet_pt_rel_err", "jet pT error"),
    ("jet_mass_rel_err", "jet mass error"),
    ("nonzero_kept", "non-zero pixels kept"),
    ("off_support_abs", "|deposits| off the jet's pixels (ECAL+HCAL)"),
    ("steps", "steps"),
    ("fit_seconds", "fit seconds per jet"),
    ("bytes", "bytes per jet"),
)


def _summary_table(summary: dict) -> str:
    """One row per metric: all jets (finite count, mean, median, std, min, max), then mean and median per
    label; relative errors in %."""
    stats = ("mean", "median", "std", "min", "max")
    labels = list(summary["by_label"].values())
    header = ["metric", "jets", *stats] + [f"{g['name']} {s}" for g in labels for s in ("mean", "median")]
    rows = []
    for key, title in SUMMARY_ROWS:
        if key not in summary["metrics"]:
            continue
        scale = 100.0 if "rel_err" in key or key.startswith("off_support") else 1.0
        fmt = lambda st, s, k=scale: "" if st[s] is None else f"{st[s] * k:.5g}"  # noqa: E731
        st = summary["metrics"][key]
        row = [title + (" [%]" if scale != 1.0 else ""), str(st["n"] - st["n_nonfinite"])]
        row += [fmt(st, s) for s in stats]
        row += [fmt(g["metrics"][key], s) for g in labels for s in ("mean", "median")]
        rows.append(row)
    return _html_table(header, rows, "summary")


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1500px;padding:0 1em;
color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}
td,th{border:1px solid #ddd;padding:2px 8px;text-align:right}th{background:#f3f3f3}
table.config td{text-align:left;font-family:monospace}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:0.85em;color:#555}.note{color:#555;font-size:0.9em}
"""


def build_html(
    title: str,
    config_items: list[tuple[str, str]],
    summary: dict,
    table: dict[str, np.ndarray],
    figures: list[tuple[str, bytes, str]],
    max_rows: int = 200,
) -> str:
    """The report page: configuration, summary statistics, per-jet table and the figures as
    ``data:image/png;base64`` images (name, PNG bytes, caption). No scripts, no external resources."""
    header, rows = table_rows(table, max_rows)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        '<p class="note">Metrics on the original images in GeV (see DESIGN.md, "Metric conventions"). '
        "Relative errors are signed: (reconstruction &minus; original) / original. Labels: "
        "quark = 1, gluon = 0 in files written by <code>inr-fast simulate</code>.</p>",
        "<h2>Configuration</h2>",
        _html_table(["key", "value"], [list(kv) for kv in config_items], "config"),
        "<h2>Summary</h2>",
        _summary_table(summary),
        "<h2>Per-jet metrics</h2>",
        '<p class="note">Errors in %. The full table is metrics.csv in the run directory.</p>',
        _html_table(header, rows, "jets"),
    ]
    for name, png, caption in figures:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<h2>{html.escape(caption.split(':')[0])}</h2>")
        parts.append(
            f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)} ({html.escape(name)})</figcaption></figure>"
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


@dataclass(frozen=True)
class ReportCommand:
    """``inr-fast report RUN [--jets 0,3] [--superres-jet I] [--resolution P] [--no-lpips] [--overwrite]``."""

    run: str
    jets: tuple[int, ...] | None = None
    superres_jet: int | None = None
    resolution: int = SUPERRES
    lpips: bool = True
    overwrite: bool = False
    progress: bool = True


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory written by `inr-fast fit`")
    parser.add_argument(
        "--jets",
        default=None,
        metavar="I,J",
        help="jets (file indices) to compare (default: median and worst)",
    )
    parser.add_argument(
        "--superres-jet",
        type=int,
        default=None,
        metavar="I",
        help="jet rendered finely (default: first of --jets)",
    )
    parser.add_argument(
        "--resolution",
        type=int,
        default=SUPERRES,
        metavar="P",
        help=f"fine render P x P (default {SUPERRES})",
    )
    parser.add_argument("--no-lpips", action="store_true", help="if evaluate must run first: skip LPIPS")
    parser.add_argument("--overwrite", action="store_true", help="replace report.html and its figures")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def write_report(cmd: ReportCommand) -> Path:
    """Write RUN/report.html and RUN/{curve,distributions,compare,superres}.png; evaluates first when
    RUN/metrics.csv is missing. Returns the report's path."""
    from inr_fast import figures
    from inr_fast.data import JetFile
    from inr_fast.plots import save_figure
    from inr_fast.store import load_jet, read_config

    run = Path(cmd.run)
    cfg = read_config(run)
    if isinstance(cmd.resolution, bool) or cmd.resolution < 1:
        raise ConfigError(f"--resolution must be a positive integer, got {cmd.resolution}")
    own = [run / REPORT_NAME, run / "distributions.png", run / "superres.png"]
    _refuse_existing(own, cmd.overwrite)
    if not (run / METRICS_NAME).is_file():
        print(f"{run / METRICS_NAME} is missing: evaluating the run first")
        print(evaluate(EvaluateCommand(str(run), lpips=cmd.lpips, overwrite=True, progress=cmd.progress))[2])
    table = read_metrics(run / METRICS_NAME)
    summary_path = run / SUMMARY_NAME
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else summarise(table, str(run))
    fitted = fitted_indices(run, cfg)
    if sorted(fitted) != sorted(int(i) for i in table["index"]):
        raise DataError(
            f"{run / METRICS_NAME}: covers {len(table['index'])} jets but the run has {len(fitted)} fitted "
            f"jets (stale after a resumed fit?); run `inr-fast evaluate {run} --overwrite`"
        )
    hist = _histories(run, cfg)
    jets = list(cmd.jets) if cmd.jets is not None else choose_jets(table)
    known = set(int(i) for i in table["index"])
    missing = [j for j in jets if j not in known]
    if missing:
        raise DataError(
            f"--jets {missing}: not jets of this run (it has {len(known)} jets, e.g. {sorted(known)[:6]})"
        )
    failed = set(int(i) for i, f in zip(table["index"], table["failed"], strict=True) if f)
    if any(j in failed for j in jets):
        raise DataError(f"--jets: jet(s) {sorted(set(jets) & failed)} failed to fit; nothing to show")

    fit = cfg.fit
    pngs: list[tuple[str, bytes, str]] = []

    def emit(fig, name: str, caption: str) -> None:
        save_figure(fig, run / name, overwrite=True)
        pngs.append((name, (run / name).read_bytes(), caption))

    emit(
        figures.plot_loss_curves(
            hist[1], hist[2], hist[3], hist[0], target_psnr=fit.target_psnr, target_rel_l2=fit.target_rel_l2
        ),
        "curve.png",
        f"Loss curves: per jet (first 20), the per-step median and its 16-84 % band ({len(hist[0])} jets)",
    )
    emit(
        figures.plot_distributions(table),
        "distributions.png",
        "Distributions: per-jet metrics split by label (quark = 1, gluon = 0)",
    )
    if jets:
        pos = {int(i): k for k, i in enumerate(table["index"])}
        with JetFile(cfg.data_path, channels_first=cfg.channels_first) as jf:
            originals = jf.read(jets)
        recons = np.stack([load_jet(run, j).render() for j in jets])
        captions = [
            f"rel L2 {table['rel_l2'][pos[j]]:.3f}, PSNR {table['psnr'][pos[j]]:.1f} dB" for j in jets
        ]
        emit(
            figures.plot_compare_residuals(originals, recons, jets, captions),
            "compare.png",
            "Original, reconstruction and residual: jets "
            + ", ".join(map(str, jets))
            + " per channel (log colour scale; residual in symmetric-log, red = excess, blue = deficit)",
        )
        sr = cmd.superres_jet if cmd.superres_jet is not None else jets[0]
        if sr not in known or sr in failed:
            raise DataError(f"--superres-jet {sr}: not a successfully fitted jet of this run")
        jet = load_jet(run, sr)
        with JetFile(cfg.data_path, channels_first=cfg.channels_first) as jf:
            original = jf.read_one(sr)
        emit(
            figures.plot_superres(original, jet.render(), jet.render(cmd.resolution), sr),
            "superres.png",
            f"Super-resolution: jet {sr} as stored and rendered at {cmd.resolution} x {cmd.resolution}"
            " (per-channel sums conserved)",
        )
    config_items = [
        ("run directory", str(run.resolve())),
        *_flatten(json.loads((run / "config.json").read_text())),
    ]
    page = build_html(f"inr-fast report: {run.name}", config_items, summary, table, pngs)
    return _atomic_write(run / REPORT_NAME, page.encode())


def run_report(args: argparse.Namespace) -> int:
    cmd = ReportCommand(
        run=args.run,
        jets=None if args.jets is None else tuple(parse_jets(args.jets)),
        superres_jet=args.superres_jet,
        resolution=args.resolution,
        lpips=not args.no_lpips,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    path = write_report(cmd)
    names = ", ".join(FIGURE_NAMES)
    print(f"wrote {path} (self-contained) and {names} in {path.parent}")
    return 0
