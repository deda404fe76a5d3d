"""``inr-fast bench``: kernel timings, storage baselines and (end to end) time to quality.

Everything is measured in one run on one machine, which the output names; ratios are within the run.
Results: a JSON file (default ``benchmarks/results/bench-<host>-<time>.json``) and a Markdown table
printed for BENCHMARKS.md. ``--quick`` keeps the whole run to a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import statistics
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from inr_fast.errors import ConfigError
from inr_fast.layout import IMAGE_SIZE, N_CHANNELS

RAW_BYTES = IMAGE_SIZE * IMAGE_SIZE * N_CHANNELS * 4


# ------------------------------------------------------------------------------------------ machine


def machine_info(device: str = "cpu") -> dict:
    """What the numbers were measured on: CPU model and cores, torch, and the GPU if used."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    info = {
        "host": socket.gethostname(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device == "cuda" and torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda)
    return info


# ------------------------------------------------------------------------------------------ storage


def sparse_lossless_bytes(image: np.ndarray, value_dtype=np.float32, level: int = 9) -> int:
    """Bytes of a jet stored losslessly as its non-zero pixels: flat uint16 indices into the
    (125, 125, 3) array (46,875 < 2^16) plus their values in ``value_dtype``, deflate-compressed
    (gzip's algorithm, without the 18-byte gzip header). image: (125, 125, 3)."""
    flat = np.asarray(image, dtype=np.float32).reshape(-1)
    idx = np.flatnonzero(flat)
    payload = idx.astype(np.uint16).tobytes() + flat[idx].astype(value_dtype).tobytes()
    return len(zlib.compress(payload, level))


def storage_baselines(images: np.ndarray) -> dict[str, float]:
    """Mean bytes per jet of the storage a user would compare with: images (B, 125, 125, 3)."""
    return {
        "raw_float32": float(RAW_BYTES),
        "sparse_gzip_float32": float(np.mean([sparse_lossless_bytes(im, np.float32) for im in images])),
        "sparse_gzip_float16": float(np.mean([sparse_lossless_bytes(im, np.float16) for im in images])),
    }


# ------------------------------------------------------------------------------------------ kernels


def _median_seconds(fn: Callable[[], object], rounds: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def kernel_timings(
    device: str = "cpu",
    widths=(16, 32, 64, 128),
    depths=(2, 3, 4),
    batches=(1, 16, 64),
    n_coords: int = IMAGE_SIZE * IMAGE_SIZE,
    n_freqs: int = 10,
    rounds: int = 3,
    progress: bool = True,
) -> list[dict]:
    """Median seconds of forward and training step (MSE loss + all parameter gradients) of the fused
    operators and of the batched reference (``reference.batched_mlp`` + autograd; under fp16 autocast
    on CUDA, as AMP would run it), for every (W, D, B), on ``n_coords`` coordinates."""
    from inr_fast import fused
    from inr_fast.reference import batched_mlp, init_params, layer_shapes

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(n_coords, 2, generator=gen) * 2 - 1).to(device)
    rows = []
    combos = [(w, d, b) for w in widths for d in depths for b in batches]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(combos), desc="kernels", unit="shape", leave=False)
    for width, depth, batch in combos:
        w, b = init_params(batch, n_freqs, width, depth, generator=gen)
        w, b = [t.to(device) for t in w], [t.to(device) for t in b]
        target = torch.rand(batch, n_coords, 3, generator=gen).to(device)
        params = [t.clone().requires_grad_(True) for t in w + b]
        nw = len(w)

        def ref_step(params=params, nw=nw, target=target):
            with torch.autocast("cuda", dtype=torch.float16, enabled=device == "cuda"):
                y = batched_mlp(x, params[:nw], params[nw:], n_freqs)
                loss = (y.float() - target).square().mean(dim=(1, 2)).sum()
            return torch.autograd.grad(loss, params)

        def ref_fwd(w=w, b=b):
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=device == "cuda"):
                return batched_mlp(x, w, b, n_freqs)

        def fused_fwd(w=w, b=b):
            with torch.no_grad():
                return fused.pe_mlp(x, w, b, n_freqs)

        def fused_step(w=w, b=b, target=target):
            return fused.mse_step(x, w, b, target, n_freqs)

        flops_fwd = batch * n_coords * sum(2 * fo * fi for fo, fi in layer_shapes(n_freqs, width, depth))
        flops_dx = batch * n_coords * sum(2 * fo * fi for fo, fi in layer_shapes(n_freqs, width, depth)[1:])
        row = {"device": device, "W": width, "D": depth, "B": batch, "N": n_coords}
        row["forward_reference_s"] = _median_seconds(ref_fwd, rounds, sync)
        row["forward_fused_s"] = _median_seconds(fused_fwd, rounds, sync)
        row["step_reference_s"] = _median_seconds(ref_step, rounds, sync)
        row["step_fused_s"] = _median_seconds(fused_step, rounds, sync)
        row["step_gflop"] = (2 * flops_fwd + flops_dx) / 1e9
        row["step_speedup"] = row["step_reference_s"] / row["step_fused_s"]
        row["forward_speedup"] = row["forward_reference_s"] / row["forward_fused_s"]
        rows.append(row)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return rows


