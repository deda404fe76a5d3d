"""``inr-fast bench``'s end-to-end suite: the time each method needs to bring jets to the quality
levels Q1 and Q2 against the seed recipe, in one run on one machine, with the storage each needs.

Everything is measured in one run on one machine, which the output names; ratios are within the run.
Results: a JSON file (default ``benchmarks/results/bench-<host>-<time>.json``) and a Markdown table
printed for BENCHMARKS.md. ``--quick`` keeps the whole run to a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from inr_fast.bench.common import (
    JET_SETS,
    LEVELS,
    Method,
    default_methods,
    jet_set,
    machine_info,
    storage_baselines,
)
from inr_fast.bench.kernels import kernel_timings
from inr_fast.layout import IMAGE_SIZE, N_CHANNELS
from inr_fast.metrics.levels import compute_all, levels_met, quality_levels
from inr_fast.model.spec import bytes_per_jet, stored_bytes_per_jet
from inr_fast.train.api import fit
from inr_fast.train.config import get_preset


class LevelMonitor:
    """Trainer monitor that records, per jet, the first optimiser step (and wall time) at which each
    quality level holds, and optionally stops a jet once ``stop_level`` holds.

    Called by the trainer every ``check_every`` steps with (step, ids (k,), recon (k, N, 3) on the
    original scale); images: the originals of all fitted jets by id, (n, 125, 125, 3).
    """

    def __init__(self, images: np.ndarray, stop_level: str | None = None):
        self.images = images
        self.stop_level = stop_level
        self.t0 = time.perf_counter()
        n = len(images)
        self.first_step = {lv: np.full(n, -1, dtype=np.int64) for lv in LEVELS}
        self.first_time = {lv: np.full(n, np.nan) for lv in LEVELS}

    def __call__(self, step: int, ids: np.ndarray, recon: torch.Tensor) -> np.ndarray:
        x_hat = recon.detach().float().cpu().reshape(len(ids), IMAGE_SIZE, IMAGE_SIZE, N_CHANNELS).numpy()
        x = self.images[ids]
        levels = levels_met(x_hat, x, LEVELS)
        now = time.perf_counter() - self.t0
        for lv in LEVELS:
            new = levels[lv] & (self.first_step[lv][ids] < 0)
            self.first_step[lv][ids[new]] = step
            self.first_time[lv][ids[new]] = now
        if self.stop_level is None:
            return np.zeros(len(ids), dtype=bool)
        return levels[self.stop_level]


def _quality_summary(recon: np.ndarray, images: np.ndarray) -> dict[str, float]:
    m = compute_all(recon, images, with_lpips=False)
    energy = np.max(np.abs(np.stack([m["sum_rel_err_ecal"], m["sum_rel_err_hcal"]], axis=1)), axis=1)
    return {
        "psnr_gain_median": float(np.nanmedian(m["psnr_gain"])),
        "rel_l2_median": float(np.nanmedian(m["rel_l2"])),
        "energy_err_median_pct": float(100 * np.nanmedian(energy)),
        "mass_err_median_pct": float(100 * np.nanmedian(np.abs(m["jet_mass_rel_err"]))),
        "off_support_abs_median_pct": float(100 * np.nanmedian(m["off_support_abs"])),
    }


def run_method(method: Method, images: np.ndarray, device: str, stop_level: str | None) -> dict:
    """Fit ``images`` (n, 125, 125, 3) with ``method``; when ``stop_level`` is given every jet stops as
    soon as it holds (the trainer's own targets are switched off), else the preset runs its steps.
    Wall time counts everything from the images in memory to the fitted parameters. A jet counts as
    having reached a level when a check during training saw it AND the stored result (after any
    float16 rounding of the parameters) holds it."""
    monitor = LevelMonitor(images, stop_level)
    t0 = time.perf_counter()
    result = fit(
        images,
        preset=method.preset,
        backend=method.backend,
        device=device,
        target_psnr=None,
        target_rel_l2=None,
        target_level=None,
        monitor=monitor,
        **method.overrides,
    )
    wall = time.perf_counter() - t0
    cfg = get_preset(method.preset).with_overrides(**method.overrides)
    final = quality_levels(result.reconstructions, images)
    return {
        "method": method.name,
        "stop_level": stop_level,
        "n_jets": len(images),
        "wall_s": wall,
        "steps_run": int(np.sum(result.n_steps)),
        "bytes_per_jet": int(stored_bytes_per_jet(cfg.model, cfg.param_dtype)),
        "first_step": {lv: monitor.first_step[lv].tolist() for lv in LEVELS},
        "final_holds": {lv: final[lv].tolist() for lv in LEVELS},
        "quality": _quality_summary(result.reconstructions, images),
    }


def seed_level_times(run: dict, full_steps: int = 10_000) -> dict:
    """Per-jet seconds for the seed recipe to first reach each level: (first step + 1) x the measured
    seconds per jet-step of its run (jets fitted together share the wall time; nothing stops early);
    and the full recipe's time per jet."""
    per_step = run["wall_s"] / max(run["steps_run"], 1)
    out = {"seconds_per_jet_step": per_step, "full_recipe_s_per_jet": per_step * full_steps}
    for lv in LEVELS:
        steps = np.asarray(run["first_step"][lv])
        hit = steps >= 0
        out[lv] = {
            "fraction": float(hit.mean()),
            "median_s": float(np.median((steps[hit] + 1) * per_step)) if hit.any() else math.nan,
            "median_steps": float(np.median(steps[hit] + 1)) if hit.any() else math.nan,
        }
    return out


def reached_mask(run: dict, level: str) -> np.ndarray:
    """(n,) bool: jets of a stop-at-``level`` run that reached it during training and whose stored
    result holds it (runs without ``final_holds``, e.g. older JSON, count the training checks)."""
    seen = np.asarray(run["first_step"][level]) >= 0
    holds = run.get("final_holds", {}).get(level)
    return seen if holds is None else seen & np.asarray(holds, dtype=bool)


def format_end_to_end(seed: dict, rows: list[dict], seed_jets: int) -> str:
    """Markdown table: per method and level, amortised seconds per jet, fraction reaching the level,
    speed-up over the seed recipe's time to the same level, bytes per jet and quality at the stop."""
    out = [
        f"seed recipe (reference backend, first {seed_jets} jets): "
        f"{seed['seconds_per_jet_step'] * 1e3:.0f} ms per jet-step, full 10,000-step recipe "
        f"{seed['full_recipe_s_per_jet']:.0f} s per jet",
        "",
        "| method | level | reached | s per jet | seed s per jet (reached) | speed-up | bytes/jet | "
        "psnr_gain dB | rel_l2 | energy err % | mass err % | off-support |.| % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lv in LEVELS:
        s = seed[lv]
        out.append(
            f"| seed | {lv} | {s['fraction']:.0%} | {s['median_s']:.2f} | — | 1 | "
            f"{seed['bytes_per_jet']} | | | | | |"
        )
        for r in rows:
            if r["stop_level"] != lv:
                continue
            reached = float(np.mean(reached_mask(r, lv)))
            per_jet = r["wall_s"] / r["n_jets"]
            q = r["quality"]
            out.append(
                f"| {r['method']} | {lv} | {reached:.0%} | {per_jet:.3f} | {s['median_s']:.2f} | "
                f"{s['median_s'] / per_jet:.0f}× | {r['bytes_per_jet']} | {q['psnr_gain_median']:.1f} | "
                f"{q['rel_l2_median']:.3f} | {q['energy_err_median_pct']:.2f} | "
                f"{q['mass_err_median_pct']:.2f} | {q.get('off_support_abs_median_pct', math.nan):.2f} |"
            )
    return "\n".join(out)


@dataclass(frozen=True)
class BenchCommand:
    """``inr-fast bench``: what to measure."""

    quick: bool = False
    out: str | None = None
    device: str = "cpu"
    n_jets: int = 64
    seed_jets: int = 8
    kernels: bool = True
    end_to_end: bool = True


def bench(cmd: BenchCommand) -> dict:
    """Run the benchmark; returns everything measured (also written as JSON by the CLI)."""

    result: dict = {"machine": machine_info(cmd.device), "command": asdict(cmd), "started": time.time()}
    if cmd.kernels:
        shapes = dict(widths=(64,), depths=(3,), batches=(16,)) if cmd.quick else {}
        result["kernels"] = kernel_timings(cmd.device, **shapes)
    if cmd.end_to_end:
        sets = JET_SETS[:1] if cmd.quick else JET_SETS
        result["jet_sets"] = {}
        for name, sim_seed, pt_min, pt_max in sets:
            images = jet_set(sim_seed, pt_min, pt_max, cmd.n_jets)
            methods = default_methods(cmd.quick)
            print(f"bench: set {name}, seed recipe on {cmd.seed_jets} jets ...", flush=True)
            seed_run = run_method(methods[0], images[: cmd.seed_jets], cmd.device, stop_level=None)
            seed = seed_level_times(seed_run)
            seed["bytes_per_jet"] = int(bytes_per_jet(get_preset("seed").model))
            rows = []
            for m in methods[1:]:
                for lv in LEVELS:
                    print(f"bench: set {name}, {m.name} ({m.backend}) to {lv} ...", flush=True)
                    rows.append(run_method(m, images, cmd.device, stop_level=lv))
            result["jet_sets"][name] = {
                "simulation": {"seed": sim_seed, "pt_min": pt_min, "pt_max": pt_max, "n": len(images)},
                "storage": storage_baselines(images),
                "seed_run": seed_run,
                "seed": seed,
                "runs": rows,
                "table": format_end_to_end(seed, rows, min(cmd.seed_jets, len(images))),
            }
    result["seconds"] = time.time() - result["started"]
    return result
