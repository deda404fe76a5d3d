"""The export job: every fitted jet of a run rendered into one HDF5 file in the input layout
(``X_jets`` (N, R, R, 3) float32 GeV, ``y``, ``m0``, ``pt``), so existing quark/gluon pipelines read the
reconstructions unchanged.

One task per finished chunk renders its jets (at any resolution, energy conserving) after checking that
the data file still holds the jets that were fitted; the driver writes each chunk's rows as they arrive
into datasets chunked and gzip-compressed per jet, so memory stays at a few chunks whatever the run's
size. The output is written to a temporary file and renamed at the end (a kill leaves no partial file).
Extra datasets: ``index`` (the jets' indices in the source file), ``empty`` and ``failed`` (uint8;
those jets are zeros).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from inr_fast import __version__, store
from inr_fast.atomic import atomic_output, check_writable
from inr_fast.errors import ConfigError, DataError
from inr_fast.jobs.cluster import ClusterOptions, Executor, start_task
from inr_fast.jobs.fit import run_id
from inr_fast.layout import CHANNELS, IMAGE_SIZE, KEY_IMAGES, KEY_LABEL, KEY_MASS, KEY_PT, N_CHANNELS
from inr_fast.model.render import MAX_RESOLUTION
from inr_fast.progress import Progress
from inr_fast.train.backend import resolve_device
from inr_fast.util import jet_digests


@dataclass(frozen=True)
class ExportCommand:
    """``inr-fast export RUN --out recon.h5 [--resolution R] [--data FILE] [--executor ...]``."""

    run: str
    out: str
    resolution: int = IMAGE_SIZE
    device: str = "cpu"
    data: str | None = None
    overwrite: bool = False
    progress: bool = True
    executor: str = "serial"
    workers: int = 1
    cluster: ClusterOptions = field(default_factory=ClusterOptions)


def export_chunk_task(
    run: str, chunk: int, resolution: int, device: str, data: str | None, threads: int
) -> dict:
    """Render one chunk's jets (a worker task): {"chunk", "images" (k, R, R, 3) float32, "empty",
    "failed" (k,) bool}; the originals are checked against the fitted jets' digests first."""
    start_task(threads)
    run = Path(run)
    cfg = store.read_config(run)
    idx = cfg.chunk_indices(chunk)
    with store.open_data(run, cfg, data) as jf:
        store.check_digests(
            run, chunk, idx, store.chunk_digests(run, chunk), jet_digests(jf.read(idx)), jf.path
        )
    res = store.load_chunk(run, chunk, cfg)
    dev = resolve_device(device)
    out = np.zeros((len(idx), resolution, resolution, N_CHANNELS), dtype=np.float32)
    for k, index in enumerate(res.indices):
        if not (res.failed[k] or res.empty[k]):
            out[k] = res.render(int(index), resolution, dev)
    return {"chunk": chunk, "images": out, "empty": res.empty.copy(), "failed": res.failed.copy()}


def export_run(cmd: ExportCommand, client=None) -> str:
    """Write every fitted jet of ``cmd.run`` into ``cmd.out`` (see the module docstring); returns a
    one-line summary."""
    run, out = Path(cmd.run), Path(cmd.out)
    cfg = store.read_config(run)
    if isinstance(cmd.resolution, bool) or not 1 <= int(cmd.resolution) <= MAX_RESOLUTION:
        raise ConfigError(f"--resolution must be an integer in 1..{MAX_RESOLUTION}, got {cmd.resolution}")
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise ConfigError(f"--out {out}: expected an .h5 (or .hdf5) file")
    if out.exists() and not cmd.overwrite:
        raise ConfigError(f"--out {out}: already exists; pass --overwrite to replace it")
    check_writable(out.parent, "--out")
    resolve_device(cmd.device)
    r = int(cmd.resolution)
    with store.RunLock(run, "inr-fast export"):
        done = store.done_chunks(run, cfg)
        if not done:
            raise DataError(f"{run}: no fitted jets yet; run `inr-fast fit` first")
        offsets = np.cumsum([0] + [len(cfg.chunks[c]) for c in done])
        n = int(offsets[-1])
        indices = np.concatenate([cfg.chunk_indices(c) for c in done])
        with store.open_data(run, cfg, cmd.data) as jf:
            order = np.argsort(indices, kind="stable")  # one sorted read of the scalars
            labels, masses, pts = (np.empty(n), np.empty(n), np.empty(n))
            labels[order], masses[order], pts[order] = (
                jf.labels(indices[order]),
                jf.masses(indices[order]),
                jf.pts(indices[order]),
            )
        data = None if cmd.data is None else str(cmd.data)
        with (
            atomic_output(out, overwrite=cmd.overwrite) as tmp,
            h5py.File(tmp, "w") as h5,
            Executor(cmd.executor, cmd.workers, cmd.cluster, client) as executor,
        ):
            images = h5.create_dataset(
                KEY_IMAGES,
                (n, r, r, N_CHANNELS),
                dtype="f4",
                chunks=(1, r, r, N_CHANNELS),
                compression="gzip",
                shuffle=True,
            )
            h5[KEY_LABEL], h5[KEY_MASS], h5[KEY_PT] = labels.astype(np.int64), masses, pts
            h5["index"] = indices
            empty, failed = h5.create_dataset("empty", (n,), "u1"), h5.create_dataset("failed", (n,), "u1")
            h5.attrs.update(
                {
                    "run": str(run.resolve()),
                    "resolution": r,
                    "channels": ",".join(CHANNELS),
                    "units": "X_jets: transverse energy E_T per pixel in GeV (Tracks: track pT); m0, pt: GeV",
                    "source": "reconstructions of inr-fast fits (energy-conserving renders)",
                    "inr_fast_version": __version__,
                }
            )
            position = {c: int(offsets[i]) for i, c in enumerate(done)}
            args = [(str(run), c, r, cmd.device, data) for c in done]
            with Progress(n, "export", enabled=cmd.progress) as bar:

                def write(part: dict) -> None:
                    s = position[part["chunk"]]
                    k = len(part["images"])
                    images[s : s + k] = part["images"]
                    empty[s : s + k], failed[s : s + k] = part["empty"], part["failed"]
                    bar.update(k)

                if executor.serial:
                    for a in args:
                        write(export_chunk_task(*a, torch.get_num_threads()))
                else:
                    rid = run_id(run)
                    futures = [
                        executor.submit(
                            export_chunk_task, *a, executor.threads, key=f"inr-fast-export-{rid}-{a[1]}"
                        )
                        for a in args
                    ]
                    for future in executor.as_completed(futures):
                        write(future.result())
                        future.release()
    note = "" if len(done) == len(cfg.chunks) else f" (partial run: {len(done)} of {len(cfg.chunks)} chunks)"
    return f"wrote {out}: {n} jets at {r} x {r}{note}, {os.path.getsize(out) / max(n, 1):,.0f} bytes per jet"
