"""Where the per-chunk tasks of ``fit`` and ``evaluate`` run: here, one chunk after another (``serial``),
or on Dask: a ``distributed.LocalCluster`` (``local``), a Slurm or HTCondor batch system through
``dask-jobqueue`` (``slurm``, ``htcondor``), or an existing scheduler (``tcp://host:port``).

Each chunk task runs with a fixed number of torch/OpenMP threads, its share of the cores (so workers do
not oversubscribe the machine), and on batch clusters one chunk task at a time per worker process (the
``chunk`` worker resource). Cluster options come from flags or a small JSON/YAML file
(:class:`ClusterOptions`); ``--dry-run`` prints the job script a batch cluster would submit.

``dask``, ``distributed`` and ``dask-jobqueue`` are the optional extra ``inr_fast[cluster]``; they are
imported only when a cluster is asked for.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from inr_fast.errors import ConfigError, InrFastError
from inr_fast.util import refuse_unknown

EXECUTORS = ("serial", "local", "slurm", "htcondor")
#: the worker resource a chunk task asks for: one at a time per worker process on batch clusters
CHUNK_RESOURCE = "chunk"


#: glibc's mallopt parameter for the size from which allocations are mmap'ed (malloc.h: M_MMAP_THRESHOLD)
_M_MMAP_THRESHOLD = -3
#: the threshold set in worker processes: 32 MiB, the most glibc accepts on 64-bit systems
WORKER_MMAP_THRESHOLD = 32 << 20
_malloc_tuned = False


def tune_worker_malloc() -> bool:
    """Keep large tensor buffers in the heap in a process whose environment disabled glibc's adaptive
    mmap threshold, as Dask's nanny does for its workers (``distributed.nanny.pre-spawn-environ`` sets
    ``MALLOC_TRIM_THRESHOLD_=65536``). Without the adaptive threshold every buffer above 128 KiB is
    mmap'ed and unmapped again, and its pages faulted in anew each time: a ``fast`` fit of 32 jets
    took 16.5-17.5 s with that variable against 11.4-13.8 s without, and 11.9-13.4 s with this
    (BENCHMARKS.md, "Workers"). Called by every chunk task; a no-op elsewhere, off glibc, when
    ``MALLOC_MMAP_THRESHOLD_`` is set, or with ``INR_FAST_WORKER_MALLOC=0``. Returns whether it set the
    threshold (in this call or an earlier one)."""
    global _malloc_tuned
    if _malloc_tuned:
        return True
    env = os.environ
    if (
        env.get("INR_FAST_WORKER_MALLOC", "1") == "0"
        or "MALLOC_TRIM_THRESHOLD_" not in env
        or "MALLOC_MMAP_THRESHOLD_" in env
    ):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        _malloc_tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, WORKER_MMAP_THRESHOLD))
    except (OSError, AttributeError):  # no mallopt: not glibc
        return False
    return _malloc_tuned


def start_task(threads: int) -> None:
    """What every chunk task does first, wherever it runs: its share of the cores as torch threads,
    and the allocator setting of :func:`tune_worker_malloc`."""
    import torch

    torch.set_num_threads(threads)
    tune_worker_malloc()


@dataclass(frozen=True)
class ClusterOptions:
    """Options of a Dask cluster (flags or a JSON/YAML file; unknown keys are refused).

    cores: CPU cores per batch job (slurm/htcondor) or in all (local: default every core of the machine);
    processes: worker processes per batch job; threads: torch threads per chunk task (default: the cores
    of one worker process); memory: per batch job, e.g. "8GiB"; walltime: per job (slurm); queue: the
    partition/queue (slurm); prologue: shell lines run before the worker starts (activate the
    environment: ``source /path/venv/bin/activate``); lifetime: restart workers after this long (e.g.
    "3h"; with a 5 minute stagger), so that batch jobs end before their walltime; disk: per job
    (htcondor); python: the interpreter the worker runs (default this one).
    """

    cores: int | None = None
    processes: int = 1
    threads: int | None = None
    memory: str = "4GiB"
    walltime: str = "04:00:00"
    queue: str | None = None
    prologue: tuple[str, ...] = ()
    lifetime: str | None = None
    disk: str = "1GiB"
    python: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("cores", "processes", "threads"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"cluster option {name} must be a positive integer, got {v!r}")
        object.__setattr__(self, "prologue", tuple(str(line) for line in self.prologue))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ClusterOptions:
        """Options from a JSON or YAML file (YAML needs PyYAML, which dask installs)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise ConfigError(f"--cluster-config {path}: cannot read it ({err.strerror or err})") from None
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml  # a dask dependency

                d = yaml.safe_load(text) or {}
            else:
                d = json.loads(text)
        except Exception as err:  # json/yaml raise their own types
            raise ConfigError(f"--cluster-config {path}: not valid JSON/YAML ({err})") from None
        refuse_unknown(cls, d, f"--cluster-config {path}")
        return cls(**d)

    def merged(self, **flags) -> ClusterOptions:
        """These options with the flags that were given (None: not given) on top."""
        given = {k: v for k, v in flags.items() if v is not None and v != ()}
        unknown = set(given) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(f"unknown cluster option(s) {sorted(unknown)}")
        return replace(self, **given)