def format_kernel_table(rows: list[dict]) -> str:
    """Markdown table of :func:`kernel_timings` rows (milliseconds and speed-ups)."""
    out = [
        "| W | D | B | forward ref ms | forward fused ms | × | step ref ms | step fused ms | × "
        "| fused GFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['W']} | {r['D']} | {r['B']} | {r['forward_reference_s'] * 1e3:.1f} | "
            f"{r['forward_fused_s'] * 1e3:.1f} | {r['forward_speedup']:.2f} | "
            f"{r['step_reference_s'] * 1e3:.1f} | {r['step_fused_s'] * 1e3:.1f} | {r['step_speedup']:.2f} | "
            f"{r['step_gflop'] / r['step_fused_s']:.0f} |"
        )
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ end to end

LEVELS = ("Q1", "Q2")


@dataclass(frozen=True)
class Method:
    """One way of fitting jets: a trainer preset, a backend and keyword overrides of the preset."""

    name: str
    preset: str
    backend: str
    overrides: dict = field(default_factory=dict)


def default_methods(quick: bool) -> list[Method]:
    """The seed baseline (reference backend, its own schedule) and the presets built to beat it."""
    seed_cap = 200 if quick else 1500  # the seed recipe's own 10,000-step schedule, cut short
    return [
        Method("seed", "seed", "reference", {"max_steps": seed_cap, "schedule_steps": 10_000}),
        Method("fast", "fast", "fused"),
        Method("compact", "compact", "fused" if _fused_width("compact") else "reference"),
    ]


def _fused_width(preset: str) -> bool:
    """Whether the preset's network has a width the fused kernels support."""
    from inr_fast.train import FUSED_WIDTHS, get_preset

    return get_preset(preset).model.width in FUSED_WIDTHS


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
        from inr_fast.metrics import Q1_PSNR, Q2_REL_L2, psnr, quality_levels, rel_l2

        x_hat = recon.detach().float().cpu().reshape(len(ids), IMAGE_SIZE, IMAGE_SIZE, N_CHANNELS).numpy()
        x = self.images[ids]
        # Q1 needs psnr >= 55 dB and Q2 rel_l2 <= 0.05: the full predicate (SSIM, totals, mass) is
        # evaluated only on jets that pass one of these cheap necessary conditions
        cand = np.flatnonzero((psnr(x_hat, x) >= Q1_PSNR) | (rel_l2(x_hat, x) <= Q2_REL_L2))
        levels = {lv: np.zeros(len(ids), dtype=bool) for lv in LEVELS}
        if cand.size:
            for lv, ok in quality_levels(x_hat[cand], x[cand]).items():
                levels[lv][cand] = ok
        now = time.perf_counter() - self.t0
        for lv in LEVELS:
            new = levels[lv] & (self.first_step[lv][ids] < 0)
            self.first_step[lv][ids[new]] = step
            self.first_time[lv][ids[new]] = now
        if self.stop_level is None:
            return np.zeros(len(ids), dtype=bool)
        return levels[self.stop_level]


def _quality_summary(recon: np.ndarray, images: np.ndarray) -> dict[str, float]:
    from inr_fast.metrics import compute_all

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
    from inr_fast.metrics import quality_levels
    from inr_fast.reference import stored_bytes_per_jet
    from inr_fast.train import fit, get_preset

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


JET_SETS = (  # (name, simulation seed, pT window in GeV): seeds no test or demo uses
    ("A", 1001, 70.0, 200.0),
    ("B", 2002, 150.0, 300.0),
)


def _jet_set(seed: int, pt_min: float, pt_max: float, n: int) -> np.ndarray:
    from inr_fast.simulate import SimulateConfig, simulate_jets

    return simulate_jets(SimulateConfig(n=n, seed=seed, pt_min=pt_min, pt_max=pt_max))["X_jets"]


