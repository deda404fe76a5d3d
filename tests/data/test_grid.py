"""Coordinate grids: unit and physical pixel centres, order matching a reshape."""

from __future__ import annotations

import numpy as np
import torch

from inr_fast.data.grid import physical_grid, pixel_grid, unit_centres
from inr_fast.layout import PITCH

# ----------------------------------------------------------------------------------------- grids


def test_pixel_grid_values():
    np.testing.assert_allclose(unit_centres(4), [-0.75, -0.25, 0.25, 0.75], rtol=0, atol=1e-15)
    g = pixel_grid(125, dtype=torch.float64)
    assert g.shape == (125 * 125, 2)
    first, last = 1 / 125 - 1, 1 - 1 / 125
    torch.testing.assert_close(g[0], torch.tensor([first, first], dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(g[-1], torch.tensor([last, last], dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(
        g[1], torch.tensor([first, first + 2 / 125], dtype=torch.float64)
    )  # phi moves first
    torch.testing.assert_close(g[125], torch.tensor([first + 2 / 125, first], dtype=torch.float64))
    assert pixel_grid(3).dtype == torch.float32


def test_grid_order_matches_reshape():
    size = 5
    image = np.zeros((size, size, 3))
    image[..., 0] = np.arange(size)[:, None]  # row index
    image[..., 1] = np.arange(size)[None, :]  # column index
    flat = image.reshape(size * size, 3)
    g = pixel_grid(size, dtype=torch.float64).numpy()
    c = unit_centres(size)
    np.testing.assert_array_equal(g[:, 0], c[flat[:, 0].astype(int)])
    np.testing.assert_array_equal(g[:, 1], c[flat[:, 1].astype(int)])


def test_physical_grid_values():
    g = physical_grid(dtype=torch.float64).numpy()
    np.testing.assert_allclose(g[62 * 125 + 62], [0.0, 0.0], atol=1e-15)  # the centre pixel
    np.testing.assert_allclose(g[0], [-62 * PITCH, -62 * PITCH], rtol=1e-14)
    np.testing.assert_allclose(g[-1], [62 * PITCH, 62 * PITCH], rtol=1e-14)
    np.testing.assert_allclose(g[1] - g[0], [0.0, PITCH], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g[125] - g[0], [PITCH, 0.0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        g, pixel_grid(dtype=torch.float64).numpy() * 125 / 2 * PITCH, rtol=1e-12, atol=1e-15
    )
    np.testing.assert_allclose(
        physical_grid(4, pitch=1.0, dtype=torch.float64)[:4, 1], [-1.5, -0.5, 0.5, 1.5]
    )
