"""A small CUDA run of every compiled operator, for `compute-sanitizer` in `make gpu-test`."""

from __future__ import annotations

import torch

from inr_fast import ops
from inr_fast.model.reference import init_params


def fused_smoke() -> None:
    """Small CUDA runs of the fused PE + MLP operators (forward, backward, mse_step)."""
    gen = torch.Generator().manual_seed(0)
    for width, depth, n in ((64, 3, 1000), (128, 2, 77), (16, 1, 5)):
        w, b = init_params(3, 10, width, depth, generator=gen, device="cuda")
        for t in (*w, *b):
            t.requires_grad_(True)
        x = (torch.rand(n, 2, generator=gen) * 2 - 1).cuda().requires_grad_(True)
        y = ops.pe_mlp(x, w, b, 10)
        y.square().sum().backward()
        target = torch.rand(3, n, 3, generator=gen).cuda()
        loss, gw, gb = ops.mse_step(x, w, b, target, 10, pixel_weight=torch.rand(n, generator=gen).cuda())
        torch.cuda.synchronize()
        ok = all(bool(torch.isfinite(t).all()) for t in (y, loss, x.grad, *gw, *gb))
        print(f"gpu_smoke: fused W={width} D={depth} N={n} finite={ok} loss={loss.sum().item():.4g}")
        if not ok:
            raise SystemExit("gpu_smoke: non-finite fused results")


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("inr_fast.gpu_smoke: no CUDA device")
    x = (torch.rand(1001, 2, device="cuda") * 2 - 1).requires_grad_(True)
    y = ops.positional_encoding(x, 10)
    y.square().sum().backward()
    torch.cuda.synchronize()
    print(f"gpu_smoke: positional_encoding ok, |grad| = {x.grad.norm().item():.4g}")
    fused_smoke()


if __name__ == "__main__":
    main()
