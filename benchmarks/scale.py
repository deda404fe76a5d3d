"""The full data set's scale, simulated: a synthetic sparse file with as many jets as the CMS file
(139,306), fitted end to end on a local Dask cluster with the fit capped at a few steps per jet, the
driver killed part-way and resumed, memory of the driver and the workers sampled throughout.

    python benchmarks/scale.py --out benchmarks/results/scale.json [--jets 139306] [--workers 2]

The jets are copies of simulated jets, each shifted by a random offset of up to 3 pixels and scaled
by a random factor in [0.8, 1.2] (so every jet is distinct: content digests identify jets). What it
shows: memory stays flat whatever the number of jets, a killed driver resumes where it stopped, and
the bytes per jet on disk. Fit quality is not the point (2 steps per jet); per-jet costs at Q2 come
from the end-to-end benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import psutil

from inr_fast import store
from inr_fast.bench.common import machine_info
from inr_fast.data.jetfile import JetFile


def make_file(path: Path, n: int, base: Path, seed: int = 0, block: int = 512) -> float:
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    with JetFile(base) as jf:
        src, labels, masses, pts = jf.read(range(jf.n_jets)), jf.labels(), jf.masses(), jf.pts()
    with h5py.File(path, "w") as f:
        x = f.create_dataset("X_jets", (n, 125, 125, 3), "f4", chunks=(1, 125, 125, 3), compression="gzip",
                             compression_opts=1, shuffle=True)  # fmt: skip
        pick = rng.integers(0, len(src), n)
        for s in range(0, n, block):
            k = min(block, n - s)
            out = np.empty((k, 125, 125, 3), np.float32)
            for j in range(k):
                dy, dx = rng.integers(-3, 4, 2)
                out[j] = np.roll(src[pick[s + j]], (int(dy), int(dx)), axis=(0, 1)) * rng.uniform(0.8, 1.2)
            x[s : s + k] = out
        f["y"], f["m0"], f["pt"] = labels[pick], masses[pick], pts[pick]
    return time.perf_counter() - t0


class Memory(threading.Thread):
    """Samples the RSS of a process and of its descendants every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 2.0):
        super().__init__(daemon=True)
        self.proc, self.every, self.samples, self.stop = psutil.Process(pid), every, [], False

    def run(self) -> None:
        t0 = time.perf_counter()
        while not self.stop:
            try:
                driver = self.proc.memory_info().rss
                kids = [c.memory_info().rss for c in self.proc.children(recursive=True)]
            except psutil.Error:
                break
            self.samples.append((time.perf_counter() - t0, driver, max(kids, default=0), len(kids)))
            time.sleep(self.every)


def fit(file: Path, run: Path, workers: int, preset: str, kill_after: float | None = None) -> dict:
    cmd = ["inr-fast", "fit", str(file), "--out", str(run), "--preset", preset, "--max-steps", "2",
           "--target-level", "none", "--executor", "local", "--workers", str(workers), "-q",
           "--no-figures"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, start_new_session=True)
    mem = Memory(proc.pid)
    mem.start()
    killed = False
    while proc.poll() is None:
        time.sleep(1.0)
        if kill_after is not None and time.perf_counter() - t0 > kill_after:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
    proc.wait()
    mem.stop = True
    mem.join()
    s = np.array(mem.samples) if mem.samples else np.zeros((0, 4))
    return {
        "seconds": time.perf_counter() - t0,
        "killed": killed,
        "returncode": proc.returncode,
        "driver_rss_mb": {"median": float(np.median(s[:, 1]) / 2**20), "max": float(s[:, 1].max() / 2**20)},
        "worker_rss_mb": {"median": float(np.median(s[:, 2]) / 2**20), "max": float(s[:, 2].max() / 2**20)},
        "samples": [[round(t, 1), round(d / 2**20), round(w / 2**20), n] for t, d, w, n in s.tolist()],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/scale.json")
    ap.add_argument("--jets", type=int, default=139_306)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", default="/tmp/inr_fast_scale")
    ap.add_argument("--kill-after", type=float, default=600.0, help="seconds into the first fit")
    ap.add_argument("--preset", default="compact", help="the preset fitted (default compact: 4.7 KB a jet)")
    args = ap.parse_args()
    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    base, file, run = work / "base.h5", work / f"jets{args.jets}.h5", work / "run"
    if not base.exists():
        subprocess.run(
            ["inr-fast", "simulate", "--out", str(base), "--n", "1000", "--seed", "505", "-q"], check=True
        )
    result = {
        "machine": machine_info(),
        "jets": args.jets,
        "workers": args.workers,
        "cores": os.cpu_count(),
        "preset": args.preset,
    }
    if not file.exists():
        result["make_file_seconds"] = make_file(file, args.jets, base)
    result["file_bytes"] = file.stat().st_size
    result["first"] = fit(file, run, args.workers, args.preset, kill_after=args.kill_after)
    cfg = store.read_config(run)
    result["chunks"] = len(cfg.chunks)
    result["chunks_done_at_kill"] = len(store.done_chunks(run, cfg))
    result["resumed"] = fit(file, run, args.workers, args.preset)
    result["chunks_done"] = len(store.done_chunks(run, cfg))
    result["run_bytes_per_jet"] = store.bytes_on_disk(run) / args.jets
    facts = store.fit_facts(run)
    result["jets_stored"] = int(len(facts["indices"]))
    result["jets_stored_once"] = bool(len(np.unique(facts["indices"])) == len(facts["indices"]) == args.jets)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("first", "resumed")}, indent=1))
    for k in ("first", "resumed"):
        print(k, {kk: vv for kk, vv in result[k].items() if kk != "samples"})


if __name__ == "__main__":
    main()
