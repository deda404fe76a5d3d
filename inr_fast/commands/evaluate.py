"""``inr-fast evaluate RUN``: every metric of every fitted jet into metrics.csv and summary.json, and
the seed-style table (:mod:`inr_fast.jobs.evaluate`)."""

from __future__ import annotations

import argparse

from inr_fast.commands.common import add_executor_arguments, cluster_options, dry_run
from inr_fast.jobs.evaluate import EvaluateCommand, evaluate
from inr_fast.jobs.physics import TAGGER_JETS


def add_lpips_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lpips",
        choices=("auto", "yes", "no"),
        default="auto",
        help="measure LPIPS: auto (default) when the optional extra is installed (pip install "
        "'inr_fast[lpips]', then python -m inr_fast.metrics.lpips_weights fetch), yes (fail without "
        "it), no",
    )
    parser.add_argument(
        "--no-lpips", dest="lpips", action="store_const", const="no", help="same as --lpips no"
    )


def add_physics_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-physics",
        dest="physics",
        action="store_false",
        help="skip the physics section (substructure observables of every jet, Q2p, the fidelity "
        "table and the quark/gluon taggers; physics.json, observables.npz)",
    )
    parser.add_argument(
        "--tagger-jets",
        type=int,
        default=TAGGER_JETS,
        metavar="N",
        help=f"jets (evenly spaced over the run) the quark/gluon taggers are trained and compared on "
        f"(default {TAGGER_JETS}; 0: no taggers)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory written by `inr-fast fit`")
    add_lpips_argument(parser)
    parser.add_argument("--device", default="cpu", help="where to render and measure: cpu (default) or cuda")
    parser.add_argument(
        "--data",
        default=None,
        metavar="FILE",
        help="the run's data file, if it moved (default: where fit read it)",
    )
    parser.add_argument("--max-rows", type=int, default=20, metavar="N", help="jets printed (default 20)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="measure again although metrics.csv and summary.json are up to date (out-of-date or "
        "interrupted ones are always redone)",
    )
    add_physics_arguments(parser)
    add_executor_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if dry_run(args):
        return 0
    cmd = EvaluateCommand(
        run=args.run,
        lpips=args.lpips,
        device=args.device,
        data=args.data,
        max_rows=args.max_rows,
        overwrite=args.overwrite,
        progress=not args.quiet,
        executor=args.executor,
        workers=args.workers,
        cluster=cluster_options(args),
        physics=args.physics,
        tagger_jets=args.tagger_jets,
    )
    print(evaluate(cmd)[2])
    return 0
