"""Training-level check of the CUDA kernel's float16 numerics, on the CPU (issue 12).

Fits the same simulated jets twice with the trainer (:func:`inr_fast.train.loop.train_batch`), the
``fast`` preset's recipe (Q2 target, pixel sampling, bright-pixel weight, sum correction):

- ``float32``: the pure-PyTorch reference forward (autograd backward), as on the CPU;
- ``half``: :func:`inr_fast.half_reference.pe_mlp`, which rounds to float16 where the CUDA kernel does
  (weights, encoding, activations, deltas; csrc/README.md "CUDA numerics");
- ``float64`` (optional): the float32 network computed in float64, a change at rounding level
  only, which measures how much training's chaos alone moves the step counts.

Same jets, same initialisations, same pixel samples; the only difference is the numerics. The
numerics design holds if the float16 run brings the same number of jets to Q2 with at most 10 %
more steps in all (over the fits both runs bring there), pooled over the seeds given. Prints the
steps per jet, writes JSON, exits 1 if not.

    python benchmarks/half_numerics.py --seeds 0 1 2 --numerics float32 float64 half --out RESULT.json
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

from inr_fast.bench.common import machine_info
from inr_fast.data.grid import pixel_grid
from inr_fast.data.jetfile import JetFile
from inr_fast.data.normalise import batch_normaliser, fit_normaliser
from inr_fast.data.simulate import SimulateConfig, simulate
from inr_fast.layout import IMAGE_SIZE, N_CHANNELS
from inr_fast.model import half_reference
from inr_fast.model.reference import batched_mlp
from inr_fast.train.backend import get_forward
from inr_fast.train.config import FAST
from inr_fast.train.loop import jet_seed, train_batch

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


def _forwards(n_freqs: int, model) -> dict:
    """The numerics that can be compared: name -> trainer forward_fn(x, weights, biases)."""
    return {
        "float32": get_forward(model, "reference"),
        # the same network in float64 (cast back): a change at rounding level only, which shows how
        # much a jet's number of steps moves for no reason but the chaos of training
        "float64": lambda x, w, b: batched_mlp(
            x.double(), [t.double() for t in w], [t.double() for t in b], n_freqs
        ).float(),
        "half": lambda x, w, b: half_reference.pe_mlp(x, w, b, n_freqs),
    }


def _summary(results: dict, base: str, other: str, n_jets: int) -> dict:
    """Jets reaching Q2 and steps over the jets both numerics bring there, pooled over the seeds."""
    reached = {base: 0, other: 0}
    steps = {base: 0, other: 0}
    both = 0
    for per_seed in results.values():
        a, b = per_seed[base], per_seed[other]
        reached[base] += sum(a["reached"])
        reached[other] += sum(b["reached"])
        idx = [i for i in range(n_jets) if a["reached"][i] and b["reached"][i]]
        both += len(idx)
        steps[base] += sum(a["steps"][i] for i in idx)
        steps[other] += sum(b["steps"][i] for i in idx)
    ratio = steps[other] / steps[base] if steps[base] else float("nan")
    return {"reached": reached, "steps": steps, "jets_both": both, "ratio": ratio}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jets", help="HDF5 jet file (inr-fast simulate layout); default: simulate --n jets")
    ap.add_argument("--n", type=int, default=16, help="jets (default 16)")
    ap.add_argument("--sim-seed", type=int, default=1001, help="simulation seed when --jets is not given")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="initialisation seeds of the fits")
    ap.add_argument(
        "--numerics", nargs="+", default=["float32", "half"], help="float32 (first: the base), float64, half"
    )
    ap.add_argument("--max-steps", type=int, default=FAST.max_steps, help="steps per jet at most")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)

    images, source = _jets(args.jets, args.n, args.sim_seed)
    cfg = replace(FAST, backend="reference", batch_size=len(images), max_steps=args.max_steps)
    forwards = _forwards(cfg.model.n_freqs, cfg.model)
    unknown = sorted(set(args.numerics) - set(forwards))
    if unknown or args.numerics[0] != "float32":
        ap.error(f"--numerics: float32 first, then any of {sorted(forwards)}; got {args.numerics}")
    n = len(images)
    print(f"jets: {source}, {n} jets; preset fast (Q2), max {cfg.max_steps} steps, CPU")
    results = {}
    for seed in args.seeds:
        results[seed] = {name: _fit(images, cfg, forwards[name], seed) for name in args.numerics}
        print(f"seed {seed}: steps per jet ({' | '.join(args.numerics)}; * = not at Q2 by the last step)")
        for i in range(n):
            cells = [
                f"{results[seed][k]['steps'][i]}{'' if results[seed][k]['reached'][i] else '*'}"
                for k in args.numerics
            ]
            print(f"  jet {i:2d}: " + " | ".join(cells))
        print("  wall time: " + ", ".join(f"{k} {results[seed][k]['seconds']:.0f} s" for k in args.numerics))

    summaries = {other: _summary(results, "float32", other, n) for other in args.numerics[1:]}
    total = n * len(args.seeds)
    for other, sm in summaries.items():
        print(
            f"{other} vs float32, seeds {args.seeds}: reached Q2 {sm['reached'][other]}/{total} vs "
            f"{sm['reached']['float32']}/{total}; steps over the {sm['jets_both']} fits both finish "
            f"{sm['steps'][other]} vs {sm['steps']['float32']}, ratio {sm['ratio']:.3f}"
        )
    ok = True
    if "half" in summaries:
        sm = summaries["half"]
        ok = sm["reached"]["half"] == sm["reached"]["float32"] and sm["ratio"] <= STEP_RATIO_LIMIT
        print(
            f"verdict (same fraction at Q2, at most {STEP_RATIO_LIMIT:.2f}x the steps):",
            "PASS" if ok else "FAIL",
        )
    if args.out:
        record = {
            "source": source,
            "n_jets": n,
            "preset": "fast",
            "max_steps": cfg.max_steps,
            "seeds": args.seeds,
            "machine": machine_info(),
            "results": {str(k): v for k, v in results.items()},
            "summaries": summaries,
            "limit": STEP_RATIO_LIMIT,
            "pass": ok,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
