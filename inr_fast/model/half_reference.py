"""A pure-PyTorch model of the CUDA kernel's half-precision numerics (csrc/README.md, "CUDA numerics").

The CUDA fused PE + MLP kernel stores its operands in float16 and accumulates in float32. This module
computes the same network with the same roundings at the same points, so that the CUDA kernel can be
judged against it tightly (``make gpu-test``) and so that training with those numerics can be tried
on the CPU (``benchmarks/half_numerics.py``). Rounding points, forward:

- weights ``W_l``: float16 from their float32 values (overflow to inf and float16 subnormals
  included: :func:`store_half`);
- positional-encoding features ``a_0 = PE(x)``: float32, then float16 (:func:`store_half`);
- pre-activations ``z_{l+1} = W_l a_l + b_l``: exact float16 x float16 products accumulated in the
  compute dtype, bias added unrounded;
- activations ``a_{l+1} = relu(z_{l+1})``: float16 significand with an unbounded exponent
  (:func:`round_half`; the kernel multiplies each tile by a power of two before converting, so the
  float16 range never binds); the output ``y = z_{D+1}`` is not rounded.

Backward (given ``d_{D+1} = dL/dy``, unrounded), for l = D .. 0:

- ``grad b_l = sum_n d_{l+1}`` from the unrounded deltas;
- ``dh = round_half(d_{l+1})`` (power-of-two scaled in the kernel, as the activations);
- ``grad W_l = sum_n dh a_l^T`` with the rounded activations;
- ``d_l = (W_l^T dh) * [a_l > 0]`` for l >= 1; for l = 0 and a gradient in x, the unrounded
  ``d_0 = W_0^T dh`` goes through the exact derivative of the encoding.

Everything is computed in the dtype of the parameters (float32: as the kernel's float32
accumulation, up to summation order; float64: the same roundings, exact arithmetic otherwise).
``rounding=False`` turns every rounding off, which gives the plain reference
(:func:`inr_fast.model.reference.batched_mlp`) with a hand-written backward.
"""

from __future__ import annotations

import math

import torch

from inr_fast.model.encoding import positional_encoding

# Significand bits dropped when rounding to float16's 11-bit significand.
_DROP = {torch.float32: (13, torch.int32), torch.float64: (42, torch.int64)}


def round_half(t: torch.Tensor) -> torch.Tensor:
    """Round to float16's 11 significant bits (round to nearest even) with an unbounded exponent.

    Equal to ``t.half().to(t.dtype)`` wherever the result is a normal float16; values beyond 65,504
    stay finite and values below 2^-14 keep 11 significant bits (the kernel's per-tile power-of-two
    scaling). float32 or float64; inf and NaN pass through."""
    if t.dtype not in _DROP:
        raise TypeError(f"round_half: float32 or float64 expected, got {t.dtype}")
    drop, itype = _DROP[t.dtype]
    t = t.contiguous()
    bits = t.view(itype)
    r = bits >> drop  # in place from here: this runs on every activation of a training step
    r &= 1
    r += (1 << (drop - 1)) - 1
    r += bits
    r &= ~((1 << drop) - 1)
    out = r.view(t.dtype)
    bad = ~torch.isfinite(t)
    return out.masked_scatter_(bad, t[bad]) if bool(bad.any()) else out


def store_half(t: torch.Tensor) -> torch.Tensor:
    """True float16 storage of a float32 value, as the kernel converts its float32 inputs (range
    included: |t| > 65,504 -> inf, subnormals below 2^-14); float64 input goes through float32."""
    return t.float().half().to(t.dtype)


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def _forward(x, weights, biases, n_freqs, rounding):
    """Forward pass: y (B, N, 3), the (rounded) layer inputs a_l and the (rounded) weights."""
    rnd, store = (round_half, store_half) if rounding else (_identity, _identity)
    dtype = weights[0].dtype
    batch = weights[0].shape[0]
    if x.dim() == 3:
        pe = positional_encoding(x.reshape(-1, 2), n_freqs).reshape(x.shape[0], x.shape[1], -1)
    else:
        pe = positional_encoding(x, n_freqs)
    acts = [store(pe.to(dtype))]  # (N, F) shared or (B, N, F)
    wh = [store(w) for w in weights]
    h = acts[0] if acts[0].dim() == 3 else acts[0].unsqueeze(0).expand(batch, -1, -1)
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(wh, biases, strict=True)):
        z = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        if i < last:
            h = rnd(torch.relu(z))
            acts.append(h)
    return z, acts, wh


