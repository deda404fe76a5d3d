"""A small CUDA run of every compiled operator, for `compute-sanitizer` in `make gpu-test`."""

from __future__ import annotations

import torch


def main() -> None:
    from inr_fast import ops

    if not torch.cuda.is_available():
        raise SystemExit("inr_fast.gpu_smoke: no CUDA device")
    x = (torch.rand(1001, 2, device="cuda") * 2 - 1).requires_grad_(True)
    y = ops.positional_encoding(x, 10)
    y.square().sum().backward()
    torch.cuda.synchronize()
    print(f"gpu_smoke: positional_encoding ok, |grad| = {x.grad.norm().item():.4g}")
    try:
        from inr_fast import fused
    except ImportError:
        return
    smoke = getattr(fused, "gpu_smoke", None)
    if smoke is not None:
        smoke()


if __name__ == "__main__":
    main()
