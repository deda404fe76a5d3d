"""The ``inr-fast`` command line.

Each command NAME is the module :mod:`inr_fast.commands.NAME`, which provides ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int | None``. This file only wires them up, imports a
command's module when that command runs (so ``--help`` stays fast), and turns
:class:`inr_fast.errors.InrFastError` into one clear line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from inr_fast import __version__
from inr_fast.errors import InrFastError
from inr_fast.progress import configure_logging

#: command -> one-line help (the same text as the module's HELP, here so that `inr-fast --help` imports
#: no command module)
COMMANDS: dict[str, str] = {
    "simulate": "simulate quark/gluon jet images with Pythia 8 into an HDF5 file",
    "show": "draw a jet (or the mean of a selection) per channel, log colour",
    "fit": "fit INRs to jets of an HDF5 file into a run directory",
    "render": "evaluate a fitted jet at any resolution (HDF5 or PNG)",
    "export": "write every reconstruction of a run into one HDF5 file in the input layout",
    "evaluate": "compute metrics of a run: metrics.csv and summary.json",
    "report": "write a self-contained report.html with figures",
    "bench": "run the benchmark suite and write a table",
}


def _module(name: str):
    return importlib.import_module(f"inr_fast.commands.{name}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command`` given, only that command's module is imported for its options."""
    parser = argparse.ArgumentParser(
        prog="inr-fast", description="Fast implicit neural representations of jet images."
    )
    parser.add_argument("--version", action="version", version=f"inr-fast {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    talk = common.add_mutually_exclusive_group()
    talk.add_argument(
        "-q", "--quiet", action="store_true", help="no progress display; warnings and errors only"
    )
    talk.add_argument("-v", "--verbose", action="store_true", help="more messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        if command == name:
            _module(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser(command if command in COMMANDS else None).parse_args(argv)
        configure_logging(-1 if args.quiet else 1 if args.verbose else 0)
        result = _module(args.command).run(args)
    except InrFastError as err:
        print(f"inr-fast: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("inr-fast: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
