"""Threads and processes on one machine: how much do concurrent fits of the fused CPU kernel slow each
other when each uses every core (torch's default), and what do the right thread counts give back?

    python benchmarks/oversubscription.py --out benchmarks/results/oversubscription.json

Measures, on the same jets and recipe (the fast preset, a fixed number of steps, no early stop):
  1. one fit alone, torch's default threads;
  2. two fits at once, each with torch's default threads (every core each: oversubscribed);
  3. two fits at once, each with cores / 2 threads;
  4. the same 4-chunk job serially (1 process x all cores) and on a local Dask cluster (2 workers x
     cores / 2 threads), through `inr-fast fit --executor`.
Steps per second are jet-steps per wall second. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from inr_fast.bench.common import machine_info

FIT = """
import sys, time, torch
from inr_fast.data.jetfile import JetFile
from inr_fast.train.api import fit
threads = int(sys.argv[3])
if threads:
    torch.set_num_threads(threads)
with JetFile(sys.argv[1]) as jf:
    x = jf.read(range(int(sys.argv[2])))
t0 = time.perf_counter()
r = fit(x, "fast", device="cpu", max_steps=int(sys.argv[4]), target_level=None, target_rel_l2=None,
        batch_size=len(x))
dt = time.perf_counter() - t0
print(r.n_steps.sum() / dt, torch.get_num_threads())
"""


def run_fits(path: Path, n_jets: int, steps: int, copies: int, threads: int) -> list[tuple[float, int]]:
    procs = [
        subprocess.Popen([sys.executable, "-c", FIT, str(path), str(n_jets), str(threads), str(steps)],
                         stdout=subprocess.PIPE, text=True)
        for _ in range(copies)
    ]  # fmt: skip
    out = []
    for p in procs:
        rate, used = p.communicate()[0].split()
        out.append((float(rate), int(used)))
    return out


def run_cli(path: Path, run: Path, extra: list[str]) -> float:
    t0 = time.perf_counter()
    cmd = ["inr-fast", "fit", str(path), "--out", str(run), "--max-steps", "300", "--target-level", "none"]
    subprocess.run([*cmd, "--batch-size", "8", "--n", "32", "--no-figures", "-q", *extra], check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/oversubscription.json")
    ap.add_argument("--jets", type=int, default=16)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "jets.h5"
        subprocess.run(
            ["inr-fast", "simulate", "--out", str(path), "--n", "64", "--seed", "404", "-q"], check=True
        )
        result = {"machine": machine_info(), "cores": cores, "jets": args.jets, "steps": args.steps}
        result["alone_default"] = run_fits(path, args.jets, args.steps, 1, 0)
        result["two_default"] = run_fits(path, args.jets, args.steps, 2, 0)
        result["two_shared"] = run_fits(path, args.jets, args.steps, 2, max(1, cores // 2))
        result["serial_seconds"] = run_cli(path, tmp / "serial", [])
        result["local_seconds"] = run_cli(path, tmp / "local", ["--executor", "local", "--workers", "2"])
        with h5py.File(path) as f:
            result["file_jets"] = len(f["X_jets"])
    for key in ("alone_default", "two_default", "two_shared"):
        result[key + "_total_steps_per_s"] = float(np.sum([r for r, _ in result[key]]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
