"""The pure-PyTorch reference model: positional encoding + ReLU MLP, one network per jet.

This module defines what is correct for the fused kernels (``inr_fast.fused``) and the trainer.

Parameter layout shared by every backend, for B jets, depth D (hidden layers) and width W:
``weights[l]`` has shape (B, fan_out_l, fan_in_l) and ``biases[l]`` shape (B, fan_out_l), for the
D + 1 linear layers (F -> W, D - 1 times W -> W, W -> 3), F = 2 + 4 L encoded features.
"""

from __future__ import annotations

import math

import torch

from inr_fast.encoding import n_features, positional_encoding

Params = tuple[list[torch.Tensor], list[torch.Tensor]]


def layer_shapes(n_freqs: int, width: int, depth: int, out_features: int = 3) -> list[tuple[int, int]]:
    """(fan_out, fan_in) of each of the ``depth + 1`` linear layers."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    dims = [n_features(n_freqs)] + [width] * depth + [out_features]
    return [(dims[i + 1], dims[i]) for i in range(depth + 1)]


def init_params(
    n_jets: int,
    n_freqs: int,
    width: int,
    depth: int,
    out_features: int = 3,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Params:
    """PyTorch's nn.Linear default initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), per jet.

    Returns (weights, biases) with weights[l] (B, fan_out, fan_in) and biases[l] (B, fan_out).
    """
    weights, biases = [], []
    for fan_out, fan_in in layer_shapes(n_freqs, width, depth, out_features):
        bound = 1.0 / math.sqrt(fan_in)
        w = torch.empty(n_jets, fan_out, fan_in, dtype=dtype).uniform_(-bound, bound, generator=generator)
        b = torch.empty(n_jets, fan_out, dtype=dtype).uniform_(-bound, bound, generator=generator)
        weights.append(w.to(device))
        biases.append(b.to(device))
    return weights, biases


def batched_mlp(
    x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], n_freqs: int
) -> torch.Tensor:
    """y[b] = MLP_b(PE(x)) for coordinates x (N, 2) shared by all B jets; returns (B, N, out).

    Hidden layers use ReLU, the last layer is linear. Plain batched matmuls (torch.baddbmm), so
    autograd, autocast and float64 gradcheck all apply.
    """
    if len(weights) != len(biases) or not weights:
        raise ValueError("weights and biases must be non-empty lists of equal length")
    h = positional_encoding(x, n_freqs).to(weights[0].dtype)  # (N, F)
    h = h.unsqueeze(0).expand(weights[0].shape[0], -1, -1)  # (B, N, F)
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))  # (B, N, fan_out)
        if i < last:
            h = torch.relu(h)
    return h
