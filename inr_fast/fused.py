"""The fused backend: positional encoding + per-jet MLP in one compiled operator (CPU C++ / CUDA half).

Same signature and results as :func:`inr_fast.reference.batched_mlp`. Every function here only calls
``torch.ops.inr_fast.*`` (registered by the extension, csrc/torch/library.cpp), so ``torch.compile``
and ``torch.library.opcheck`` see real operators:

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

_ext.load()


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

    Drop-in for :func:`inr_fast.reference.batched_mlp`: weights[l] (B, fan_out, fan_in), biases[l]
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


def gpu_smoke() -> None:
    """Small CUDA run of the fused operators, for `compute-sanitizer` (called by inr_fast.gpu_smoke)."""
    from inr_fast.reference import init_params

    gen = torch.Generator().manual_seed(0)
    for width, depth, n in ((64, 3, 1000), (128, 2, 77), (16, 1, 5)):
        w, b = init_params(3, 10, width, depth, generator=gen, device="cuda")
        for t in (*w, *b):
            t.requires_grad_(True)
        x = (torch.rand(n, 2, generator=gen) * 2 - 1).cuda().requires_grad_(True)
        y = pe_mlp(x, w, b, 10)
        y.square().sum().backward()
        target = torch.rand(3, n, 3, generator=gen).cuda()
        loss, gw, gb = mse_step(x, w, b, target, 10, pixel_weight=torch.rand(n, generator=gen).cuda())
        torch.cuda.synchronize()
        ok = all(bool(torch.isfinite(t).all()) for t in (y, loss, x.grad, *gw, *gb))
        print(f"gpu_smoke: fused W={width} D={depth} N={n} finite={ok} loss={loss.sum().item():.4g}")
        if not ok:
            raise SystemExit("gpu_smoke: non-finite fused results")
