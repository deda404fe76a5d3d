"""``inr-fast bench``: kernel timings, storage baselines and end-to-end time to quality (Q1, Q2), or
with ``--parity`` the time to Q3 (parity with the seed's full recipe)."""

from __future__ import annotations

import argparse
import json
import socket
import time
from pathlib import Path

from inr_fast.atomic import atomic_write_bytes, check_writable
from inr_fast.bench.common import Method, default_methods, machine_info, machine_line
from inr_fast.bench.kernels import format_kernel_table
from inr_fast.bench.parity import parity
from inr_fast.bench.physics import physics_bench
from inr_fast.bench.suite import BenchCommand, bench
from inr_fast.errors import ConfigError, OutputExistsError
from inr_fast.train.backend import resolve_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="one kernel shape, 8 jets of one set (minutes)")
    parser.add_argument(
        "--out", default=None, help="JSON file (default benchmarks/results/bench-HOST-TIME.json)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to fit (default cpu)")
    parser.add_argument(
        "--n", "--n-jets", dest="n_jets", type=int, default=None, help="jets per set (default 64, quick 8)"
    )
    parser.add_argument(
        "--seed-jets",
        type=int,
        default=None,
        help="jets fitted with the slow seed recipe (default 8, quick 2)",
    )
    parser.add_argument("--no-kernels", action="store_true")
    parser.add_argument("--no-end-to-end", action="store_true")
    parser.add_argument(
        "--parity",
        action="store_true",
        help="Q3 instead: the seed's full 10,000-step recipe on the first jets of set A, then the time "
        "each preset needs to match it (inr_fast.bench.parity; hours on a CPU unless --parity-seed is given)",
    )
    parser.add_argument("--parity-jets", type=int, default=4, help="jets for --parity (default 4)")
    parser.add_argument(
        "--physics",
        action="store_true",
        help="the physics targets instead (inr_fast.bench.physics): simulate both jet sets (--n jets "
        "each, default 1000), fit them with --preset, evaluate with the physics section, time the seed "
        "recipe to Q2, check Q2p, observables, taggers, speed-up and bytes per jet",
    )
    parser.add_argument("--preset", default="fast", help="--physics: the preset to measure (default fast)")
    parser.add_argument(
        "--work",
        default="benchmarks/work",
        metavar="DIR",
        help="--physics: where the simulated sets and run directories go (kept; default benchmarks/work)",
    )
    parser.add_argument(
        "--seed-from",
        default=None,
        metavar="JSON",
        help="--physics: take the seed recipe's time to Q2 from an earlier `inr-fast bench` or "
        "`bench --physics` result (same sets, same machine) instead of measuring it (--seed-jets)",
    )
    parser.add_argument(
        "--tagger-jets",
        type=int,
        default=None,
        metavar="N",
        help="--physics: jets the taggers train and compare on (default: all)",
    )
    parser.add_argument(
        "--parity-seed",
        default=None,
        metavar="JSON",
        help="reuse the seed endpoint of an earlier --parity result (its JSON file) instead of rerunning it",
    )


def result_path(args: argparse.Namespace, kind: str) -> Path:
    """Where the results go, checked before anything is measured: an existing file is refused without
    --overwrite, an unwritable folder at once (not after hours of benchmarks)."""
    out = Path(
        args.out or f"benchmarks/results/{kind}-{socket.gethostname()}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    )
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give a file name such as {out / 'bench.json'}")
    if out.exists() and not args.overwrite:
        raise OutputExistsError(f"--out {out}: already exists; pass --overwrite to replace it")
    check_writable(out.parent, "--out")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def check_device(device: str) -> None:
    resolve_device(device)  # a clear error for cuda without a GPU, before anything runs


def _write_table_result(out: Path, result: dict, device: str, started: float) -> int:
    """Stamp a --parity / --physics result with the machine and its duration, write it, print its table."""
    result.update(machine=machine_info(device), seconds=time.time() - started)
    atomic_write_bytes(out, (json.dumps(result, indent=1, default=float) + "\n").encode(), overwrite=True)
    print(machine_line(result["machine"]))
    print(result["table"])
    print(f"\nwrote {out} ({result['seconds']:.0f} s)")
    return 0


def run_parity(args: argparse.Namespace) -> int:
    """``inr-fast bench --parity``: Q3 (see :mod:`inr_fast.bench.parity`)."""
    check_device(args.device)
    if args.parity_jets < 1:
        raise ConfigError(f"--parity-jets must be a positive integer, got {args.parity_jets}")
    out = result_path(args, "parity")
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
    return _write_table_result(out, result, args.device, started)


def run_physics(args: argparse.Namespace) -> int:
    """``inr-fast bench --physics``: the physics targets (see :mod:`inr_fast.bench.physics`)."""
    check_device(args.device)
    n = 1000 if args.n_jets is None else args.n_jets
    seed_jets = 2 if args.seed_jets is None else args.seed_jets
    if n < 10:
        raise ConfigError(f"--n must be at least 10 for --physics (the taggers' folds), got {n}")
    if seed_jets < 1 and args.seed_from is None:
        raise ConfigError("--seed-jets must be positive (or give --seed-from)")
    out = result_path(args, "physics")
    started = time.time()
    result = physics_bench(
        args.work, args.preset, n, seed_jets, args.seed_from, args.tagger_jets, args.device
    )
    return _write_table_result(out, result, args.device, started)


def run(args: argparse.Namespace) -> int:
    if args.parity:
        return run_parity(args)
    if args.physics:
        return run_physics(args)
    n = (8 if args.quick else 64) if args.n_jets is None else args.n_jets
    seed_jets = (2 if args.quick else 8) if args.seed_jets is None else args.seed_jets
    if n < 2:
        raise ConfigError(f"--n must be at least 2 (jets per set), got {n}")
    if seed_jets < 1:
        raise ConfigError(f"--seed-jets must be a positive integer, got {seed_jets}")
    check_device(args.device)
    out = result_path(args, "bench")
    cmd = BenchCommand(
        quick=args.quick,
        out=args.out,
        device=args.device,
        n_jets=n,
        seed_jets=min(seed_jets, n),
        kernels=not args.no_kernels,
        end_to_end=not args.no_end_to_end,
    )
    result = bench(cmd)
    atomic_write_bytes(out, (json.dumps(result, indent=1, default=float) + "\n").encode(), overwrite=True)
    print(machine_line(result["machine"]))
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
