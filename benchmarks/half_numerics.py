"""Training-level check of the CUDA kernel's float16 numerics, on the CPU (issue 12).

Fits the same simulated jets twice with the trainer (:func:`inr_fast.train.train_batch`), the
``fast`` preset's recipe (Q2 target, pixel sampling, bright-pixel weight, sum correction):

- ``float32``: the pure-PyTorch reference forward (autograd backward), as on the CPU;
- ``half``: :func:`inr_fast.half_reference.pe_mlp`, which rounds to float16 where the CUDA kernel does
  (weights, encoding, activations, deltas; csrc/README.md "CUDA numerics").

Same jets, same initialisations, same pixel samples; the only difference is the numerics. The
numerics design holds if the float16 run brings the same number of jets to Q2 with at most 10 %
more steps in all (over the jets both runs bring there). Prints a table, writes JSON, exits 1 if not.

    python benchmarks/half_numerics.py --out benchmarks/results/half_numerics.json
    python benchmarks/half_numerics.py --jets demo/jets.h5 --n 16
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from inr_fast import half_reference
from inr_fast.bench import machine_info
from inr_fast.data import IMAGE_SIZE, N_CHANNELS, JetFile, pixel_grid
from inr_fast.simulate import SimulateConfig, simulate
from inr_fast.train import (
    FAST,
    batch_normaliser,
    fit_normaliser,
    get_forward,
    jet_seed,
    train_batch,
)

STEP_RATIO_LIMIT = 1.10


def _jets(path: str | None, n: int, sim_seed: int) -> tuple[np.ndarray, str]:
    if path is not None:
        with JetFile(path) as jf:
            return jf.read(np.arange(n)), str(path)
    tmp = Path(tempfile.mkdtemp(prefix="half_numerics_")) / "jets.h5"
    simulate(SimulateConfig(n=n, seed=sim_seed), tmp, progress=False)
    with JetFile(tmp) as jf:
        return jf.read(np.arange(n)), f"simulated: inr-fast simulate --n {n} --seed {sim_seed}"


def _fit(images: np.ndarray, cfg, forward_fn, seed: int) -> dict:
    k = len(images)
    coords = pixel_grid(IMAGE_SIZE)
    flat = torch.from_numpy(images.reshape(k, -1, N_CHANNELS))
    global_norm = fit_normaliser(cfg.normalisation, images=images, intensity_scale=cfg.intensity_scale)
    norm = batch_normaliser(cfg.normalisation, global_norm, images)
    seeds = [jet_seed(seed, i) for i in range(k)]
    t0 = time.perf_counter()
    out = train_batch(flat, norm, seeds, cfg, coords, forward_fn, None)
    return {
        "seconds": time.perf_counter() - t0,
        "steps": out.n_steps.tolist(),
        "reached": out.reached.tolist(),
        "nonfinite": out.nonfinite.tolist(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jets", help="HDF5 jet file (inr-fast simulate layout); default: simulate --n jets")
    ap.add_argument("--n", type=int, default=16, help="jets (default 16)")
    ap.add_argument("--sim-seed", type=int, default=1001, help="simulation seed when --jets is not given")
    ap.add_argument("--seed", type=int, default=0, help="initialisation seed of the fits")
    ap.add_argument("--max-steps", type=int, default=FAST.max_steps, help="steps per jet at most")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)

    images, source = _jets(args.jets, args.n, args.sim_seed)
    cfg = replace(FAST, backend="reference", batch_size=len(images), max_steps=args.max_steps)
    n_freqs = cfg.model.n_freqs
    runs = {
        "float32": get_forward(cfg.model, "reference"),
        "half": lambda x, w, b: half_reference.pe_mlp(x, w, b, n_freqs),
    }
    results = {name: _fit(images, cfg, fn, args.seed) for name, fn in runs.items()}

    f32, f16 = results["float32"], results["half"]
    both = [i for i in range(len(images)) if f32["reached"][i] and f16["reached"][i]]
    steps32 = sum(f32["steps"][i] for i in both)
    steps16 = sum(f16["steps"][i] for i in both)
    ratio = steps16 / steps32 if steps32 else float("nan")
    n32, n16 = sum(f32["reached"]), sum(f16["reached"])
    ok = n16 == n32 and ratio <= STEP_RATIO_LIMIT

    print(f"jets: {source}, {len(images)} jets; preset fast (Q2), max {cfg.max_steps} steps, CPU")
    print("jet | float32 steps | half steps")
    for i in range(len(images)):
        s32 = f"{f32['steps'][i]}" + ("" if f32["reached"][i] else " (not Q2)")
        s16 = f"{f16['steps'][i]}" + ("" if f16["reached"][i] else " (not Q2)")
        print(f"{i:3d} | {s32:>13} | {s16:>10}")
    med32 = float(np.median([f32["steps"][i] for i in both])) if both else float("nan")
    med16 = float(np.median([f16["steps"][i] for i in both])) if both else float("nan")
    print(f"reached Q2: float32 {n32}/{len(images)}, half {n16}/{len(images)}")
    print(
        f"steps over the {len(both)} jets both reach: float32 {steps32}, half {steps16}, ratio {ratio:.3f} "
        f"(limit {STEP_RATIO_LIMIT}); medians {med32:g} / {med16:g}"
    )
    print(f"wall time: float32 {f32['seconds']:.0f} s, half {f16['seconds']:.0f} s")
    print("verdict:", "PASS" if ok else "FAIL")
    if args.out:
        record = {
            "source": source,
            "n_jets": len(images),
            "preset": "fast",
            "max_steps": cfg.max_steps,
            "seed": args.seed,
            "machine": machine_info(),
            "results": results,
            "steps_both": {"float32": steps32, "half": steps16, "ratio": ratio, "jets": len(both)},
            "reached": {"float32": n32, "half": n16},
            "limit": STEP_RATIO_LIMIT,
            "pass": ok,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
