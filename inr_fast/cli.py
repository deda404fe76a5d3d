"""The ``inr-fast`` command line.

Each command NAME lives in the module that does its work, which provides
``add_NAME_arguments(parser)`` and ``run_NAME(args) -> int | None``. This file only wires them up,
imports a command's module when that command runs (so ``--help`` stays fast), and turns
:class:`inr_fast.errors.InrFastError` into one clear line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from inr_fast.errors import InrFastError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("inr_fast.simulate", "simulate quark/gluon jet images with Pythia 8 into an HDF5 file"),
    "show": ("inr_fast.plots", "draw a jet (or the mean of a selection) per channel, log colour"),
    "fit": ("inr_fast.train", "fit INRs to jets of an HDF5 file into a run directory"),
    "render": ("inr_fast.store", "evaluate a fitted jet at any resolution (HDF5 or PNG)"),
    "evaluate": ("inr_fast.report", "compute metrics of a run: metrics.csv and summary.json"),
    "report": ("inr_fast.report", "write a self-contained report.html with figures"),
    "bench": ("inr_fast.bench", "run the benchmark suite and write a table"),
}


def _module(name: str):
    return importlib.import_module(COMMANDS[name][0])


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command`` given, only that command's module is imported for its options."""
    parser = argparse.ArgumentParser(
        prog="inr-fast", description="Fast implicit neural representations of jet images."
    )
    from inr_fast import __version__

    parser.add_argument("--version", action="version", version=f"inr-fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command == name:
            adder = getattr(_module(name), f"add_{name}_arguments", None)
            if adder is None:
                raise InrFastError(f"inr-fast {name}: not available in this version yet")
            adder(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser(command if command in COMMANDS else None).parse_args(argv)
        result = getattr(_module(args.command), f"run_{args.command}")(args)
    except InrFastError as err:
        print(f"inr-fast: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("inr-fast: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
