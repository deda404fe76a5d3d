"""Run directories: write, resume, load, rebuild and render fitted jets; the ``inr-fast render`` command.

Layout of a run directory ``RUN/``::

    config.json                      RunConfig: data file, jet indices, seed, the FitConfig (model spec,
                                     normalisation, optimiser, schedule, targets, backend), the run-wide
                                     normaliser, parameter count and bytes per jet
    jets/chunk_000000.safetensors    one file per batch of ``batch_size`` jets (in the order of
                                     ``indices``), written atomically (temporary file + rename):
                                       indices (k,) int64, weights.{l} (k, fan_out, fan_in) float32,
                                       biases.{l} (k, fan_out), reconstructions (k, 125, 125, 3) float32
                                       (GeV), loss_history / psnr_history / rel_l2_history (k, max_steps)
                                       float32 (NaN where not recorded), n_steps (k,) int64, psnr / rel_l2
                                       (k,) float64, reached_target / retried / failed (k,) uint8, and
                                       norm_scales (k,) float64 for per-jet normalisations
    curve.png, compare.png           loss curves and original vs reconstruction of the first jets

A chunk file exists only once all its jets are fitted, so a kill at any moment leaves whole chunks;
re-running the same ``inr-fast fit`` skips them. Rendering (:func:`render_jet`) evaluates the reference
model in float32 on the CPU or a given device.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from inr_fast.atomic import atomic_output, atomic_write_bytes
from inr_fast.errors import ConfigError, DataError, InrFastError, OutputExistsError
from inr_fast.layout import CHANNELS, IMAGE_SIZE, N_CHANNELS
from inr_fast.reference import ModelSpec, param_count, spec_forward, stored_bytes_per_jet

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
JETS_DIR = "jets"
FIGURES = ("curve.png", "compare.png")
# Outputs of other commands that describe a fit and go stale when it is replaced.
DERIVED = ("metrics.csv", "summary.json", "report.html")
EVAL_CHUNK = 65536  # coordinates per forward pass when rendering


# ------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class RunConfig:
    """What a run directory holds besides the fitted parameters (config.json).

    data_path: the HDF5 file (absolute); indices: the fitted jets in order; chunk c holds
    ``indices[c * batch_size:(c + 1) * batch_size]``; fit: the :class:`inr_fast.train.FitConfig`;
    normaliser: the run-wide normaliser (None for per-jet normalisations).
    """

    data_path: str
    channels_first: bool
    n_jets_in_file: int
    indices: list[int]
    seed: int
    fit: object  # FitConfig (typed loosely to keep this module importable without the trainer)
    normaliser: object = None
    format: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    def chunks(self) -> list[np.ndarray]:
        """Jet indices of each chunk, (k,) int64 each."""
        idx = np.asarray(self.indices, dtype=np.int64)
        bs = self.fit.batch_size
        return [idx[s : s + bs] for s in range(0, len(idx), bs)]

    def locate(self, index: int) -> tuple[int, int]:
        """(chunk, position in chunk) of jet ``index``."""
        hits = np.flatnonzero(np.asarray(self.indices, dtype=np.int64) == int(index))
        if hits.size == 0:
            raise DataError(f"jet index {index} is not part of this run (it fits {_describe(self.indices)})")
        pos = int(hits[0])
        return pos // self.fit.batch_size, pos % self.fit.batch_size

    def identity(self) -> dict:
        """The fields that decide the result (two runs with equal identity resume each other)."""
        return {
            "format": self.format,
            "data_path": self.data_path,
            "channels_first": self.channels_first,
            "n_jets_in_file": self.n_jets_in_file,
            "indices": [int(i) for i in self.indices],
            "seed": int(self.seed),
            "fit": self.fit.to_dict(),
        }

    def to_dict(self) -> dict:
        from inr_fast import __version__

        d = self.identity()
        d["normaliser"] = None if self.normaliser is None else self.normaliser.to_dict()
        spec = self.fit.model
        d["extra"] = {
            **self.extra,
            "inr_fast_version": __version__,
            "param_count": param_count(spec),
            "bytes_per_jet": stored_bytes_per_jet(spec, self.fit.param_dtype),
        }
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> RunConfig:
        from inr_fast.data import normaliser_from_dict
        from inr_fast.train import FitConfig

        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {unknown}; known keys: {sorted(known)}")
        d = dict(d)
        if d.get("format") != FORMAT_VERSION:
            raise ConfigError(
                f"{source}: run format {d.get('format')!r}, this version reads {FORMAT_VERSION}"
            )
        d["fit"] = FitConfig.from_dict(d["fit"])
        d["normaliser"] = None if d.get("normaliser") is None else normaliser_from_dict(d["normaliser"])
        return cls(**d)


def _describe(indices, limit: int = 6) -> str:
    idx = [int(i) for i in indices]
    text = ", ".join(map(str, idx[:limit]))
    return f"{len(idx)} jets: {text}" + (" ..." if len(idx) > limit else "")


def write_config(run: str | os.PathLike, cfg: RunConfig) -> Path:
    """Write RUN/config.json atomically."""
    path = Path(run) / CONFIG_NAME
    atomic_write_bytes(path, (json.dumps(cfg.to_dict(), indent=1) + "\n").encode())
    return path


def read_config(run: str | os.PathLike) -> RunConfig:
    """RUN/config.json as a :class:`RunConfig` (clear errors for a missing or foreign directory)."""
    path = Path(run) / CONFIG_NAME
    if not path.is_file():
        raise DataError(
            f"{run}: not an inr-fast run directory (no {CONFIG_NAME}); create one with `inr-fast fit`"
        )
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read the run configuration ({err})") from None
    return RunConfig.from_dict(d, str(path))


def clear_run(run: Path) -> None:
    """Remove what ``inr-fast fit`` (and the commands reading its result) wrote in ``run``."""
    shutil.rmtree(run / JETS_DIR, ignore_errors=True)
    for name in (CONFIG_NAME, *FIGURES, *DERIVED):
        (run / name).unlink(missing_ok=True)


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


def prepare_run_dir(run: str | os.PathLike, cfg: RunConfig, overwrite: bool = False) -> RunConfig | None:
    """Make ``run`` ready for ``cfg``: returns the stored RunConfig when it is the same run (resume),
    None for a new or cleared directory. A directory holding a different run (or other files) is
    refused with :class:`OutputExistsError` unless ``overwrite``."""
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise OutputExistsError(f"{run}: exists and is not a directory; choose another --out")
    if not run.exists():
        run.mkdir(parents=True)
        return None
    if (run / CONFIG_NAME).exists():
        try:
            stored = read_config(run)
            diff = _differences(stored.identity(), cfg.identity())
        except InrFastError as err:
            stored, diff = None, [f"unreadable config ({err})"]
        if not diff:
            return stored
        if not overwrite:
            raise OutputExistsError(
                f"{run}: holds a different run (differs in {', '.join(diff[:6])}); "
                "pass --overwrite to replace it, or choose another --out"
            )
        clear_run(run)
        return None
    if any(run.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"{run}: exists, is not empty and is not an inr-fast run directory; "
            "pass --overwrite or choose another --out"
        )
    clear_run(run)
    return None


# ------------------------------------------------------------------------------------------ chunks


def chunk_path(run: str | os.PathLike, chunk: int) -> Path:
    return Path(run) / JETS_DIR / f"chunk_{chunk:06d}.safetensors"


def chunk_done(run: str | os.PathLike, chunk: int) -> bool:
    return chunk_path(run, chunk).is_file()


def save_chunk(run: str | os.PathLike, chunk: int, result) -> Path:
    """Write one chunk's :class:`inr_fast.train.FitResult` atomically (temporary file + rename)."""
    from safetensors.torch import save

    path = chunk_path(run, chunk)
    data = save(
        result.to_tensors(),
        metadata={"format": str(FORMAT_VERSION), "chunk": str(chunk), "seconds": repr(float(result.seconds))},
    )
    atomic_write_bytes(path, data)
    return path


