"""The pure-PyTorch reference model: positional encoding + ReLU MLP (and SIREN), one network per jet.

This module defines what is correct for the fused kernels (:mod:`inr_fast.ops`) and the trainer. The
parameter layout is :mod:`inr_fast.model.spec`'s: ``weights[l]`` (B, fan_out, fan_in), ``biases[l]``
(B, fan_out).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from inr_fast.errors import ConfigError
from inr_fast.model.encoding import positional_encoding
from inr_fast.model.spec import ModelSpec, bytes_per_jet, layer_shapes, param_count

Params = tuple[list[torch.Tensor], list[torch.Tensor]]


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
    shapes = layer_shapes(n_freqs, width, depth, out_features)
    bounds = [(1.0 / math.sqrt(fan_in),) * 2 for _, fan_in in shapes]
    return _uniform_layers(n_jets, shapes, bounds, generator, dtype, device)


def _uniform_layers(
    n_jets: int,
    shapes: list[tuple[int, int]],
    bounds: list[tuple[float, float]],
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: torch.device | str,
) -> Params:
    """Per layer (fan_out, fan_in) with (weight bound, bias bound): weights U(-w, w) of shape
    (B, fan_out, fan_in) then biases U(-b, b) of shape (B, fan_out), drawn in that order on the CPU."""
    weights, biases = [], []
    for (fan_out, fan_in), (wb, bb) in zip(shapes, bounds, strict=True):
        w = torch.empty(n_jets, fan_out, fan_in, dtype=dtype).uniform_(-wb, wb, generator=generator)
        b = torch.empty(n_jets, fan_out, dtype=dtype).uniform_(-bb, bb, generator=generator)
        weights.append(w.to(device))
        biases.append(b.to(device))
    return weights, biases


def batched_mlp(
    x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], n_freqs: int
) -> torch.Tensor:
    """y[b] = MLP_b(PE(x)) for coordinates x (N, 2) shared by all B jets, or x[b] for per-jet
    coordinates x (B, N, 2); returns (B, N, out).

    Hidden layers use ReLU, the last layer is linear. Plain batched matmuls (torch.baddbmm), so
    autograd, autocast and float64 gradcheck all apply.
    """
    if x.dim() == 3:
        h = positional_encoding(x.reshape(-1, x.shape[-1]), n_freqs)
        return mlp_on_features(h.reshape(x.shape[0], x.shape[1], -1), weights, biases)
    return mlp_on_features(positional_encoding(x, n_freqs), weights, biases)


def mlp_on_features(h: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> torch.Tensor:
    """The MLP part of :func:`batched_mlp`: features h (N, F) shared by the B jets, or (B, N, F) per
    jet -> (B, N, out)."""
    if len(weights) != len(biases) or not weights:
        raise ValueError("weights and biases must be non-empty lists of equal length")
    h = h.to(weights[0].dtype)
    if h.dim() == 2:
        h = h.unsqueeze(0).expand(weights[0].shape[0], -1, -1)  # (B, N, F)
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))  # (B, N, fan_out)
        if i < last:
            h = torch.relu(h)
    return h


def init_spec_params(
    spec: ModelSpec,
    n_jets: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Params:
    """Initial (weights, biases) of ``n_jets`` networks of ``spec`` (pe_relu: nn.Linear default; SIREN:
    the published initialisation). Random numbers are drawn on the CPU, so results do not depend on the
    device."""
    if spec.kind == "siren":
        return siren_init_params(
            n_jets, spec.width, spec.depth, spec.omega0_hidden, spec.out_features, generator, dtype, device
        )
    return init_params(
        n_jets, spec.n_freqs, spec.width, spec.depth, spec.out_features, generator, dtype, device
    )


def spec_forward(
    spec: ModelSpec, x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor]
) -> torch.Tensor:
    """The reference forward of B networks of ``spec`` at coordinates x (N, 2) shared, or (B, N, 2)
    per jet: returns (B, N, out)."""
    if spec.kind == "siren":
        return batched_siren(x, weights, biases, spec.omega0_first, spec.omega0_hidden)
    return batched_mlp(x, weights, biases, spec.n_freqs)


def siren_init_params(
    n_jets: int,
    width: int,
    depth: int,
    omega0_hidden: float = 30.0,
    out_features: int = 3,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    in_features: int = 2,
) -> Params:
    """The published SIREN initialisation for B = ``n_jets`` networks.

    First layer weights ~ U(-1/fan_in, 1/fan_in); every later layer (hidden and the linear output)
    ~ U(-sqrt(6/fan_in)/omega0_hidden, +sqrt(6/fan_in)/omega0_hidden); biases keep nn.Linear's default
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as in the authors' code. Shapes as :func:`init_params`.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    dims = [in_features] + [width] * depth + [out_features]
    shapes = [(dims[i + 1], dims[i]) for i in range(depth + 1)]
    bounds = [
        (1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / omega0_hidden, 1.0 / math.sqrt(fan_in))
        for i, (_, fan_in) in enumerate(shapes)
    ]
    return _uniform_layers(n_jets, shapes, bounds, generator, dtype, device)


