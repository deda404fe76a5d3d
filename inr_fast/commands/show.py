"""``inr-fast show FILE.h5 --index I --out PNG``: draw a jet (or the mean of a selection) per channel."""

from __future__ import annotations

import argparse
from pathlib import Path

from inr_fast.data.jetfile import JetFile
from inr_fast.errors import ConfigError, DataError, OutputExistsError
from inr_fast.report.plots import plot_jet, plot_mean_jet, save_figure


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE.h5", help="jet-image HDF5 file (X_jets, y, m0, pt)")
    parser.add_argument("--out", required=True, metavar="PNG", help="output figure (.png, or .pdf/.svg)")
    parser.add_argument("--index", type=int, default=None, metavar="I", help="jet to draw (default 0)")
    parser.add_argument("--mean", action="store_true", help="draw the average image of a selection")
    parser.add_argument(
        "--indices",
        default=None,
        metavar="SPEC",
        help="jets averaged by --mean, e.g. 0,5,9 or 10:20 (default all)",
    )
    parser.add_argument("--channels-first", action="store_true", help="X_jets is stored (N, 3, 125, 125)")
    parser.add_argument(
        "--chunk-size", type=int, default=256, metavar="K", help="jets read at a time (--mean)"
    )
    parser.add_argument("--title", default=None, help="figure title (default: file name and jet)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def _label_text(jf, index: int) -> str:
    parts = [f"jet {index}"]
    try:
        parts.append(f"y={int(jf.labels(index)[0])}")
        parts.append(f"$p_T$={jf.pts(index)[0]:.1f} GeV")
        parts.append(f"$m$={jf.masses(index)[0]:.1f} GeV")
    except DataError:
        pass
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.mean and args.index is not None:
        raise ConfigError("--index and --mean exclude each other; select the averaged jets with --indices")
    if args.indices is not None and not args.mean:
        raise ConfigError("--indices selects the jets averaged by --mean; draw one jet with --index I")
    if out.exists() and not args.overwrite:  # fail before reading anything
        raise OutputExistsError(f"{out}: already exists; pass --overwrite to replace it")
    if Path(args.file).resolve() == out.resolve():
        raise ConfigError(f"{out}: --out would replace the input file")
    with JetFile(args.file, channels_first=args.channels_first) as jf:
        if args.mean:
            fig = plot_mean_jet(jf, args.indices, title=args.title, chunk_size=args.chunk_size)
        else:
            index = 0 if args.index is None else args.index
            image = jf.read_one(index)
            index = int(jf.resolve(index)[0])
            title = args.title if args.title is not None else f"{jf.path.name}: {_label_text(jf, index)}"
            fig = plot_jet(image, title=title)
    save_figure(fig, out, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0
