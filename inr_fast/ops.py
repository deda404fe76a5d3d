"""Python face of the compiled operators: fake (meta) kernels and autograd for ``torch.ops.inr_fast``.

Every function here only calls ``torch.ops.inr_fast.*``; the kernels live in csrc/. Importing this
module loads the extension (clear error if it is not built).
"""

from __future__ import annotations

import torch

from inr_fast import _ext
from inr_fast.encoding import n_features

_ext.load()


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
    """The compiled positional encoding: same as :func:`inr_fast.encoding.positional_encoding`.

    x: (N, 2) float32 (CPU or CUDA) or float64 (CPU); returns (N, 2 + 4 * n_freqs).
    """
    return torch.ops.inr_fast.positional_encoding(x, n_freqs)