def load_chunk(run: str | os.PathLike, chunk: int, cfg: RunConfig | None = None):
    """One chunk as a :class:`inr_fast.train.FitResult` (checked against the config's indices)."""
    from safetensors.torch import load_file

    from inr_fast.train import FitResult

    cfg = read_config(run) if cfg is None else cfg
    path = chunk_path(run, chunk)
    if not path.is_file():
        raise DataError(
            f"{path}: missing; the run is not finished (re-run the same `inr-fast fit` to resume)"
        )
    try:
        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types
        raise DataError(f"{path}: cannot read the fitted parameters ({err})") from None
    result = FitResult.from_tensors(tensors, cfg.fit, cfg.normaliser, cfg.seed)
    expected = cfg.chunks()[chunk]
    if not np.array_equal(result.indices, expected):
        raise DataError(
            f"{path}: holds jets {_describe(result.indices)}, the config expects {_describe(expected)}"
        )
    return result


def load_results(run: str | os.PathLike, allow_partial: bool = True):
    """All finished chunks of a run, joined into one :class:`inr_fast.train.FitResult`."""
    from inr_fast.train import FitResult

    cfg = read_config(run)
    n = len(cfg.chunks())
    done = [c for c in range(n) if chunk_done(run, c)]
    if not done or (not allow_partial and len(done) < n):
        raise DataError(
            f"{run}: {len(done)} of {n} chunks fitted; re-run the same `inr-fast fit` to finish it"
        )
    return FitResult.concat([load_chunk(run, c, cfg) for c in done])


