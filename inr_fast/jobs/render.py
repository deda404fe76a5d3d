"""Reconstructions of a chunk's jets rendered from their stored parameters, batched (the evaluate job
and its physics section)."""

from __future__ import annotations

import numpy as np
import torch

from inr_fast.data.grid import pixel_grid
from inr_fast.data.normalise import PerJetMaxScaler
from inr_fast.layout import IMAGE_SIZE, N_CHANNELS
from inr_fast.model.render import evaluate_params
from inr_fast.model.support import Decoding, decode


def render_batch(result, positions: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """Reconstructions of the jets at ``positions`` of a :class:`inr_fast.train.result.FitResult` (one chunk),
    rendered from their stored parameters on the native grid: (k, 125, 125, 3) float32 GeV.

    Same arithmetic as :func:`inr_fast.model.render.render_jet` at 125 x 125 (reference model, float32, no
    autocast, then the jet's normaliser inverted), batched over the k jets; failed and empty jets are
    zeros.
    """
    positions = np.asarray(positions, dtype=np.int64)
    out = np.zeros((len(positions), IMAGE_SIZE, IMAGE_SIZE, N_CHANNELS), dtype=np.float32)
    skip = np.asarray(result.failed, dtype=bool) | np.asarray(result.empty, dtype=bool)
    ok = positions[~skip[positions]]
    if ok.size == 0:
        return out
    dev = torch.device(device)
    sel = torch.from_numpy(ok)
    weights = [w[sel] for w in result.weights]
    biases = [b[sel] for b in result.biases]
    values = evaluate_params(result.config.model, weights, biases, pixel_grid(IMAGE_SIZE, device=dev))
    if result.norm_scales is not None:
        norm = PerJetMaxScaler(np.asarray(result.norm_scales)[ok], mode="jet")
    else:
        norm = result.normaliser
    if norm is not None:
        values = norm.inverse(values)
    if result.support is not None:
        decoding = result.decoding or Decoding()
        mask = torch.from_numpy(np.asarray(result.support)[ok].reshape(len(ok), -1, N_CHANNELS)).to(dev)
        values = decode(values, mask, decoding.tensor_zs(dev), decoding.towers)
    images = values.to("cpu", torch.float32).numpy().reshape(len(ok), IMAGE_SIZE, IMAGE_SIZE, N_CHANNELS)
    out[np.isin(positions, ok)] = images
    return out
