"""Fitting and evaluating on a real Dask LocalCluster: the same chunks as a serial run, byte for byte;
a worker killed mid-chunk, a driver killed mid-run and a second driver lose or duplicate nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from inr_fast import store
from inr_fast.cli import main
from inr_fast.jobs.cluster import ClusterOptions, Executor, job_script
from inr_fast.jobs.evaluate import EvaluateCommand, evaluate, read_metrics
from inr_fast.jobs.fit import FitCommand, fit_run
from inr_fast.testing import gaussian_jets

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.usefixtures("one_thread")  # serial runs with 1 thread, like the workers

N_JETS, BATCH, STEPS = 8, 2, 150


@pytest.fixture(scope="module")
def jet_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cluster") / "jets.h5"
    with h5py.File(path, "w") as f:
        f["X_jets"], f["y"] = gaussian_jets(N_JETS, seed=5), np.arange(N_JETS) % 2
        f["m0"], f["pt"] = np.ones(N_JETS), np.full(N_JETS, 100.0)
    return path


@pytest.fixture(scope="module")
def serial_run(jet_file, tmp_path_factory) -> Path:
    import torch

    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("serial") / "run"
    fit_run(_cmd(jet_file, run))
    return run


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )  # a free port: ":8787" may be taken by another cluster on the machine
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def _cmd(jet_file, run, **kw) -> FitCommand:
    return FitCommand(
        file=str(jet_file), out=str(run), max_steps=STEPS, batch_size=BATCH, progress=False, **kw
    )


def _same_chunks(a: Path, b: Path) -> None:
    n = len(store.read_config(a).chunks)
    assert n == N_JETS // BATCH and len(store.read_config(b).chunks) == n
    for c in range(n):
        assert store.chunk_path(a, c).read_bytes() == store.chunk_path(b, c).read_bytes(), f"chunk {c}"
    assert sorted(p.name for p in (b / "jets").glob("*.safetensors")) == [
        f"chunk_{c:06d}.safetensors" for c in range(n)
    ]


def test_a_worker_killed_mid_chunk_loses_and_duplicates_nothing(jet_file, serial_run, client, tmp_path):
    run = tmp_path / "run"
    errors = []
    driver = threading.Thread(target=lambda: _catch(errors, fit_run, _cmd(jet_file, run), client=client))
    driver.start()
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline:
        busy = {
            w: keys for w, keys in client.processing().items() if any("inr-fast-fit" in str(k) for k in keys)
        }
        if busy:
            victim = sorted(busy)[0]
        time.sleep(0.05)
    assert victim is not None, "no chunk task started"
    time.sleep(0.3)  # inside the chunk's training
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)  # the nanny restarts it; Dask reschedules its chunk
    driver.join(timeout=120)
    assert not driver.is_alive() and not errors, errors
    _same_chunks(serial_run, run)

    # evaluate on the cluster too, equal to a serial evaluation
    evaluate(EvaluateCommand(str(run), lpips="no", progress=False), client=client)
    evaluate(EvaluateCommand(str(serial_run), lpips="no", progress=False))
    a, b = read_metrics(run / "metrics.csv"), read_metrics(serial_run / "metrics.csv")
    assert a.keys() == b.keys()
    for name in a:
        if name != "fit_seconds":  # wall time: the one column that may differ
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_a_second_driver_is_refused_while_the_first_runs_on_the_cluster(jet_file, client, tmp_path):
    run = tmp_path / "run"
    errors = []
    driver = threading.Thread(target=lambda: _catch(errors, fit_run, _cmd(jet_file, run), client=client))
    driver.start()
    deadline = time.monotonic() + 30
    while not (run / store.LOCK_NAME).exists() or not (run / "config.json").exists():
        assert time.monotonic() < deadline, "the first driver did not start"
        time.sleep(0.02)
    with pytest.raises(store.RunBusyError, match="in use by `inr-fast fit`"):
        fit_run(_cmd(jet_file, run, seed=3, overwrite=True))
    with pytest.raises(store.RunBusyError):
        evaluate(EvaluateCommand(str(run), lpips="no", progress=False))
    driver.join(timeout=120)
    assert not errors, errors
    assert store.read_config(run).seed == 0 and len(store.done_chunks(run, store.read_config(run))) == 4


def test_a_killed_driver_is_resumed_refitting_only_unfinished_chunks(jet_file, serial_run, tmp_path):
    run = tmp_path / "run"
    script = (
        "import sys\n"
        "from inr_fast.cli import main\n"
        "if __name__ == '__main__':\n"
        f"    sys.exit(main(['fit', {str(jet_file)!r}, '--out', {str(run)!r}, '--max-steps', '{STEPS}',\n"
        f"                   '--batch-size', '{BATCH}', '--executor', 'local', '--workers', '1', '-q',\n"
        "                   '--no-figures']))\n"
    )
    (tmp_path / "drive.py").write_text(script)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "drive.py")], start_new_session=True)
    deadline = time.monotonic() + 120
    # the first chunk written, whichever the scheduler ran first
    while not list((run / store.JETS_DIR).glob("chunk_*.safetensors")) and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its scheduler and its workers, mid-run
    proc.wait()
    cfg = store.read_config(run)
    done = store.done_chunks(run, cfg)
    assert 1 <= len(done) < len(cfg.chunks)
    args = ["fit", str(jet_file), "--out", str(run), "--max-steps", str(STEPS), "--batch-size", str(BATCH)]
    assert main([*args, "-q", "--no-figures"]) == 0
    _same_chunks(serial_run, run)
    summary_jets = json.loads(store.chunk_info_path(run, done[0]).read_text())["n_jets"]
    assert summary_jets == BATCH


def test_cluster_options_and_job_scripts(tmp_path):
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text("cores: 8\nmemory: 16GiB\nqueue: short\nprologue: ['source /opt/venv/bin/activate']\n")
    options = ClusterOptions.from_file(cfg).merged(walltime="01:00:00")
    script = job_script("slurm", options)
    for line in (
        "#SBATCH -p short",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH -t 01:00:00",
        "source /opt/venv/bin/activate",
    ):
        assert line in script
    assert "--resources chunk=1" in script
    assert "RequestCpus" in job_script("htcondor", options)
    (tmp_path / "bad.json").write_text('{"cores": 2, "gpus": 1}')
    with pytest.raises(Exception, match="unknown key.*gpus"):
        ClusterOptions.from_file(tmp_path / "bad.json")
    assert Executor("local", workers=2, options=ClusterOptions(cores=8)).threads == 4
    assert Executor("slurm", options=ClusterOptions(cores=8, processes=2)).threads == 4
    with pytest.raises(Exception, match="--executor must be one of"):
        Executor("kubernetes")


def _catch(errors: list, fn, *args, **kw) -> None:
    try:
        fn(*args, **kw)
    except BaseException as err:  # noqa: BLE001 - reported by the test
        errors.append(err)


def test_worker_malloc_threshold_set_only_where_dask_disabled_the_adaptive_one(monkeypatch):
    """A chunk task sets glibc's mmap threshold where the environment carries Dask's
    MALLOC_TRIM_THRESHOLD_ (which turns the adaptive threshold off), and nowhere else."""
    import sys

    from inr_fast.jobs import cluster

    monkeypatch.setattr(cluster, "_malloc_tuned", False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("INR_FAST_WORKER_MALLOC", raising=False)
    assert cluster.tune_worker_malloc() is False  # glibc's defaults: left alone
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    assert cluster.tune_worker_malloc() is False  # the user chose a threshold
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.setenv("INR_FAST_WORKER_MALLOC", "0")
    assert cluster.tune_worker_malloc() is False  # turned off
    monkeypatch.delenv("INR_FAST_WORKER_MALLOC")
    if sys.platform.startswith("linux"):
        assert cluster.tune_worker_malloc() is True  # mallopt accepted 32 MiB
        assert cluster._malloc_tuned is True