@dataclass(frozen=True)
class FittedJet:
    """One fitted jet, enough to evaluate it anywhere: spec, B = 1 parameter stacks, its normaliser."""

    index: int
    spec: ModelSpec
    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    normaliser: object
    reconstruction: np.ndarray
    failed: bool

    def render(self, resolution: int = IMAGE_SIZE, device="cpu", conserve: bool = True) -> np.ndarray:
        if self.failed:
            raise InrFastError(
                f"jet {self.index} failed to fit (non-finite loss even in float32); nothing to render"
            )
        return render_jet(self.spec, self.weights, self.biases, self.normaliser, resolution, device, conserve)

    def module(self) -> torch.nn.Module:
        """The jet as a single-network nn.Module (pe_relu: :class:`inr_fast.reference.PEMLP`), which
        outputs NORMALISED values; see ``normaliser.inverse``."""
        from inr_fast.reference import PEMLP, BatchedINR

        if self.spec.kind == "pe_relu":
            return PEMLP.from_params(self.spec, self.weights, self.biases)
        return BatchedINR(self.spec, [w.clone() for w in self.weights], [b.clone() for b in self.biases])


def load_jet(run: str | os.PathLike, index: int) -> FittedJet:
    """Rebuild jet ``index`` (its file index) of a run directory."""
    cfg = read_config(run)
    chunk, pos = cfg.locate(index)
    res = load_chunk(run, chunk, cfg)
    w, b = res.jet_params(pos)
    return FittedJet(
        int(index),
        cfg.fit.model,
        w,
        b,
        res.jet_normaliser(pos),
        res.reconstructions[pos],
        bool(res.failed[pos]),
    )


# ------------------------------------------------------------------------------------------ rendering


def evaluate_params(
    spec: ModelSpec, weights: list[torch.Tensor], biases: list[torch.Tensor], coords: torch.Tensor
) -> torch.Tensor:
    """The reference model of B jets at coords (N, 2), float32, no autocast, ``EVAL_CHUNK`` coordinates
    per pass: (B, N, out) normalised values (on the device of ``coords``)."""
    dev = coords.device
    w = [t.to(dev, torch.float32) for t in weights]
    b = [t.to(dev, torch.float32) for t in biases]
    with torch.no_grad(), torch.autocast(dev.type, enabled=False):
        parts = [
            spec_forward(spec, coords[s : s + EVAL_CHUNK], w, b) for s in range(0, len(coords), EVAL_CHUNK)
        ]
    return torch.cat(parts, dim=1)