def bench(cmd: BenchCommand) -> dict:
    """Run the benchmark; returns everything measured (also written as JSON by the CLI)."""
    from inr_fast.reference import bytes_per_jet
    from inr_fast.train import get_preset

    result: dict = {"machine": machine_info(cmd.device), "command": asdict(cmd), "started": time.time()}
    if cmd.kernels:
        shapes = dict(widths=(64,), depths=(3,), batches=(16,)) if cmd.quick else {}
        result["kernels"] = kernel_timings(cmd.device, **shapes)
    if cmd.end_to_end:
        sets = JET_SETS[:1] if cmd.quick else JET_SETS
        result["jet_sets"] = {}
        for name, sim_seed, pt_min, pt_max in sets:
            images = _jet_set(sim_seed, pt_min, pt_max, cmd.n_jets)
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


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="one kernel shape, 8 jets of one set (minutes)")
    parser.add_argument(
        "--out", default=None, help="JSON file (default benchmarks/results/bench-HOST-TIME.json)"
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--n-jets", type=int, default=None, help="jets per set (default 64, quick 8)")
    parser.add_argument("--seed-jets", type=int, default=None, help="jets fitted with the slow seed recipe")
    parser.add_argument("--no-kernels", action="store_true")
    parser.add_argument("--no-end-to-end", action="store_true")
    parser.add_argument(
        "--parity",
        action="store_true",
        help="Q3 instead: the seed's full 10,000-step recipe on the first jets of set A, then the time "
        "each preset needs to match it (inr_fast.parity; hours on a CPU unless --parity-seed is given)",
    )
    parser.add_argument("--parity-jets", type=int, default=4, help="jets for --parity (default 4)")
    parser.add_argument(
        "--parity-seed",
        default=None,
        metavar="JSON",
        help="reuse the seed endpoint of an earlier --parity result (its JSON file) instead of rerunning it",
    )


def _machine_line(m: dict) -> str:
    return f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}" + (
        f", {m['gpu']}" if "gpu" in m else ""
    )


def run_parity(args: argparse.Namespace) -> int:
    """``inr-fast bench --parity``: Q3 (see :mod:`inr_fast.parity`)."""
    from inr_fast.atomic import atomic_write_bytes
    from inr_fast.parity import parity

    out = Path(
        args.out or f"benchmarks/results/parity-{socket.gethostname()}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        raise ConfigError(f"{out} exists; choose another --out (results are never overwritten)")
    started = time.time()
    # the presets as they are, and `fast` given the seed's own budget of 10,000 steps (cosine over them)
    methods = default_methods(quick=False)[1:] + [
        Method("fast, 10k steps", "fast", "fused", {"max_steps": 10_000})
    ]
    result = parity(
        args.parity_jets,
        methods,
        args.device,
        args.parity_seed,
        curve_path=out.with_suffix(".seed-curve.jsonl"),
        endpoint_out=out.with_suffix(".seed-endpoint.json"),
    )
    result.update(machine=machine_info(args.device), seconds=time.time() - started)
    atomic_write_bytes(out, (json.dumps(result, indent=1, default=float) + "\n").encode())
    print(_machine_line(result["machine"]))
    print(result["table"])
    print(f"\nwrote {out} ({result['seconds']:.0f} s)")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    if args.parity:
        return run_parity(args)
    n = args.n_jets or (8 if args.quick else 64)
    seed_jets = args.seed_jets or (2 if args.quick else 8)
    if n < 2 or seed_jets < 1:
        raise ConfigError("--n-jets must be >= 2 and --seed-jets >= 1")
    cmd = BenchCommand(
        quick=args.quick,
        out=args.out,
        device=args.device,
        n_jets=n,
        seed_jets=min(seed_jets, n),
        kernels=not args.no_kernels,
        end_to_end=not args.no_end_to_end,
    )
    out = Path(
        cmd.out or f"benchmarks/results/bench-{socket.gethostname()}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    )
    from inr_fast.atomic import atomic_write_bytes

    result = bench(cmd)
    atomic_write_bytes(out, (json.dumps(result, indent=1, default=float) + "\n").encode())
    print(_machine_line(result["machine"]))
    if "kernels" in result:
        print("\nKernels (median seconds per call; step = MSE loss + all parameter gradients):\n")
        print(format_kernel_table(result["kernels"]))
    for name, js in result.get("jet_sets", {}).items():
        sim = js["simulation"]
        st = js["storage"]
        print(
            f"\nJet set {name}: {sim['n']} jets, simulation seed {sim['seed']}, "
            f"pT {sim['pt_min']}-{sim['pt_max']} GeV"
        )
        print(
            f"storage per jet: raw float32 {st['raw_float32']:.0f} B, sparse gzip float32 "
            f"{st['sparse_gzip_float32']:.0f} B, float16 {st['sparse_gzip_float16']:.0f} B\n"
        )
        print(js["table"])
    print(f"\nwrote {out} ({result['seconds']:.0f} s)")
    return 0
