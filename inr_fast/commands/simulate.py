"""``inr-fast simulate --out FILE.h5 --n N``: Pythia 8 quark/gluon jets through a parametrised
calorimeter into the jet-file layout (:mod:`inr_fast.data.simulate`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from inr_fast.data.simulate import SimulateConfig, simulate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``inr-fast simulate``."""
    d = SimulateConfig()
    parser.add_argument("--out", required=True, type=Path, help="output HDF5 file")
    parser.add_argument("--n", required=True, type=int, help="number of jets (half quark, half gluon)")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    parser.add_argument(
        "--pt-min", type=float, default=d.pt_min, help=f"leading-jet pT min, GeV ({d.pt_min:g})"
    )
    parser.add_argument(
        "--pt-max", type=float, default=d.pt_max, help=f"leading-jet pT max, GeV ({d.pt_max:g})"
    )
    parser.add_argument(
        "--eta-max", type=float, default=d.eta_max, help=f"leading-jet |eta| max ({d.eta_max:g})"
    )
    parser.add_argument("--ecm", type=float, default=d.ecm, help=f"sqrt(s), GeV (default {d.ecm:g})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--no-progress", action="store_true", help="no progress display (same as --quiet)")


def run(args: argparse.Namespace) -> int:
    """Run ``inr-fast simulate``; prints one summary line."""
    config = SimulateConfig(
        n=args.n, seed=args.seed, ecm=args.ecm, pt_min=args.pt_min, pt_max=args.pt_max, eta_max=args.eta_max
    )
    start = time.perf_counter()
    out = simulate(config, args.out, overwrite=args.overwrite, progress=not (args.no_progress or args.quiet))
    seconds = time.perf_counter() - start
    print(f"wrote {config.n} jets to {out} in {seconds:.1f} s ({config.n / seconds:.1f} jets/s)")
    return 0
