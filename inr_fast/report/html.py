"""The report: a self-contained ``report.html`` (no scripts, no external resources) with the summary
and per-jet tables and the figures of :mod:`inr_fast.report.figures` (``curve.png``,
``distributions.png``, ``compare.png``, ``superres.png`` in the run directory, embedded as base64 PNG);
and the fit's own figures (``curve.png``, ``compare.png``), drawn by the same functions.
Runs evaluate first when metrics.csv is missing. Outputs are written atomically and refused when they
exist unless ``overwrite``.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inr_fast import store
from inr_fast.atomic import atomic_write_bytes
from inr_fast.errors import ConfigError, DataError
from inr_fast.jobs.evaluate import EvaluateCommand, _refuse_existing, evaluate_locked, table_rows
from inr_fast.jobs.physics import TAGGER_JETS, read_physics
from inr_fast.model.render import MAX_RESOLUTION
from inr_fast.progress import log
from inr_fast.report import figures
from inr_fast.report import physics as physics_figures
from inr_fast.report.plots import save_figure
from inr_fast.util import jet_digests

REPORT_NAME = "report.html"
FIGURE_NAMES = ("curve.png", "distributions.png", "compare.png", "superres.png")
#: figures of the physics section (when the run was evaluated with physics)
PHYSICS_FIGURES = ("observables.png", "roc.png")
SUPERRES = 375


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


def _histories(run: Path, cfg, max_band: int = 500) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(indices, loss, psnr, rel_l2 histories) of up to ``max_band`` jets spread evenly over the run's
    finished chunks, read one chunk at a time."""
    done = store.done_chunks(run, cfg)
    total = sum(len(cfg.chunks[c]) for c in done)
    step = max(1, -(-total // max_band))
    parts: dict[str, list] = {k: [] for k in ("indices", "loss_history", "psnr_history", "rel_l2_history")}
    offset = 0
    for c in done:
        res = store.load_chunk(run, c, cfg)
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
.warn{background:#fff3cd;border:1px solid #e0c36c;padding:0.4em 0.8em}
"""


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:+.3g}"


def _physics_html(section: dict) -> str:
    """The physics section: Q2p and its conditions, then per observable the bias, resolution and fraction
    of jets outside 2 % for all jets and per class, then the taggers."""
    parts = ["<h2>Physics fidelity</h2>"]
    q = section.get("q2p") or {}
    if q.get("q2p") is not None:
        conds = ", ".join(f"{k[4:]} {100 * v:.1f} %" for k, v in q.items() if k != "q2p" and v is not None)
        parts.append(
            f"<p>Q2p (Q2 and the physics conditions, docs/design.md) holds for <b>{100 * q['q2p']:.1f} %</b>"
            f" of {section['n_jets']} jets; per condition: {html.escape(conds)}.</p>"
        )
    parts.append(
        '<p class="note">Per observable: the median (bias) and half the central 68 % width (res68) of the '
        "per-jet error (reconstruction &minus; original) / original in %, and the fraction of jets outside "
        "&plusmn;2 %; *_tower_var errors are absolute. Observables of originals and reconstructions are "
        "judged with the same zero-suppression levels.</p>"
    )
    by = {}
    for r in section.get("fidelity", []):
        by.setdefault(r["observable"], {})[r["class"]] = r
    header = ["observable"] + [
        f"{c} {s}" for c in ("all", "quark", "gluon") for s in ("bias", "res68", "out")
    ]
    rows = []
    for name, cls in by.items():
        row = [name]
        for c in ("all", "quark", "gluon"):
            r = cls.get(c)
            if r is None:
                row += ["", "", ""]
                continue
            if name.endswith("tower_var"):
                row += [
                    "" if r["bias"] is None else f"{r['bias']:.3g}",
                    "" if r["res68"] is None else f"{r['res68']:.3g}",
                ]
            else:
                row += [_pct(r["bias"]), _pct(r["res68"])]
            row.append("" if r["frac_out"] is None else f"{100 * r['frac_out']:.1f} %")
        rows.append(row)
    parts.append(_html_table(header, rows, "physics"))
    taggers = section.get("taggers") or {}
    if taggers:
        header = ["tagger", "jets", "AUC originals", "AUC reconstructions", "dAUC", "dAUC error", "flips"]
        rows = [
            [
                name,
                str(t["n"]),
                f"{t['auc']:.4f}",
                f"{t['auc_hat']:.4f}",
                f"{t['dauc']:+.4f}",
                "" if t["dauc_err"] is None else f"{t['dauc_err']:.4f}",
                f"{100 * t['flip_frac']:.1f} %",
            ]
            for name, t in taggers.items()
        ]
        parts.append(
            '<p class="note">Quark/gluon taggers trained on the original jets only (cross-fitted, '
            f"{section.get('tagger_sample', {}).get('n_folds', '')} folds) and applied to originals and "
            "reconstructions of the same held-out jets; dAUC error from a paired bootstrap; flips: decisions "
            "that change at the originals' median score.</p>"
        )
        parts.append(_html_table(header, rows, "taggers"))
    elif section.get("taggers_note"):
        parts.append(f'<p class="note">{html.escape(section["taggers_note"])}</p>')
    return "\n".join(parts)


def build_html(
    title: str,
    config_items: list[tuple[str, str]],
    summary: dict,
    table: dict[str, np.ndarray],
    figures: list[tuple[str, bytes, str]],
    max_rows: int = 200,
    physics: dict | None = None,
) -> str:
    """The report page: notes (a partial run says so first), summary statistics, the figures, the per-jet
    table, and the configuration last; figures as ``data:image/png;base64`` images (name, PNG bytes,
    caption). No scripts, no external resources."""
    header, rows = table_rows(table, max_rows)
    notes = "".join(f'<p class="warn">{html.escape(n)}</p>' for n in summary.get("notes", []))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        notes,
        '<p class="note">Metrics on the original images in GeV (see docs/design.md, "Metric conventions"). '
        "Relative errors are signed: (reconstruction &minus; original) / original. Labels as in files "
        "written by <code>inr-fast simulate</code> (quark = 1, gluon = 0).</p>",
        "<h2>Summary</h2>",
        _summary_table(summary),
    ]
    if physics is not None:
        parts.append(_physics_html(physics))
    for name, png, caption in figures:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<h2>{html.escape(caption.split(':')[0])}</h2>")
        parts.append(
            f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)} ({html.escape(name)})</figcaption></figure>"
        )
    parts += [
        "<h2>Per-jet metrics</h2>",
        '<p class="note">Errors in %. The full table is metrics.csv in the run directory.</p>',
        _html_table(header, rows, "jets"),
        "<h2>Configuration</h2>",
        _html_table(["key", "value"], [list(kv) for kv in config_items], "config"),
        "</body></html>\n",
    ]
    return "\n".join(parts)


@dataclass(frozen=True)
class ReportCommand:
    """``inr-fast report RUN [--jets 0,3] [--superres-jet I] [--resolution P] [--lpips auto|yes|no]
    [--data FILE] [--overwrite]``."""

    run: str
    jets: tuple[int, ...] | None = None
    superres_jet: int | None = None
    resolution: int = SUPERRES
    lpips: str = "auto"
    data: str | None = None
    overwrite: bool = False
    progress: bool = True
    physics: bool = True
    tagger_jets: int = TAGGER_JETS


def _originals(run: Path, cfg: store.RunConfig, jets: list[int], data) -> np.ndarray:
    """The original images of ``jets`` (file indices) from the run's data, checked against the digests
    of the jets that were fitted."""
    with store.open_data(run, cfg, data) as jf:
        x = jf.read(jets)
    for j, image in zip(jets, x, strict=True):
        chunk, pos = cfg.locate(j)
        store.check_digests(
            run, chunk, [j], store.chunk_digests(run, chunk)[pos : pos + 1], jet_digests(image[None]), jf.path
        )
    return x


def write_report(cmd: ReportCommand) -> Path:
    """Write RUN/report.html and RUN/{curve,distributions,compare,superres}.png (holding the run's lock);
    evaluates first when RUN/metrics.csv is missing, incomplete or out of date. Returns the report's
    path."""
    run = Path(cmd.run)
    cfg = store.read_config(run)
    if isinstance(cmd.resolution, bool) or not 1 <= cmd.resolution <= MAX_RESOLUTION:
        raise ConfigError(f"--resolution must be an integer in 1..{MAX_RESOLUTION}, got {cmd.resolution}")
    own = [run / REPORT_NAME, run / "distributions.png", run / "superres.png"]
    own += [run / name for name in PHYSICS_FIGURES]
    _refuse_existing(own, cmd.overwrite)
    with store.RunLock(run, "inr-fast report"):
        evaluated = EvaluateCommand(
            str(run),
            lpips=cmd.lpips,
            data=cmd.data,
            progress=cmd.progress,
            physics=cmd.physics,
            tagger_jets=cmd.tagger_jets,
        )
        table, summary, text = evaluate_locked(evaluated, refuse_current=False)
        if "evaluated in" in text:
            log.info("evaluated the run first:\n%s", text)
        return _write_report_locked(cmd, run, cfg, table, summary)


def _write_report_locked(cmd: ReportCommand, run: Path, cfg, table: dict, summary: dict) -> Path:
    hist = _histories(run, cfg)
    jets = list(cmd.jets) if cmd.jets is not None else choose_jets(table)
    known = set(int(i) for i in table["index"])
    missing = [j for j in jets if j not in known]
    if missing:
        raise DataError(
            f"--jets {missing}: not jets of this run (it has {len(known)} jets, e.g. {sorted(known)[:6]})"
        )
    not_fitted = set(
        int(i) for i, f, e in zip(table["index"], table["failed"], table["empty"], strict=True) if f or e
    )
    if any(j in not_fitted for j in jets):
        raise DataError(
            f"--jets: jet(s) {sorted(set(jets) & not_fitted)} failed or are empty; nothing to show"
        )

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
        "Distributions: per-jet metrics of quark and gluon jets",
    )
    if jets:
        pos = {int(i): k for k, i in enumerate(table["index"])}
        originals = _originals(run, cfg, jets, cmd.data)
        recons = np.stack([store.load_jet(run, j).render() for j in jets])
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
        if sr not in known or sr in not_fitted:
            raise DataError(f"--superres-jet {sr}: not a successfully fitted jet of this run")
        jet = store.load_jet(run, sr)
        original = _originals(run, cfg, [sr], cmd.data)[0]
        emit(
            figures.plot_superres(original, jet.render(), jet.render(cmd.resolution), sr),
            "superres.png",
            f"Super-resolution: jet {sr} as stored and rendered at {cmd.resolution} x {cmd.resolution}"
            " (per-channel sums conserved)",
        )
    phys = read_physics(run) if cmd.physics else None
    if phys is not None:
        section, arrays = phys
        names = sorted(k[5:] for k in arrays if k.startswith("orig."))
        keep = ~(np.asarray(table["failed"], dtype=bool) | np.asarray(table["empty"], dtype=bool))
        emit(
            physics_figures.distribution_figure(
                {k: arrays[f"orig.{k}"][keep] for k in names},
                {k: arrays[f"recon.{k}"][keep] for k in names},
                arrays["label"][keep],
            ),
            "observables.png",
            "Observables: original (solid) and reconstructed (dashed) distributions per class, with the "
            f"ratio reconstruction / original ({int(keep.sum())} jets)",
        )
        if section.get("taggers"):
            results = {
                name: {
                    **{k: float("nan") if v is None else v for k, v in t.items()},
                    "roc": tuple(map(np.asarray, t["roc"])),
                    "roc_hat": tuple(map(np.asarray, t["roc_hat"])),
                }
                for name, t in section["taggers"].items()
            }
            emit(
                physics_figures.roc_figure(results),
                "roc.png",
                "Taggers: ROC curves of the quark/gluon taggers on original (solid) and reconstructed "
                f"(dashed) jets ({section['tagger_sample']['n']} jets)",
            )
    config_items = [
        ("run directory", str(run.resolve())),
        *_flatten(json.loads((run / "config.json").read_text())),
    ]
    page = build_html(
        f"inr-fast report: {run.name}",
        config_items,
        summary,
        table,
        pngs,
        physics=phys[0] if phys is not None else None,
    )
    return atomic_write_bytes(run / REPORT_NAME, page.encode())


def write_fit_figures(run: str | Path, n_compare: int = 2) -> None:
    """RUN/curve.png (loss, PSNR and rel_l2 curves) and RUN/compare.png (original, reconstruction and
    residual of the first ``n_compare`` fitted jets), replacing earlier versions: the fit's own look at
    its result, drawn by the same functions as the report's figures."""
    run = Path(run)
    cfg = store.read_config(run)
    hist = _histories(run, cfg)
    fig = figures.plot_loss_curves(
        hist[1],
        hist[2],
        hist[3],
        hist[0],
        target_psnr=cfg.fit.target_psnr,
        target_rel_l2=cfg.fit.target_rel_l2,
    )
    save_figure(fig, run / "curve.png", overwrite=True)
    facts = store.fit_facts(run)
    ok = np.flatnonzero((facts["failed"] == 0) & (facts["empty"] == 0))[:n_compare]
    if ok.size == 0:
        return
    jets = [int(i) for i in facts["indices"][ok]]
    originals = _originals(run, cfg, jets, None)
    recons = np.stack([store.load_jet(run, j).render() for j in jets])
    captions = [f"rel L2 {facts['rel_l2'][k]:.3f}, PSNR {facts['psnr'][k]:.1f} dB" for k in ok]
    save_figure(
        figures.plot_compare_residuals(originals, recons, jets, captions), run / "compare.png", overwrite=True
    )