def conserve_sums(fine: np.ndarray, native_sums: np.ndarray) -> np.ndarray:
    """Rescale each channel of ``fine`` (P, P, 3) so that its sum equals ``native_sums`` (3,) (float64
    sums); channels summing to zero are left alone."""
    sums = fine.reshape(-1, fine.shape[-1]).sum(axis=0, dtype=np.float64)
    factor = np.ones_like(sums)
    nz = sums != 0
    factor[nz] = native_sums[nz] / sums[nz]
    return (fine * factor).astype(np.float32)


def render_jet(
    spec: ModelSpec,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    normaliser,
    resolution: int = IMAGE_SIZE,
    device="cpu",
    conserve: bool = True,
) -> np.ndarray:
    """One jet (B = 1 stacks) on a P x P grid over the native window [-1, 1]^2: (P, P, 3) float32 GeV.

    The network's output, inverse-normalised, is an energy density per NATIVE pixel area; a pixel of
    the P grid covers (125 / P)^2 native pixels, so its energy is value x (125 / P)^2. That Riemann sum
    equals the native sum only approximately (the samples differ), so with ``conserve`` each channel is
    then rescaled by (native sum / fine sum), making the per-channel sums equal to those of the native
    125 render (to float32 rounding). At P = 125 the native render itself is returned, identical to the
    reconstruction stored by the trainer.
    """
    from inr_fast.data import pixel_grid

    if isinstance(resolution, bool) or not isinstance(resolution, int | np.integer) or resolution < 1:
        raise ConfigError(f"resolution must be a positive integer, got {resolution!r}")
    dev = torch.device(device)

    def render_at(p: int) -> np.ndarray:
        values = evaluate_params(spec, weights, biases, pixel_grid(p, device=dev))  # (1, p*p, 3)
        values = normaliser.inverse(values) if normaliser is not None else values
        return values[0].to("cpu", torch.float32).numpy().reshape(p, p, N_CHANNELS)

    native = render_at(IMAGE_SIZE)
    if resolution == IMAGE_SIZE:
        return native
    fine = render_at(int(resolution)) * np.float32((IMAGE_SIZE / resolution) ** 2)
    if conserve:
        fine = conserve_sums(fine, native.reshape(-1, N_CHANNELS).sum(axis=0, dtype=np.float64))
    return fine


# ------------------------------------------------------------------------------------------ figures


def plot_curves(result, max_jets: int = 20):
    """Loss (normalised MSE) per step, and psnr where recorded, for up to ``max_jets`` jets."""
    from inr_fast.plots import new_figure

    fig = new_figure(10, 4, layout="constrained")
    ax_loss, ax_psnr = fig.subplots(1, 2)
    for j in range(min(len(result), max_jets)):
        loss = result.loss_history[j]
        steps = np.flatnonzero(np.isfinite(loss))
        if steps.size:
            ax_loss.plot(steps + 1, loss[steps], lw=0.8, label=f"jet {int(result.indices[j])}")
        psnr = result.psnr_history[j]
        steps = np.flatnonzero(np.isfinite(psnr))
        if steps.size:
            ax_psnr.plot(steps + 1, psnr[steps], lw=0.8)
    ax_loss.set(xscale="log", yscale="log", xlabel="step", ylabel="MSE (normalised)", title="training loss")
    ax_psnr.set(xscale="log", xlabel="step", ylabel="PSNR [dB]", title="PSNR (original scale)")
    if result.config.target_psnr is not None:
        ax_psnr.axhline(result.config.target_psnr, color="k", ls="--", lw=0.8)
    if 0 < len(result) <= 10:
        ax_loss.legend(fontsize=7)
    return fig


