"""``inr-fast report RUN``: a self-contained report.html with figures (:mod:`inr_fast.report.html`)."""

from __future__ import annotations

import argparse

from inr_fast.commands.evaluate import add_lpips_argument, add_physics_arguments
from inr_fast.errors import ConfigError
from inr_fast.model.render import MAX_RESOLUTION
from inr_fast.report.html import FIGURE_NAMES, PHYSICS_FIGURES, SUPERRES, ReportCommand, write_report


def parse_jets(text: str | None) -> list[int] | None:
    """'0,3' -> [0, 3]; None -> None."""
    if text is None:
        return None
    try:
        jets = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--jets must be comma-separated jet indices such as 0,3, got {text!r}") from None
    if not jets:
        raise ConfigError("--jets is empty; give jet indices such as 0,3")
    return jets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory written by `inr-fast fit`")
    parser.add_argument(
        "--jets",
        default=None,
        metavar="I,J",
        help="jets (file indices) to compare (default: median and worst)",
    )
    parser.add_argument(
        "--superres-jet",
        type=int,
        default=None,
        metavar="I",
        help="jet rendered finely (default: first of --jets)",
    )
    parser.add_argument(
        "--resolution",
        type=int,
        default=SUPERRES,
        metavar="P",
        help=f"fine render P x P (default {SUPERRES}, at most {MAX_RESOLUTION})",
    )
    add_lpips_argument(parser)
    add_physics_arguments(parser)
    parser.add_argument(
        "--data",
        default=None,
        metavar="FILE",
        help="the run's data file, if it moved (default: where fit read it)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace report.html and its figures")


def run(args: argparse.Namespace) -> int:
    cmd = ReportCommand(
        run=args.run,
        jets=None if args.jets is None else tuple(parse_jets(args.jets)),
        superres_jet=args.superres_jet,
        resolution=args.resolution,
        lpips=args.lpips,
        physics=args.physics,
        tagger_jets=args.tagger_jets,
        data=args.data,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    path = write_report(cmd)
    names = ", ".join(n for n in (*FIGURE_NAMES, *PHYSICS_FIGURES) if (path.parent / n).is_file())
    print(f"wrote {path} (self-contained) and {names} in {path.parent}")
    return 0
