"""Jets per second against executors and workers, with the shipped preset (its own stopping rule).

    python benchmarks/workers.py --file jets.h5 --n 128 --out benchmarks/results/workers.json

Fits the same first ``--n`` jets of ``--file`` through `inr-fast fit` with
  1. ``--executor serial`` (one process, torch's default threads: every core),
  2. ``--executor local --workers 1`` (one Dask worker process with every core),
  3. ``--executor local --workers W`` for W = 2 .. cores (cores / W threads each),
each into a fresh run directory, and records wall seconds (the whole command: start-up, the local
cluster's start, reading, fitting, writing), jets per second and the fit seconds summed over the chunk
sidecars. Run it on a quiet machine; the projection of a full file's cost divides by these rates.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from inr_fast import store
from inr_fast.bench.common import machine_info


def fit(file: str, run: Path, n: int, preset: str, extra: list[str]) -> dict:
    cmd = ["inr-fast", "fit", file, "--out", str(run), "--preset", preset, "--n", str(n)]
    cmd += ["-q", "--no-figures"]
    t0 = time.perf_counter()
    subprocess.run([*cmd, *extra], check=True)
    wall = time.perf_counter() - t0
    return {"args": extra, "wall_s": wall, "jets_per_s": n / wall, "chunk_fit_s": store.fit_seconds(run)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", required=True)
    ap.add_argument("--n", type=int, default=128, help="jets (default 128: 2 chunks of 64, one per worker)")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--out", default="benchmarks/results/workers.json")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    configs = [["--executor", "serial"], ["--executor", "local", "--workers", "1"]]
    configs += [["--executor", "local", "--workers", str(w)] for w in range(2, cores + 1)]
    result = {"machine": machine_info(), "file": args.file, "n": args.n, "preset": args.preset, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i, extra in enumerate(configs):
            r = fit(args.file, Path(tmp) / f"run{i}", args.n, args.preset, extra)
            print(f"{' '.join(extra)}: {r['wall_s']:.1f} s, {r['jets_per_s']:.2f} jets/s", flush=True)
            result["runs"].append(r)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
