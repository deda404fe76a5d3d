"""The Python face of every compiled operator (``torch.ops.inr_fast.*``, kernels in csrc/).

Fake (meta) kernels for ``torch.compile`` / ``torch.library.opcheck``, autograd registrations, and the
user-facing functions. Every function here only calls ``torch.ops.inr_fast.*``; importing this module
loads the extension (a clear error if it is not built).

Positional encoding (same as :func:`inr_fast.model.encoding.positional_encoding`):

- ``positional_encoding(x, n_freqs) -> (N, 2 + 4 n_freqs)`` and its backward.

The fused PE + per-jet MLP (same signature and results as :func:`inr_fast.model.reference.batched_mlp`):

- ``pe_mlp_forward(x, weights, biases, n_freqs) -> y (B, N, 3)``
- ``pe_mlp_backward(grad_out, x, weights, biases, n_freqs, need_grad_x) -> (grad_weights, grad_biases,
  grad_x)``: recomputes the forward tile by tile (no activations are saved); grad_x is (N, 2), or
  (0, 2) when not asked for.
- ``pe_mlp_mse_step(x, weights, biases, target, pixel_weight, n_freqs) -> (loss (B,), grad_weights,
  grad_biases)``: forward, per-jet weighted MSE and all parameter gradients in one pass.

Supported: width W in {16, 32, 64, 128}, depth D in [1, 8], 3 outputs; float32 and float64 on the CPU,
float32 in and out on CUDA (half-precision tensor-core products with float32 accumulation inside).
"""

from __future__ import annotations

import torch

from inr_fast import _ext
from inr_fast.model.encoding import n_features

_ext.load()


# ------------------------------------------------------------------------------ positional encoding


@torch.library.register_fake("inr_fast::positional_encoding")
def _pe_fake(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    torch._check(x.dim() == 2 and x.shape[1] == 2, lambda: "x must have shape (N, 2)")
    return x.new_empty((x.shape[0], n_features(n_freqs)))


@torch.library.register_fake("inr_fast::positional_encoding_backward")
def _pe_backward_fake(grad_out: torch.Tensor, x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    return torch.empty_like(x)


def _pe_setup_context(ctx, inputs, output):
    x, n_freqs = inputs
    ctx.save_for_backward(x)
    ctx.n_freqs = n_freqs


def _pe_backward(ctx, grad_out):
    (x,) = ctx.saved_tensors
    return torch.ops.inr_fast.positional_encoding_backward(grad_out.contiguous(), x, ctx.n_freqs), None


torch.library.register_autograd(
    "inr_fast::positional_encoding", _pe_backward, setup_context=_pe_setup_context
)


def positional_encoding(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """The compiled positional encoding: same as :func:`inr_fast.model.encoding.positional_encoding`.

    x: (N, 2) float32 (CPU or CUDA) or float64 (CPU); returns (N, 2 + 4 * n_freqs).
    """
    return torch.ops.inr_fast.positional_encoding(x, n_freqs)


# ------------------------------------------------------------------------------ fused PE + MLP


def _empty_like_list(ts):
    return [t.new_empty(t.shape) for t in ts]


@torch.library.register_fake("inr_fast::pe_mlp_forward")
def _forward_fake(x, weights, biases, n_freqs):
    torch._check(x.dim() in (2, 3) and x.shape[-1] == 2, lambda: "x must have shape (N, 2) or (B, N, 2)")
    torch._check(len(weights) == len(biases) and len(weights) >= 2, lambda: "need depth + 1 >= 2 layers")
    return x.new_empty((weights[0].shape[0], x.shape[-2], 3))


@torch.library.register_fake("inr_fast::pe_mlp_backward")
def _backward_fake(grad_out, x, weights, biases, n_freqs, need_grad_x):
    gx = x.new_empty((x.shape[-2] if need_grad_x else 0, 2))
    return _empty_like_list(weights), _empty_like_list(biases), gx


@torch.library.register_fake("inr_fast::pe_mlp_mse_step")
def _mse_step_fake(x, weights, biases, target, pixel_weight, n_freqs):
    return x.new_empty((weights[0].shape[0],)), _empty_like_list(weights), _empty_like_list(biases)


def _setup_context(ctx, inputs, output):
    x, weights, biases, n_freqs = inputs
    ctx.n_layers = len(weights)
    ctx.n_freqs = n_freqs
    ctx.save_for_backward(x, *weights, *biases)


def _backward(ctx, grad_out):
    x, *params = ctx.saved_tensors
    weights, biases = params[: ctx.n_layers], params[ctx.n_layers :]
    need_x = bool(ctx.needs_input_grad[0])
    gw, gb, gx = torch.ops.inr_fast.pe_mlp_backward(
        grad_out.contiguous(), x, weights, biases, ctx.n_freqs, need_x
    )
    return (gx if need_x else None), gw, gb, None


torch.library.register_autograd("inr_fast::pe_mlp_forward", _backward, setup_context=_setup_context)


def pe_mlp(
    x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], n_freqs: int
) -> torch.Tensor:
    """y[b] = MLP_b(PE(x)) for coordinates x (N, 2) shared by the B jets, or x[b] for per-jet
    coordinates x (B, N, 2) (not differentiable in x then); returns (B, N, 3).

    Drop-in for :func:`inr_fast.model.reference.batched_mlp`: weights[l] (B, fan_out, fan_in), biases[l]
    (B, fan_out), ReLU hidden layers, linear output. Differentiable in x, weights and biases (the
    backward recomputes the forward per tile instead of saving activations).
    """
    if len(weights) != len(biases) or not weights:
        raise ValueError("weights and biases must be non-empty lists of equal length")
    if x.dtype != weights[0].dtype:
        x = x.to(weights[0].dtype)
    return torch.ops.inr_fast.pe_mlp_forward(x, list(weights), list(biases), n_freqs)


def mse_step(
    x: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    target: torch.Tensor,
    n_freqs: int,
    pixel_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """One fused training step: per-jet loss (B,) and the gradients of ``loss.sum()``.

    loss[b] = sum_{n, c} w[n] (y[b, n, c] - target[b, n, c])^2 / (3 N), with y = pe_mlp(x, ...),
    x (N, 2) shared or (B, N, 2) per jet, target (B, N, 3) and optional pixel weights w of shape (N,) or
    (B, N) (default 1, the plain mean).
    Returns (loss, grad_weights, grad_biases), gradients shaped like the parameters. Not itself
    differentiable: the gradients are outputs.
    """
    if x.dtype != weights[0].dtype:
        x = x.to(weights[0].dtype)
    loss, gw, gb = torch.ops.inr_fast.pe_mlp_mse_step(
        x.detach(),
        [w.detach() for w in weights],
        [b.detach() for b in biases],
        target.detach(),
        None if pixel_weight is None else pixel_weight.detach(),
        n_freqs,
    )
    return loss, list(gw), list(gb)


def cpu_isa() -> str:
    """The vector code path the CPU kernel takes here: "avx512", "avx2" or "generic"."""
    return torch.ops.inr_fast.pe_mlp_cpu_isa()
