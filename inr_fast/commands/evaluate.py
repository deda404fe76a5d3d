"""``inr-fast evaluate RUN``: every metric of every fitted jet into metrics.csv and summary.json, and
the seed-style table (:mod:`inr_fast.jobs.evaluate`)."""

from __future__ import annotations

import argparse

from inr_fast.jobs.evaluate import EvaluateCommand, evaluate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory written by `inr-fast fit`")
    parser.add_argument("--no-lpips", action="store_true", help="skip LPIPS (no AlexNet weights needed)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: where to render and measure")
    parser.add_argument("--max-rows", type=int, default=20, metavar="N", help="jets printed (default 20)")
    parser.add_argument("--overwrite", action="store_true", help="replace metrics.csv and summary.json")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    cmd = EvaluateCommand(
        run=args.run,
        lpips=not args.no_lpips,
        device=args.device,
        max_rows=args.max_rows,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(evaluate(cmd)[2])
    return 0
