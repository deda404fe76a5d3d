"""Options several commands share: where chunk tasks run (``--executor``, ``--workers`` and the cluster
options, :mod:`inr_fast.jobs.cluster`)."""

from __future__ import annotations

import argparse

from inr_fast.jobs.cluster import EXECUTORS, ClusterOptions, job_script


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where the chunks run (Dask; see docs/design.md, 'Scaling out')")
    group.add_argument(
        "--executor",
        default="serial",
        metavar="WHERE",
        help=f"{', '.join(EXECUTORS)} or a Dask scheduler address tcp://HOST:PORT (default serial: one "
        "chunk after another in this process; local: a Dask LocalCluster on this machine; slurm, htcondor: "
        "batch jobs through dask-jobqueue)",
    )
    group.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes (local) or batch jobs (default 1)",
    )
    group.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="T",
        help="torch threads per chunk task (default: the cores of one worker; local: cores / workers)",
    )
    group.add_argument("--cores", type=int, default=None, metavar="C", help="cores per batch job (default 1)")
    group.add_argument(
        "--processes", type=int, default=None, metavar="P", help="worker processes per batch job"
    )
    group.add_argument("--memory", default=None, metavar="MEM", help="memory per batch job (default 4GiB)")
    group.add_argument(
        "--walltime", default=None, metavar="HH:MM:SS", help="per batch job (slurm; default 04:00:00)"
    )
    group.add_argument("--queue", default=None, metavar="NAME", help="partition / queue (slurm)")
    group.add_argument(
        "--prologue",
        action="append",
        default=None,
        metavar="LINE",
        help="shell line run before a batch worker starts, e.g. 'source /path/venv/bin/activate' "
        "(repeatable)",
    )
    group.add_argument(
        "--worker-lifetime", default=None, metavar="DURATION", help="restart workers after this long, e.g. 3h"
    )
    group.add_argument(
        "--cluster-config",
        default=None,
        metavar="FILE",
        help="cluster options from a JSON or YAML file (flags win)",
    )
    group.add_argument(
        "--dry-run",
        action="store_true",
        help="print the job script a slurm/htcondor cluster would submit, and stop",
    )


def cluster_options(args: argparse.Namespace) -> ClusterOptions:
    base = ClusterOptions.from_file(args.cluster_config) if args.cluster_config else ClusterOptions()
    return base.merged(
        cores=args.cores,
        processes=args.processes,
        threads=args.threads,
        memory=args.memory,
        walltime=args.walltime,
        queue=args.queue,
        prologue=tuple(args.prologue or ()),
        lifetime=args.worker_lifetime,
    )


def dry_run(args: argparse.Namespace) -> bool:
    """With --dry-run: print the job script and return True (the command stops)."""
    if not args.dry_run:
        return False
    print(job_script(args.executor, cluster_options(args)))
    return True