def batched_siren(
    x: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    omega0_first: float = 30.0,
    omega0_hidden: float = 30.0,
) -> torch.Tensor:
    """B SIRENs at raw coordinates x (N, 2) (or per jet, (B, N, 2)): h <- sin(omega0 (W h + b)) per
    hidden layer (omega0_first for the first, omega0_hidden after), a linear last layer; returns
    (B, N, out)."""
    if len(weights) != len(biases) or not weights:
        raise ValueError("weights and biases must be non-empty lists of equal length")
    h = x.to(weights[0].dtype)
    if h.dim() == 2:
        h = h.unsqueeze(0).expand(weights[0].shape[0], -1, -1)  # (B, N, 2)
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))  # (B, N, fan_out)
        if i < last:
            h = torch.sin((omega0_first if i == 0 else omega0_hidden) * h)
    return h


class PEMLP(nn.Module):
    """One PE + ReLU MLP as plain nn.Linear layers: forward(x (N, 2)) -> (N, out).

    Built with the default nn.Linear initialisation (drawn from the global RNG, like any nn.Module), or
    from jet ``index`` of stacked (weights, biases) with :meth:`from_params`.
    """

    def __init__(self, n_freqs: int = 10, width: int = 256, depth: int = 4, out_features: int = 3):
        super().__init__()
        self.n_freqs = n_freqs
        self.layers = nn.ModuleList(
            nn.Linear(fi, fo) for fo, fi in layer_shapes(n_freqs, width, depth, out_features)
        )

    @classmethod
    def from_params(
        cls, spec: ModelSpec, weights: list[torch.Tensor], biases: list[torch.Tensor], index: int = 0
    ):
        if spec.kind != "pe_relu":
            raise ConfigError(f"PEMLP needs a pe_relu spec, got {spec.kind!r}")
        model = cls(spec.n_freqs, spec.width, spec.depth, spec.out_features)
        model = model.to(device=weights[0].device, dtype=weights[0].dtype)
        model.load_params(weights, biases, index)
        return model

    def load_params(self, weights: list[torch.Tensor], biases: list[torch.Tensor], index: int = 0) -> None:
        """Copy jet ``index`` of stacked weights[l] (B, fan_out, fan_in), biases[l] (B, fan_out)."""
        with torch.no_grad():
            for layer, w, b in zip(self.layers, weights, biases, strict=True):
                layer.weight.copy_(w[index])
                layer.bias.copy_(b[index])

    def params(self) -> Params:
        """This network's parameters as stacked lists with B = 1 (detached copies)."""
        return (
            [layer.weight.detach().clone().unsqueeze(0) for layer in self.layers],
            [layer.bias.detach().clone().unsqueeze(0) for layer in self.layers],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = positional_encoding(x, self.n_freqs).to(self.layers[0].weight.dtype)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h


class Siren(nn.Module):
    """One SIREN with the published initialisation: forward(x (N, 2)) -> (N, out)."""

    def __init__(
        self,
        width: int = 256,
        depth: int = 4,
        out_features: int = 3,
        omega0_first: float = 30.0,
        omega0_hidden: float = 30.0,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.omega0_first, self.omega0_hidden = float(omega0_first), float(omega0_hidden)
        weights, biases = siren_init_params(1, width, depth, omega0_hidden, out_features, generator)
        self.layers = nn.ModuleList()
        for w, b in zip(weights, biases, strict=True):
            layer = nn.Linear(w.shape[2], w.shape[1])
            with torch.no_grad():
                layer.weight.copy_(w[0])
                layer.bias.copy_(b[0])
            self.layers.append(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(self.layers[0].weight.dtype)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.sin((self.omega0_first if i == 0 else self.omega0_hidden) * h)
        return h


class BatchedINR(nn.Module):
    """B independent networks of ``spec`` with stacked parameters: forward(x (N, 2)) -> (B, N, out).

    ``forward_fn(x, weights, biases) -> (B, N, out)`` is the backend (default: the reference
    :func:`spec_forward`; the fused kernels pass ``inr_fast.ops.pe_mlp`` with n_freqs bound).
    """

    def __init__(
        self,
        spec: ModelSpec,
        weights: list[torch.Tensor],
        biases: list[torch.Tensor],
        forward_fn: Callable[..., torch.Tensor] | None = None,
    ):
        super().__init__()
        self.spec = spec
        self.weights = nn.ParameterList(nn.Parameter(w) for w in weights)
        self.biases = nn.ParameterList(nn.Parameter(b) for b in biases)
        self._forward_fn = forward_fn

    @classmethod
    def initialised(
        cls, spec: ModelSpec, n_jets: int, generator: torch.Generator | None = None
    ) -> BatchedINR:
        return cls(spec, *init_spec_params(spec, n_jets, generator))

    @property
    def n_jets(self) -> int:
        return self.weights[0].shape[0]

    def param_count(self) -> int:
        """Parameters per jet."""
        return param_count(self.spec)

    def bytes_per_jet(self, dtype: torch.dtype = torch.float32) -> int:
        return bytes_per_jet(self.spec, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, biases = list(self.weights), list(self.biases)
        if self._forward_fn is not None:
            return self._forward_fn(x, weights, biases)
        return spec_forward(self.spec, x, weights, biases)
