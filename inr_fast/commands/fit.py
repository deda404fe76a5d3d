"""``inr-fast fit FILE --out RUN``: fit INRs to jets of an HDF5 file into a run directory
(:func:`inr_fast.jobs.fit.fit_run`), then draw the run's loss curves and first reconstructions."""

from __future__ import annotations

import argparse

from inr_fast.commands.common import add_executor_arguments, cluster_options, dry_run
from inr_fast.jobs.fit import FitCommand, fit_run
from inr_fast.model.spec import PARAM_DTYPES
from inr_fast.report.html import write_fit_figures
from inr_fast.train.config import BACKENDS, PRESETS


def preset_values(name: str) -> str:
    """``"seed 10000, fast 3000, compact 8000"``: a FitConfig field (or model field) in every preset."""

    def value(cfg):
        return getattr(cfg.model, name) if hasattr(cfg.model, name) else getattr(cfg, name)

    return ", ".join(f"{p} {value(cfg)}" for p, cfg in PRESETS.items())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="HDF5 jet file (X_jets, y, m0, pt)")
    parser.add_argument(
        "--out",
        required=True,
        help="run directory: created, resumed (same recipe: finished chunks are kept) or grown (a wider "
        "selection fits only the jets it does not hold yet)",
    )
    parser.add_argument(
        "--preset",
        default="fast",
        choices=list(PRESETS),
        help="training recipe (default: fast; seed is the 10,000-step baseline recipe, ~25 minutes a jet "
        "on 2 CPU cores)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help=f"model implementation (default: the preset's: {preset_values('backend')}; auto = the fused "
        "kernels on the CPU where the extension is built, else the reference)",
    )
    sel = parser.add_mutually_exclusive_group()
    sel.add_argument("--n", type=int, default=None, help="fit the first N jets")
    sel.add_argument("--indices", default=None, help="jets to fit, e.g. 0,5,9 or 10:20 (default: all)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available, default), cpu or cuda")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed (each jet's init depends on it and its index; default 0)",
    )
    parser.add_argument(
        "--target-psnr",
        type=float,
        default=None,
        metavar="DB",
        help="stop a jet at this PSNR (default: none)",
    )
    parser.add_argument(
        "--target-rel-l2",
        type=float,
        default=None,
        metavar="X",
        help=f"stop a jet at this rel. L2 (with any level target: both must hold; default: the preset's "
        f"({preset_values('target_rel_l2')}))",
    )
    parser.add_argument(
        "--target-level",
        choices=("Q1", "Q2", "Q2p", "none"),
        default=None,
        help="stop a jet once this quality level of docs/design.md holds (Q2: rel_l2, channel totals, "
        "mass; Q2p: Q2 and the physics conditions); none: run every step, no preset target (e.g. "
        "--preset fast --max-steps 10000 --target-level none matches "
        f"the full seed recipe's quality, BENCHMARKS.md Q3); default: the preset's "
        f"({preset_values('target_level')})",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        metavar="N",
        help=f"steps per jet at most (default: the preset's: {preset_values('max_steps')})",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="JETS",
        help=f"jets trained together, one chunk file each (default: {preset_values('batch_size')})",
    )
    parser.add_argument(
        "--empty-samples",
        type=int,
        default=None,
        metavar="K",
        help="random empty pixels per jet and step besides the non-empty ones (0: every pixel; default: "
        f"{preset_values('empty_samples')}; None = every pixel)",
    )
    parser.add_argument(
        "--bright-weight",
        type=float,
        default=None,
        metavar="L",
        help="loss weight 1 + L sqrt(E/E_max) of non-empty pixels (0: plain MSE; default: "
        f"{preset_values('bright_weight')})",
    )
    parser.add_argument(
        "--param-dtype",
        choices=PARAM_DTYPES,
        default=None,
        help=f"stored parameter precision (default: {preset_values('param_dtype')})",
    )
    parser.add_argument(
        "--support",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="decode each jet through its stored support: exactly zero where the original is, at least "
        "the zero-suppression level where it is not, HCAL on its towers; trains on the support's pixels "
        f"(default: the preset's: {preset_values('support')})",
    )
    parser.add_argument("--channels-first", action="store_true", help="the file stores (N, 3, 125, 125)")
    parser.add_argument(
        "--keep-diagnostics",
        action="store_true",
        help="also store every jet's reconstruction and full loss history (by default a run stores what "
        "rebuilds each jet: parameters, per-jet metrics and a thinned history)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run directory that holds a different recipe (only files inr-fast wrote are removed)",
    )
    parser.add_argument("--no-figures", action="store_true", help="skip curve.png and compare.png")
    add_executor_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if dry_run(args):
        return 0
    cmd = FitCommand(
        file=args.file,
        out=args.out,
        preset=args.preset,
        backend=args.backend,
        n=args.n,
        indices=args.indices,
        device=args.device,
        seed=args.seed,
        target_psnr=args.target_psnr,
        target_rel_l2=args.target_rel_l2,
        target_level=args.target_level,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        empty_samples=args.empty_samples,
        bright_weight=args.bright_weight,
        param_dtype=args.param_dtype,
        support=args.support,
        channels_first=args.channels_first,
        keep_diagnostics=args.keep_diagnostics,
        overwrite=args.overwrite,
        progress=not args.quiet,
        executor=args.executor,
        workers=args.workers,
        cluster=cluster_options(args),
    )
    summary = fit_run(cmd)
    if not args.no_figures:
        write_fit_figures(cmd.out)
    print(summary)
    return 0
