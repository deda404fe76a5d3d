"""Q3, parity with the full 10,000-step seed recipe: ``inr-fast bench --parity``.

The seed preset runs its whole recipe (10,000 steps, cosine over 10,000, reference backend) on the first
``n`` jets of bench set A; its final reconstruction of each jet sets that jet's Q3 bar:

    Q3(jet) = rel_l2 <= the seed's final rel_l2 (equivalently psnr >= the seed's final psnr)
              and ssim >= the seed's final ssim
              and Q2's physics tolerances (every channel total within 1 %, jet mass within 2 %).

Every other method then fits the same jets, each jet stopping at its first check where Q3 holds, and is
timed from the images in memory to the stored parameters. The seed's full-recipe time per jet is
10,000 x its seconds per jet-step, measured in the same run with the batching that is fastest for it
on this machine (so the ratio is conservative). The seed's 10,000 steps take hours on 2 CPU cores, so
its endpoint (final metrics per jet) is written to a JSON file that a later run can reuse with
``--parity-seed FILE``; the timing runs are always repeated.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from inr_fast.atomic import atomic_write_bytes
from inr_fast.bench.common import JET_SETS, jet_set
from inr_fast.errors import ConfigError, DataError
from inr_fast.layout import IMAGE_SIZE, N_CHANNELS
from inr_fast.metrics.image import psnr, rel_l2, ssim
from inr_fast.metrics.levels import compute_all, quality_levels
from inr_fast.model.spec import bytes_per_jet, stored_bytes_per_jet
from inr_fast.train.api import fit
from inr_fast.train.config import get_preset

FULL_STEPS = 10_000
CURVE_EVERY = 500  # steps between the seed's recorded quality points
PARITY_SET = JET_SETS[0]  # bench set A
ENDPOINT_KEYS = ("rel_l2", "psnr", "ssim", "sum_rel_err_ecal", "sum_rel_err_hcal", "sum_rel_err_tracks",
                 "jet_mass_rel_err", "psnr_gain", "off_support", "off_support_abs")  # fmt: skip


def parity_targets(seed_metrics: dict) -> dict[str, np.ndarray]:
    """Per-jet Q3 bars from the seed's final :func:`inr_fast.metrics.levels.compute_all` values:
    {"rel_l2": (n,) upper bounds, "ssim": (n,) lower bounds}."""
    try:
        rel = np.asarray(seed_metrics["rel_l2"], dtype=np.float64)
        ssim = np.asarray(seed_metrics["ssim"], dtype=np.float64)
    except KeyError as e:
        raise ConfigError(f"seed endpoint metrics lack {e.args[0]!r}") from None
    if rel.shape != ssim.shape or rel.ndim != 1:
        raise ConfigError(f"seed endpoint: rel_l2 {rel.shape} and ssim {ssim.shape} must be (n,) alike")
    return {"rel_l2": rel, "ssim": ssim}


def parity_met(
    x_hat, x, targets: dict[str, np.ndarray], ids: Sequence[int] | None = None, metrics: dict | None = None
) -> np.ndarray:
    """(B,) bool: Q3 for reconstructions x_hat of originals x ((B, 125, 125, 3) GeV), jets ``ids``
    (positions in ``targets``; default 0..B-1). ``metrics``: a :func:`compute_all` result for the
    same images, to avoid recomputing it."""

    m = compute_all(x_hat, x, with_lpips=False) if metrics is None else metrics
    q2 = quality_levels(x_hat, x, m)["Q2"]
    ids = np.arange(len(q2)) if ids is None else np.asarray(ids, dtype=np.int64)
    rel = np.nan_to_num(m["rel_l2"], nan=np.inf)
    ssim = np.nan_to_num(m["ssim"], nan=-1.0)
    return q2 & (rel <= targets["rel_l2"][ids]) & (ssim >= targets["ssim"][ids])


class ParityMonitor:
    """Trainer monitor (see :func:`inr_fast.train.api.fit`): per jet, the first step and wall time at which
    Q3 holds; the jet stops there. Only jets with rel_l2 at or below their bar are scored fully."""

    def __init__(self, images: np.ndarray, targets: dict[str, np.ndarray]):

        self.images = images
        self.targets = targets
        self.t0 = time.perf_counter()
        self.first_step = np.full(len(images), -1, dtype=np.int64)
        self.first_time = np.full(len(images), np.nan)

    def __call__(self, step: int, ids: np.ndarray, recon: torch.Tensor) -> np.ndarray:
        x_hat = recon.detach().float().cpu().reshape(len(ids), IMAGE_SIZE, IMAGE_SIZE, N_CHANNELS).numpy()
        x = self.images[ids]
        ok = np.zeros(len(ids), dtype=bool)
        cand = np.flatnonzero(rel_l2(x_hat, x) <= self.targets["rel_l2"][ids])
        if cand.size:
            ok[cand] = parity_met(x_hat[cand], x[cand], self.targets, ids[cand])
        new = ok & (self.first_step[ids] < 0)
        self.first_step[ids[new]] = step
        self.first_time[ids[new]] = time.perf_counter() - self.t0
        return ok


class CurveMonitor:
    """Trainer monitor that records psnr, rel_l2 and ssim of every jet every ``every`` steps (never
    stops a jet); ``path``: a JSON-lines file appended as it goes, so a long run that is cut short
    still leaves its curve."""

    def __init__(self, images: np.ndarray, every: int = CURVE_EVERY, path: str | Path | None = None):
        self.images = images
        self.every = every
        self.path = None if path is None else Path(path)
        self.points: list[dict] = []
        self.t0 = time.perf_counter()

    def __call__(self, step: int, ids: np.ndarray, recon: torch.Tensor) -> np.ndarray:

        if step % self.every == 0 or step == FULL_STEPS - 1:
            x_hat = recon.detach().float().cpu().reshape(len(ids), IMAGE_SIZE, IMAGE_SIZE, N_CHANNELS)
            x = self.images[ids]
            point = {
                "step": int(step),
                "seconds": time.perf_counter() - self.t0,
                "ids": ids.tolist(),
                "psnr": psnr(x_hat.numpy(), x).tolist(),
                "rel_l2": rel_l2(x_hat.numpy(), x).tolist(),
                "ssim": ssim(x_hat.numpy(), x).tolist(),
            }
            self.points.append(point)
            if self.path is not None:
                with open(self.path, "a") as fh:
                    fh.write(json.dumps(point) + "\n")
        return np.zeros(len(ids), dtype=bool)


def parity_jets(n: int) -> dict:
    """Where the first ``n`` jets of bench set A come from (the record an endpoint file carries)."""
    name, seed, pt_min, pt_max = PARITY_SET
    return {"set": name, "seed": seed, "pt_min": pt_min, "pt_max": pt_max, "n": n}


def parity_images(n: int) -> tuple[np.ndarray, dict]:
    """The first ``n`` jets of bench set A (n, 125, 125, 3) and :func:`parity_jets`."""
    jets = parity_jets(n)
    # simulate 64 jets as the bench does and take the first n: the event stream depends only on the seed
    return jet_set(jets["seed"], jets["pt_min"], jets["pt_max"], max(n, 64))[:n], jets


def seed_endpoint(images: np.ndarray, jets: dict, device: str = "cpu", curve_path=None) -> dict:
    """Run the seed preset's full recipe on ``images`` and return its endpoint: the final metrics per
    jet (lists), wall seconds, steps, the quality curve and where the jets come from."""

    curve = CurveMonitor(images, CURVE_EVERY, curve_path)
    t0 = time.perf_counter()
    result = fit(images, "seed", backend="reference", device=device, batch_size=2, check_every=10,
                 target_psnr=None, target_rel_l2=None, target_level=None, monitor=curve)  # fmt: skip
    wall = time.perf_counter() - t0
    m = compute_all(result.reconstructions, images, with_lpips=False)

    return {
        "jets": jets,
        "steps": FULL_STEPS,
        "bytes_per_jet": int(bytes_per_jet(get_preset("seed").model)),
        "wall_s": wall,
        "steps_run": int(np.sum(result.n_steps)),
        "metrics": {k: np.asarray(m[k]).tolist() for k in ENDPOINT_KEYS},
        "curve": curve.points,
    }


def load_endpoint(path: str | Path, jets: dict) -> dict:
    """A seed endpoint written by an earlier ``--parity`` run, checked to be of the same jets."""
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise DataError(f"{p}: no such seed endpoint file") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{p}: not a readable JSON seed endpoint ({e})") from None
    if isinstance(d, dict) and "endpoint" in d:  # a whole ``--parity`` result: reuse its endpoint
        d = d["endpoint"]
    if not isinstance(d, dict):
        raise DataError(f"{p}: not a seed endpoint (a JSON object)")
    for key in ("jets", "steps", "metrics"):
        if key not in d:
            raise DataError(f"{p}: seed endpoint lacks {key!r}")
    if d["jets"] != jets:
        raise DataError(f"{p}: its jets {d['jets']} are not the jets of this run {jets}")
    if d["steps"] != FULL_STEPS:
        raise DataError(f"{p}: the seed ran {d['steps']} steps, not the full {FULL_STEPS}")
    parity_targets(d["metrics"])
    return d


def seed_step_seconds(images: np.ndarray, device: str, steps: int, batch_sizes=(1, 2, 8)) -> dict:
    """Seconds per jet-step of the seed preset (no monitor: as a user runs it) for each batching,
    ``steps`` steps each; "best" is the fastest."""

    out = {}
    for bs in batch_sizes:
        t0 = time.perf_counter()
        fit(images, "seed", backend="reference", device=device, max_steps=steps, schedule_steps=FULL_STEPS,
            batch_size=bs, target_psnr=None, target_rel_l2=None, target_level=None)  # fmt: skip
        out[f"batch_{bs}"] = (time.perf_counter() - t0) / (steps * len(images))
    out["best"] = min(out.values())
    return out


def run_to_parity(method, images: np.ndarray, targets: dict[str, np.ndarray], device: str) -> dict:
    """Fit ``images`` with a :class:`inr_fast.bench.common.Method`, each jet stopping when Q3 holds; a jet
    counts as reaching Q3 only if its stored result holds it."""

    monitor = ParityMonitor(images, targets)
    t0 = time.perf_counter()
    result = fit(images, preset=method.preset, backend=method.backend, device=device, target_psnr=None,
                 target_rel_l2=None, target_level=None, monitor=monitor, **method.overrides)  # fmt: skip
    wall = time.perf_counter() - t0
    cfg = get_preset(method.preset).with_overrides(**method.overrides)
    m = compute_all(result.reconstructions, images, with_lpips=False)
    holds = parity_met(result.reconstructions, images, targets, metrics=m)
    return {
        "method": method.name,
        "preset": method.preset,
        "backend": method.backend,
        "overrides": method.overrides,
        "n_jets": len(images),
        "wall_s": wall,
        "steps_run": int(np.sum(result.n_steps)),
        "bytes_per_jet": int(stored_bytes_per_jet(cfg.model, cfg.param_dtype)),
        "first_step": monitor.first_step.tolist(),
        "reached": ((monitor.first_step >= 0) & holds).tolist(),
        "metrics": {k: np.asarray(m[k]).tolist() for k in ENDPOINT_KEYS},
    }


def format_parity(endpoint: dict, timing: dict, rows: list[dict]) -> str:
    """Markdown: the seed's endpoint per jet, then per method the Q3 fraction, seconds per jet and the
    ratio to the seed's full recipe (with its fastest batching)."""
    full = timing["best"] * FULL_STEPS
    m = endpoint["metrics"]
    out = [
        f"seed recipe: {timing['best'] * 1e3:.0f} ms per jet-step (fastest batching), full 10,000-step "
        f"recipe {full:.0f} s per jet; a twentieth: {full / 20:.0f} s",
        "",
        "| jet | seed psnr_gain dB | seed rel_l2 | seed ssim | seed mass err % | "
        + " | ".join(f"{r['method']} rel_l2 / mass err %" for r in rows)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(rows),
    ]
    for j in range(len(m["rel_l2"])):
        cells = [
            f"{r['metrics']['rel_l2'][j]:.4f} / {100 * abs(r['metrics']['jet_mass_rel_err'][j]):.2f}"
            + ("" if r["reached"][j] else " (not Q3)")
            for r in rows
        ]
        out.append(
            f"| {j} | {m['psnr_gain'][j]:.1f} | {m['rel_l2'][j]:.4f} | {m['ssim'][j]:.5f} | "
            f"{100 * abs(m['jet_mass_rel_err'][j]):.2f} | " + " | ".join(cells) + " |"
        )
    out += ["", "| method | Q3 reached | s per jet | seed full recipe s per jet | speed-up | bytes/jet | "
            "median rel_l2 | median mass err % | median off-support |.| % |",
            "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip

    def medians(metrics: dict) -> str:
        off = metrics.get("off_support_abs")
        off_s = "" if off is None else f"{100 * np.median(off):.2f}"
        mass = 100 * np.median(np.abs(metrics["jet_mass_rel_err"]))
        return f"{np.median(metrics['rel_l2']):.4f} | {mass:.2f} | {off_s}"

    seed_bytes = endpoint.get("bytes_per_jet", "")
    out.append(f"| seed (full recipe) | — | {full:.0f} | {full:.0f} | 1× | {seed_bytes} | {medians(m)} |")
    for r in rows:
        per_jet = r["wall_s"] / r["n_jets"]
        n_ok = int(np.sum(r["reached"]))
        ratio = f"{full / per_jet:.0f}×" if n_ok == r["n_jets"] else "—"
        out.append(
            f"| {r['method']} | {n_ok}/{r['n_jets']} | {per_jet:.2f} | {full:.0f} | {ratio} | "
            f"{r['bytes_per_jet']} | {medians(r['metrics'])} |"
        )
    return "\n".join(out)


def parity(n_jets: int, methods, device: str = "cpu", endpoint_path: str | None = None,
           curve_path: str | Path | None = None, timing_steps: int = 50,
           endpoint_out: str | Path | None = None) -> dict:  # fmt: skip
    """The whole Q3 measurement; returns everything measured (the CLI writes it as JSON, whose
    ``endpoint`` a later run can reuse). ``curve_path``: JSON lines of the seed's quality every
    500 steps, written as the long run goes; ``endpoint_out``: where the seed's endpoint is written
    as soon as it is known (so an interruption after the hours of the seed loses nothing)."""
    if n_jets < 1:
        raise ConfigError(f"--parity-jets must be >= 1, got {n_jets}")
    if endpoint_path is not None:  # checked before the jets are simulated
        endpoint = load_endpoint(endpoint_path, parity_jets(n_jets))
        print(f"parity: seed endpoint from {endpoint_path}", flush=True)
    images, jets = parity_images(n_jets)
    if endpoint_path is None:
        print(f"parity: the seed's full {FULL_STEPS}-step recipe on {n_jets} jets (hours on a CPU) ...",
              flush=True)  # fmt: skip
        endpoint = seed_endpoint(images, jets, device, curve_path)
        if endpoint_out is not None:
            atomic_write_bytes(Path(endpoint_out), (json.dumps(endpoint, indent=1) + "\n").encode())
            print(f"parity: wrote the seed endpoint {endpoint_out} (reuse: --parity-seed)", flush=True)
    targets = parity_targets(endpoint["metrics"])
    print(f"parity: timing the seed recipe ({timing_steps} steps per batching) ...", flush=True)
    timing = seed_step_seconds(images, device, timing_steps)
    rows = []
    for m in methods:
        print(f"parity: {m.name} ({m.backend}) to Q3 ...", flush=True)
        rows.append(run_to_parity(m, images, targets, device))
    full = timing["best"] * FULL_STEPS
    return {
        "endpoint": endpoint,
        "seed_timing": timing,
        "seed_full_recipe_s_per_jet": full,
        "runs": rows,
        "table": format_parity(endpoint, timing, rows),
        "ratio_target": 20.0,
        "ratios": {
            r["method"]: (full * r["n_jets"] / r["wall_s"]) if r["wall_s"] > 0 else math.inf for r in rows
        },  # fmt: skip
    }
