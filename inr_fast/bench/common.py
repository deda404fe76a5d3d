"""What every benchmark shares: the machine it ran on, the simulated jet sets, the storage baselines
(raw and sparse lossless bytes per jet), and the fitting methods compared (the seed recipe and the
presets built to beat it)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from inr_fast.data.simulate import SimulateConfig, simulate_jets
from inr_fast.layout import IMAGE_SIZE, N_CHANNELS
from inr_fast.model.spec import FUSED_WIDTHS
from inr_fast.train.config import get_preset
from inr_fast.util import cpu_name

RAW_BYTES = IMAGE_SIZE * IMAGE_SIZE * N_CHANNELS * 4
LEVELS = ("Q1", "Q2")
JET_SETS = (  # (name, simulation seed, pT window in GeV): seeds no test or demo uses
    ("A", 1001, 70.0, 200.0),
    ("B", 2002, 150.0, 300.0),
)


def _source_commit() -> str | None:
    """The git commit of the source tree this package runs from (with "+dirty" when it has uncommitted
    changes), or None outside a git checkout."""
    here = Path(__file__).resolve().parents[2]
    git = ["git", "-C", str(here)]
    opts = {"capture_output": True, "text": True, "timeout": 10, "check": True}
    try:
        rev = subprocess.run([*git, "rev-parse", "--short", "HEAD"], **opts).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], **opts).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "") if rev else None


def machine_info(device: str = "cpu") -> dict:
    """What the numbers were measured on: CPU model and cores, torch, and the GPU if used."""
    info = {
        "host": socket.gethostname(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    commit = _source_commit()
    if commit:
        info["commit"] = commit
    if device == "cuda" and torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda)
    return info


def machine_line(m: dict) -> str:
    return f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}" + (
        f", {m['gpu']}" if "gpu" in m else ""
    )


def sparse_lossless_bytes(image: np.ndarray, value_dtype=np.float32, level: int = 9) -> int:
    """Bytes of a jet stored losslessly as its non-zero pixels: flat uint16 indices into the
    (125, 125, 3) array (46,875 < 2^16) plus their values in ``value_dtype``, deflate-compressed
    (gzip's algorithm, without the 18-byte gzip header). image: (125, 125, 3)."""
    flat = np.asarray(image, dtype=np.float32).reshape(-1)
    idx = np.flatnonzero(flat)
    payload = idx.astype(np.uint16).tobytes() + flat[idx].astype(value_dtype).tobytes()
    return len(zlib.compress(payload, level))


def storage_baselines(images: np.ndarray) -> dict[str, float]:
    """Mean bytes per jet of the storage a user would compare with: images (B, 125, 125, 3)."""
    return {
        "raw_float32": float(RAW_BYTES),
        "sparse_gzip_float32": float(np.mean([sparse_lossless_bytes(im, np.float32) for im in images])),
        "sparse_gzip_float16": float(np.mean([sparse_lossless_bytes(im, np.float16) for im in images])),
    }


def jet_set(seed: int, pt_min: float, pt_max: float, n: int) -> np.ndarray:
    """``n`` simulated jets (n, 125, 125, 3) of one benchmark set (simulation seed and pT window)."""
    return simulate_jets(SimulateConfig(n=n, seed=seed, pt_min=pt_min, pt_max=pt_max))["X_jets"]


@dataclass(frozen=True)
class Method:
    """One way of fitting jets: a trainer preset, a backend and keyword overrides of the preset."""

    name: str
    preset: str
    backend: str
    overrides: dict = field(default_factory=dict)


def default_methods(quick: bool) -> list[Method]:
    """The seed baseline (reference backend, its own schedule) and the presets built to beat it."""
    seed_cap = 200 if quick else 1500  # the seed recipe's own 10,000-step schedule, cut short
    return [
        Method("seed", "seed", "reference", {"max_steps": seed_cap, "schedule_steps": 10_000}),
        Method("fast", "fast", "fused"),
        Method("compact", "compact", "fused" if _fused_width("compact") else "reference"),
    ]


def _fused_width(preset: str) -> bool:
    """Whether the preset's network has a width the fused kernels support."""
    return get_preset(preset).model.width in FUSED_WIDTHS
