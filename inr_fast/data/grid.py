"""Coordinate grids of the 125 x 125 image: the networks' input coordinates in [-1, 1]^2 and the
physical (delta-eta, delta-phi) pixel centres.

Two conventions, one home each: :func:`unit_centres` / :func:`pixel_grid` are what the INRs are
trained and rendered on; :func:`physical_centres` / :func:`physical_grid` place pixels in eta and phi
relative to the image centre (pitch :data:`inr_fast.layout.PITCH`), for physics observables.
"""

from __future__ import annotations

import numpy as np
import torch

from inr_fast.layout import IMAGE_SIZE, PITCH
from inr_fast.util import positive_int


def unit_centres(size: int = IMAGE_SIZE) -> np.ndarray:
    """Pixel centres along one axis in [-1, 1]: ``(i + 0.5) / size * 2 - 1``, (size,) float64."""
    size = positive_int(size, "size")
    return (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0


def physical_centres(size: int = IMAGE_SIZE, pitch: float = PITCH) -> np.ndarray:
    """Pixel centres along one axis relative to the image centre in physical units:
    ``(i + 0.5 - size / 2) * pitch``, (size,) float64 (for 125 pixels the middle one is 0)."""
    size = positive_int(size, "size")
    return (np.arange(size, dtype=np.float64) + 0.5 - size / 2.0) * float(pitch)


def _grid(centres: np.ndarray, dtype: torch.dtype, device) -> torch.Tensor:
    c = torch.from_numpy(centres)
    rows, cols = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1).to(dtype=dtype, device=device)


def pixel_grid(size: int = IMAGE_SIZE, dtype: torch.dtype = torch.float32, device="cpu") -> torch.Tensor:
    """Pixel-centre coordinates in [-1, 1]^2, (size * size, 2).

    Column 0 is the row axis (eta, image axis 0), column 1 the column axis (phi, image axis 1); rows
    are in row-major order, so ``image.reshape(size * size, 3)`` lines up with the grid: entry
    ``i * size + j`` is pixel (i, j) at ``(unit_centres(size)[i], unit_centres(size)[j])``.
    """
    return _grid(unit_centres(size), dtype, device)


def physical_grid(
    size: int = IMAGE_SIZE, pitch: float = PITCH, dtype: torch.dtype = torch.float32, device="cpu"
) -> torch.Tensor:
    """Pixel centres as (delta-eta, delta-phi) relative to the image centre, (size * size, 2), same
    order as :func:`pixel_grid`; equals ``pixel_grid(size) * size / 2 * pitch``."""
    return _grid(physical_centres(size, pitch), dtype, device)
