"""Rendering fitted jets: the reference model evaluated in float32 at any resolution, on the original
(GeV) scale, energy conserving.
"""

from __future__ import annotations

import numpy as np
import torch

from inr_fast.data.grid import pixel_grid
from inr_fast.errors import ConfigError
from inr_fast.layout import IMAGE_SIZE, N_CHANNELS
from inr_fast.model.reference import spec_forward
from inr_fast.model.spec import ModelSpec
from inr_fast.model.support import Decoding, decode, upsample

EVAL_CHUNK = 65536  # coordinates per forward pass when rendering
#: largest render side: 10x the native resolution (1250^2 pixels; memory stays below ~100 MB)
MAX_RESOLUTION = 10 * IMAGE_SIZE


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
    support: np.ndarray | None = None,
    decoding: Decoding | None = None,
) -> np.ndarray:
    """One jet (B = 1 stacks) on a P x P grid over the native window [-1, 1]^2: (P, P, 3) float32 GeV.

    The network's output, inverse-normalised, is an energy density per NATIVE pixel area; a pixel of
    the P grid covers (125 / P)^2 native pixels, so its energy is value x (125 / P)^2. That Riemann sum
    equals the native sum only approximately (the samples differ), so with ``conserve`` each channel is
    then rescaled by (native sum / fine sum), making the per-channel sums equal to those of the native
    125 render (to float32 rounding). At P = 125 the native render itself is returned, identical to the
    reconstruction stored by the trainer.

    ``support`` (125, 125, 3) bool and ``decoding``: the jet is decoded through its support
    (:func:`inr_fast.model.support.decode`); at other resolutions the support is upsampled, HCAL
    keeps the native towers' values, and the sums conserved are those of the decoded native render.
    """

    if isinstance(resolution, bool) or not isinstance(resolution, int | np.integer) or resolution < 1:
        raise ConfigError(f"resolution must be a positive integer, got {resolution!r}")
    if resolution > MAX_RESOLUTION:
        raise ConfigError(
            f"resolution {resolution} is above the largest render, {MAX_RESOLUTION} (10x the native "
            f"{IMAGE_SIZE}); render a finer grid in tiles of the window instead"
        )
    dev = torch.device(device)

    def render_at(p: int) -> np.ndarray:
        values = evaluate_params(spec, weights, biases, pixel_grid(p, device=dev))  # (1, p*p, 3)
        values = normaliser.inverse(values) if normaliser is not None else values
        return values[0].to("cpu", torch.float32).numpy().reshape(p, p, N_CHANNELS)

    native = render_at(IMAGE_SIZE)
    if support is not None:
        decoding = decoding or Decoding()
        values = torch.from_numpy(native.reshape(1, -1, N_CHANNELS))
        mask = torch.from_numpy(np.asarray(support, dtype=bool).reshape(1, -1, N_CHANNELS))
        native = decode(values, mask, decoding.tensor_zs(), decoding.towers)[0].numpy().reshape(native.shape)
    if resolution == IMAGE_SIZE:
        return native
    fine = render_at(int(resolution)) * np.float32((IMAGE_SIZE / resolution) ** 2)
    if support is not None:
        if decoding.towers:  # HCAL has no detail below a tower: the native towers, upsampled
            fine[..., 1] = upsample(native[..., 1:2], resolution)[..., 0] * np.float32(
                (IMAGE_SIZE / resolution) ** 2
            )
        fine = np.where(upsample(np.asarray(support, dtype=bool), resolution), fine, np.float32(0))
    if conserve:
        fine = conserve_sums(fine, native.reshape(-1, N_CHANNELS).sum(axis=0, dtype=np.float64))
    return fine