def _dask():
    """distributed, imported on first use (the optional extra ``inr_fast[cluster]``)."""
    try:
        import distributed
    except ImportError as err:
        raise InrFastError(
            f"executors other than serial need Dask ({err}): pip install 'inr_fast[cluster]'"
        ) from None
    return distributed


def threads_per_task(executor: str, workers: int, options: ClusterOptions) -> int:
    """Torch/OpenMP threads of one chunk task: ``options.threads`` if given; ``local``: the machine's
    cores (or ``options.cores``) shared by the workers; batch clusters: the cores of one worker
    process; an existing scheduler: 1."""
    if options.threads is not None:
        return options.threads
    if executor == "local":
        return max(1, (options.cores or os.cpu_count() or 1) // max(workers, 1))
    if executor in ("slurm", "htcondor"):
        return max(1, (options.cores or 1) // options.processes)
    return 1


def _jobqueue_cluster(executor: str, options: ClusterOptions):
    try:
        import dask_jobqueue
    except ImportError as err:
        raise InrFastError(
            f"--executor {executor} needs dask-jobqueue ({err}): pip install 'inr_fast[cluster]'"
        ) from None
    extra_args = ["--resources", f"{CHUNK_RESOURCE}=1"]
    if options.lifetime:
        extra_args += ["--lifetime", options.lifetime, "--lifetime-stagger", "5m"]
    common = dict(
        # the dashboard on a free port (":8787" is often taken); extra: {"scheduler_options": {...}}
        scheduler_options={"dashboard_address": ":0"},
        cores=options.cores or 1,
        processes=options.processes,
        memory=options.memory,
        job_script_prologue=list(options.prologue),
        worker_extra_args=extra_args,
        python=options.python,
    )
    common.update(options.extra)
    if executor == "slurm":
        return dask_jobqueue.SLURMCluster(walltime=options.walltime, queue=options.queue, **common)
    return dask_jobqueue.HTCondorCluster(disk=options.disk, **common)


def job_script(executor: str, options: ClusterOptions) -> str:
    """The job script a ``slurm`` or ``htcondor`` cluster would submit for one batch job."""
    if executor not in ("slurm", "htcondor"):
        raise ConfigError(
            f"--dry-run shows a batch job script: it needs --executor slurm or htcondor, not {executor!r}"
        )
    _dask()
    cluster = _jobqueue_cluster(executor, options)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


class Executor:
    """A context manager giving the Dask client to run chunk tasks on (None for ``serial``), and how to
    submit them: ``submit(fn, *args, key=...)`` with retries, the chunk resource where workers have it.
    ``client`` may be given instead of ``executor`` (the Python API): it is used as is and not closed."""

    def __init__(
        self, executor: str = "serial", workers: int = 1, options: ClusterOptions | None = None, client=None
    ):
        if not (executor in EXECUTORS or "://" in executor):
            raise ConfigError(
                f"--executor must be one of {', '.join(EXECUTORS)} or a scheduler address "
                f"tcp://HOST:PORT, got {executor!r}"
            )
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"--workers must be a positive integer, got {workers!r}")
        self.executor = "client" if client is not None else executor
        self.workers = workers
        self.options = options or ClusterOptions()
        self.client = client
        self._own = None
        self.threads = (
            threads_per_task(executor, workers, self.options)
            if client is None
            else (self.options.threads or 1)
        )

    @property
    def serial(self) -> bool:
        return self.executor == "serial"

    def __enter__(self) -> Executor:
        if self.client is not None or self.serial:
            return self
        distributed = _dask()
        if self.executor == "local":
            # the dashboard on a free port: None still means ":8787", and a second cluster on the machine
            # (another run, a test) would find it taken
            cluster = distributed.LocalCluster(
                n_workers=self.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                memory_limit=self.options.memory if self.options.memory != ClusterOptions.memory else "auto",
            )  # fmt: skip
            self._own = cluster
            self.client = distributed.Client(cluster)
        elif "://" in self.executor:
            self.client = distributed.Client(self.executor)
        else:
            cluster = _jobqueue_cluster(self.executor, self.options)
            cluster.scale(jobs=self.workers)
            self._own = cluster
            self.client = distributed.Client(cluster)
        return self

    def __exit__(self, *exc) -> None:
        if self._own is not None:
            self.client.close()
            self._own.close()
            self.client = self._own = None

    def submit(self, fn, *args, key: str):
        """One task; retried up to twice (a lost worker's task is rescheduled by Dask in any case)."""
        kw = {"key": key, "retries": 2, "pure": False}
        if self.executor in ("slurm", "htcondor"):
            kw["resources"] = {CHUNK_RESOURCE: 1}
        return self.client.submit(fn, *args, **kw)

    def as_completed(self, futures):
        return _dask().as_completed(futures)

    def describe(self) -> str:
        if self.serial:
            return "serial"
        return f"{self.executor} ({self.workers} worker(s), {self.threads} thread(s) per chunk task)"


def options_dict(options: ClusterOptions) -> dict:
    return asdict(options)