def _backward(grad_y, x, acts, wh, n_freqs, rounding, need_x):
    """Gradients of the weights, biases and (shared coordinates only) x, given dL/dy (B, N, 3)."""
    rnd = round_half if rounding else _identity
    n_layers = len(wh)
    gw, gb = [None] * n_layers, [None] * n_layers
    d = grad_y
    grad_x = None
    for layer in range(n_layers - 1, -1, -1):
        gb[layer] = d.sum(dim=1)
        dh = rnd(d)
        a = acts[layer]
        gw[layer] = dh.transpose(1, 2) @ a  # (B, fo, N) @ (N, fi) or (B, N, fi) -> (B, fo, fi)
        if layer > 0:
            d = (dh @ wh[layer]) * (a > 0)
        elif need_x:
            grad_x = _pe_backward(dh @ wh[0], x, n_freqs)
    return gw, gb, grad_x


def _pe_backward(d0: torch.Tensor, x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """sum over jets of d0 (B, N, F) through d PE / d x, x (N, 2): returns (N, 2) in x's dtype."""
    g = d0.sum(dim=0).to(torch.float64)  # (N, F)
    xd = x.detach().to(torch.float64)
    out = g[:, :2].clone()
    for k in range(n_freqs):
        arg = (math.pi * 2.0**k) * xd
        w = math.pi * 2.0**k
        sin_cols, cos_cols = g[:, 2 + 4 * k : 4 + 4 * k], g[:, 4 + 4 * k : 6 + 4 * k]
        out += w * (sin_cols * torch.cos(arg) - cos_cols * torch.sin(arg))
    return out.to(x.dtype)


class _HalfPeMlp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, n_freqs, rounding, n_layers, *params):
        weights, biases = list(params[:n_layers]), list(params[n_layers:])
        y, acts, wh = _forward(x.detach(), weights, biases, n_freqs, rounding)
        ctx.n_freqs, ctx.rounding, ctx.n_layers = n_freqs, rounding, n_layers
        ctx.acts, ctx.wh = acts, wh
        ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        (x,) = ctx.saved_tensors
        need_x = bool(ctx.needs_input_grad[0])
        if need_x and x.dim() == 3:
            raise RuntimeError("half_reference: no gradient in per-jet coordinates (B, N, 2), as the kernel")
        gw, gb, gx = _backward(grad_y.contiguous(), x, ctx.acts, ctx.wh, ctx.n_freqs, ctx.rounding, need_x)
        return (gx, None, None, None, *gw, *gb)


def pe_mlp(
    x: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    n_freqs: int,
    rounding: bool = True,
) -> torch.Tensor:
    """y[b] = MLP_b(PE(x)) with the CUDA kernel's float16 roundings; x (N, 2) shared or (B, N, 2) per
    jet, weights[l] (B, fan_out, fan_in), biases[l] (B, fan_out); returns (B, N, 3).

    Same signature as :func:`inr_fast.ops.pe_mlp` (usable as a trainer ``forward_fn``);
    differentiable in the weights, biases and shared x, with the kernel's backward roundings."""
    if len(weights) != len(biases) or not weights:
        raise ValueError("weights and biases must be non-empty lists of equal length")
    if x.dtype != weights[0].dtype:
        x = x.to(weights[0].dtype)
    return _HalfPeMlp.apply(x, n_freqs, rounding, len(weights), *weights, *biases)


def mse_step(
    x: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    target: torch.Tensor,
    n_freqs: int,
    pixel_weight: torch.Tensor | None = None,
    rounding: bool = True,
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """The fused MSE step with the kernel's roundings: (loss (B,), grad_weights, grad_biases).

    loss[b] = sum_{n,c} w[n] (y - target)^2 / (3 N), the output delta 2 w (y - target) / (3 N) formed
    unrounded, as :func:`inr_fast.ops.mse_step`."""
    with torch.no_grad():
        if x.dtype != weights[0].dtype:
            x = x.to(weights[0].dtype)
        y, acts, wh = _forward(x, list(weights), list(biases), n_freqs, rounding)
        n = y.shape[1]
        w = torch.ones(1, n, 1, dtype=y.dtype, device=y.device)
        if pixel_weight is not None:
            w = (pixel_weight if pixel_weight.dim() == 2 else pixel_weight.unsqueeze(0)).unsqueeze(-1)
            w = w.to(y.dtype)
        r = y - target.to(y.dtype)
        loss = (w * r * r).sum(dim=(1, 2)) / (3 * n)
        d = 2 * w * r / (3 * n)
        gw, gb, _ = _backward(d, x, acts, wh, n_freqs, rounding, False)
    return loss, gw, gb
