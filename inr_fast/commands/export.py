"""``inr-fast export RUN --out recon.h5``: every reconstruction in the input layout
(:mod:`inr_fast.jobs.export`)."""

from __future__ import annotations

import argparse

from inr_fast.commands.common import add_executor_arguments, cluster_options, dry_run
from inr_fast.jobs.export import ExportCommand, export_run
from inr_fast.layout import IMAGE_SIZE
from inr_fast.model.render import MAX_RESOLUTION


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory written by `inr-fast fit`")
    parser.add_argument(
        "--out", required=True, metavar="FILE.h5", help="output HDF5 file (X_jets, y, m0, pt)"
    )
    parser.add_argument(
        "--resolution",
        type=int,
        default=IMAGE_SIZE,
        metavar="R",
        help=f"R x R pixels per jet (default {IMAGE_SIZE}; at most {MAX_RESOLUTION}; sums conserved)",
    )
    parser.add_argument("--device", default="cpu", help="where to render: cpu (default) or cuda")
    parser.add_argument("--data", default=None, metavar="FILE", help="the run's data file, if it moved")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_executor_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if dry_run(args):
        return 0
    cmd = ExportCommand(
        run=args.run,
        out=args.out,
        resolution=args.resolution,
        device=args.device,
        data=args.data,
        overwrite=args.overwrite,
        progress=not args.quiet,
        executor=args.executor,
        workers=args.workers,
        cluster=cluster_options(args),
    )
    print(export_run(cmd))
    return 0