def plot_compare(originals: np.ndarray, recons: np.ndarray, indices, psnrs=None):
    """Original and reconstruction (rows) of each jet, per channel (columns), shared log colour per
    channel and jet."""
    from inr_fast.plots import draw_jet_panel, jet_figure, jet_log_norm

    n = len(originals)
    fig, axes = jet_figure(2 * n, N_CHANNELS)
    for j in range(n):
        for c, name in enumerate(CHANNELS):
            norm = jet_log_norm(originals[j][..., c], recons[j][..., c])
            extra = f", {psnrs[j]:.1f} dB" if psnrs is not None else ""
            draw_jet_panel(
                axes[2 * j, c], originals[j][..., c], norm, f"jet {int(indices[j])} {name}: original"
            )
            draw_jet_panel(axes[2 * j + 1, c], recons[j][..., c], norm, f"reconstruction{extra}")
    return fig


def write_figures(run: str | os.PathLike, result=None, n_compare: int = 3, overwrite: bool = True) -> None:
    """RUN/curve.png and RUN/compare.png (the first ``n_compare`` fitted jets, read back from the data)."""
    from inr_fast.data import JetFile
    from inr_fast.plots import save_figure

    run = Path(run)
    cfg = read_config(run)
    result = load_results(run) if result is None else result
    save_figure(plot_curves(result), run / "curve.png", overwrite=overwrite)
    ok = np.flatnonzero(~result.failed)[:n_compare]
    if ok.size == 0:
        return
    with JetFile(cfg.data_path, channels_first=cfg.channels_first) as jf:
        originals = jf.read(result.indices[ok])
    fig = plot_compare(originals, result.reconstructions[ok], result.indices[ok], result.psnr[ok])
    save_figure(fig, run / "compare.png", overwrite=overwrite)


# ------------------------------------------------------------------------------------------ command


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


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory written by `inr-fast fit`")
    parser.add_argument("--index", type=int, required=True, help="jet index (in the data file) to render")
    parser.add_argument(
        "--resolution", type=int, default=IMAGE_SIZE, metavar="P", help="P x P pixels (default 125)"
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
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def run_render(args: argparse.Namespace) -> int:
    cmd = RenderCommand(
        run=args.run,
        index=args.index,
        out=args.out,
        resolution=args.resolution,
        device=args.device,
        conserve=not args.no_conserve,
        overwrite=args.overwrite,
    )
    path = render_to_file(cmd)
    print(f"{path}: jet {cmd.index} of {cmd.run} at {cmd.resolution} x {cmd.resolution}")
    return 0


def render_to_file(cmd: RenderCommand) -> Path:
    """Render one jet of a run into an HDF5 or PNG file (by extension), atomically."""
    out = Path(cmd.out)
    suffix = out.suffix.lower()
    if suffix not in (".h5", ".hdf5", ".png"):
        raise ConfigError(f"{out}: unknown output type {out.suffix!r}; use .h5 (or .hdf5) or .png")
    if out.exists() and not cmd.overwrite:
        raise OutputExistsError(f"{out}: already exists; pass --overwrite to replace it")
    if cmd.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available to torch here; use --device cpu")
    jet = load_jet(cmd.run, cmd.index)
    image = jet.render(cmd.resolution, cmd.device, cmd.conserve)
    if suffix == ".png":
        from inr_fast.layout import PITCH
        from inr_fast.plots import plot_jet, save_figure

        title = f"jet {cmd.index} rendered at {cmd.resolution} x {cmd.resolution}"
        save_figure(plot_jet(image, title, pitch=PITCH * IMAGE_SIZE / cmd.resolution), out, overwrite=True)
        return out
    import h5py

    with atomic_output(out, overwrite=True) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("image", data=image)
        f.attrs.update(
            {
                "run": str(Path(cmd.run).resolve()),
                "index": int(cmd.index),
                "resolution": int(cmd.resolution),
                "channels": ",".join(CHANNELS),
                "units": "GeV per pixel",
                "conserve": bool(cmd.conserve),
            }
        )
    return out
