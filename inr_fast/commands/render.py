"""``inr-fast render RUN --index I --resolution P --out FILE.h5|FILE.png``: one fitted jet evaluated at
any resolution (energy conserving), written as HDF5 or a figure."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import h5py

from inr_fast import store
from inr_fast.atomic import atomic_output
from inr_fast.errors import ConfigError, OutputExistsError
from inr_fast.layout import CHANNELS, IMAGE_SIZE, PITCH
from inr_fast.model.render import MAX_RESOLUTION
from inr_fast.progress import log
from inr_fast.report.plots import plot_jet, save_figure
from inr_fast.train.backend import resolve_device
from inr_fast.util import jet_digests


@dataclass(frozen=True)
class RenderCommand:
    """``inr-fast render RUN --index I --resolution P --out FILE.h5|FILE.png``."""

    run: str
    index: int
    out: str
    resolution: int = IMAGE_SIZE
    device: str = "cpu"
    conserve: bool = True
    overwrite: bool = False
    data: str | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory written by `inr-fast fit`")
    parser.add_argument("--index", type=int, required=True, help="jet index (in the data file) to render")
    parser.add_argument(
        "--resolution",
        type=int,
        default=IMAGE_SIZE,
        metavar="P",
        help=f"P x P pixels over the jet's window (default {IMAGE_SIZE}, at most {MAX_RESOLUTION})",
    )
    parser.add_argument(
        "--out", required=True, help="output: FILE.h5 (dataset 'image', (P, P, 3) GeV) or FILE.png"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--no-conserve",
        action="store_true",
        help="plain density x (125/P)^2, without matching the native sums",
    )
    parser.add_argument(
        "--data",
        default=None,
        metavar="FILE",
        help="the run's data file if it moved (used to check the jet is the one fitted; optional)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    cmd = RenderCommand(
        run=args.run,
        index=args.index,
        out=args.out,
        resolution=args.resolution,
        device=args.device,
        conserve=not args.no_conserve,
        overwrite=args.overwrite,
        data=args.data,
    )
    path = render_to_file(cmd)
    print(f"{path}: jet {cmd.index} of {cmd.run} at {cmd.resolution} x {cmd.resolution}")
    return 0


def check_jet(run: str, index: int, digest, data: str | None) -> None:
    """Check that the data file (the run's, or ``data``) still holds the jet that was fitted, when the
    file can be found; rendering itself needs only the run directory."""
    cfg = store.read_config(run)
    path = data if data is not None else cfg.data_path
    if not Path(path).exists():
        if data is not None:
            raise ConfigError(f"--data {data}: no such file")
        log.info("%s: the run's data file is not there; the jet is rendered unchecked", path)
        return
    with store.open_data(run, cfg, data) as jf:
        chunk, _ = cfg.locate(index)
        store.check_digests(run, chunk, [index], digest[None], jet_digests(jf.read([index])), jf.path)


def render_to_file(cmd: RenderCommand) -> Path:
    """Render one jet of a run into an HDF5 or PNG file (by extension), atomically."""
    out = Path(cmd.out)
    suffix = out.suffix.lower()
    if suffix not in (".h5", ".hdf5", ".png"):
        raise ConfigError(f"{out}: unknown output type {out.suffix!r}; use .h5 (or .hdf5) or .png")
    if out.exists() and not cmd.overwrite:
        raise OutputExistsError(f"{out}: already exists; pass --overwrite to replace it")
    device = resolve_device(cmd.device)
    jet = store.load_jet(cmd.run, cmd.index)
    check_jet(cmd.run, cmd.index, jet.digest, cmd.data)
    image = jet.render(cmd.resolution, device, cmd.conserve)
    if suffix == ".png":
        title = f"jet {cmd.index} rendered at {cmd.resolution} x {cmd.resolution}"
        save_figure(plot_jet(image, title, pitch=PITCH * IMAGE_SIZE / cmd.resolution), out, overwrite=True)
        return out
    with atomic_output(out, overwrite=True) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("image", data=image)
        f.attrs.update(
            {
                "run": str(Path(cmd.run).resolve()),
                "index": int(cmd.index),
                "resolution": int(cmd.resolution),
                "channels": ",".join(CHANNELS),
                "units": "transverse energy E_T per pixel in GeV (Tracks: track pT)",
                "conserve": bool(cmd.conserve),
            }
        )
    return out
