"""Small CUDA runs of every compiled operator and kernel path, for compute-sanitizer (`make gpu-test`).

Calls ``torch.ops.inr_fast.*`` directly (only ``inr_fast._C`` is imported), with shapes that reach
every path of csrc/cuda/mlp_cuda.cu: partial tiles, one and several chunks, weights staged in shared
memory and read from global memory (W = 128, D = 8), register and overflow gradient fragments,
per-jet coordinates and pixel weights, grad_x. Exits non-zero on a non-finite result.

    compute-sanitizer --tool memcheck  --error-exitcode 1 python csrc/tests/gpu_smoke.py
    compute-sanitizer --tool racecheck --error-exitcode 1 python csrc/tests/gpu_smoke.py --small
    INR_FAST_CUDA_SYNC=1 python csrc/tests/gpu_smoke.py   (synchronising launch checks)
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch

# Run as a file from the repository root: the in-place build inr_fast/_C*.so is two folders up.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _params(batch, n_freqs, width, depth, gen):
    dims = [2 + 4 * n_freqs] + [width] * depth + [3]
    w = [
        (torch.rand(batch, dims[i + 1], dims[i], generator=gen) * 2 - 1) / dims[i] ** 0.5
        for i in range(depth + 1)
    ]
    b = [(torch.rand(batch, dims[i + 1], generator=gen) * 2 - 1) / dims[i] ** 0.5 for i in range(depth + 1)]
    return [t.cuda() for t in w], [t.cuda() for t in b]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="fewer and smaller cases (racecheck is slow)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_smoke: no CUDA device", file=sys.stderr)
        return 2
    mod = importlib.import_module("inr_fast._C")
    if not getattr(mod, "CUDA_BUILT", 0):
        print("gpu_smoke: inr_fast._C was built without CUDA", file=sys.stderr)
        return 2
    ops = torch.ops.inr_fast
    gen = torch.Generator().manual_seed(0)
    bad = 0

    x = (torch.rand(1001, 2, generator=gen) * 2 - 1).cuda()
    pe = ops.positional_encoding(x, 10)
    gx = ops.positional_encoding_backward(torch.ones_like(pe), x, 10)
    torch.cuda.synchronize()
    ok = bool(torch.isfinite(pe).all() and torch.isfinite(gx).all())
    print(f"gpu_smoke: positional_encoding N=1001 L=10 finite={ok}")
    bad += not ok

    cases = [  # (batch, n, width, depth, n_freqs, per-jet x)
        (3, 1000, 64, 3, 10, False),
        (2, 77, 16, 1, 0, False),
        (2, 300, 32, 2, 20, True),
        (1, 200, 128, 8, 10, False),  # weights from global memory, overflow fragments
        (2, 9000, 64, 2, 10, False),  # two chunks per jet
    ]
    if args.small:
        cases = [(2, 150, 64, 3, 10, False), (1, 40, 128, 8, 10, False), (2, 60, 32, 2, 4, True)]
    for batch, n, width, depth, n_freqs, per_jet in cases:
        w, b = _params(batch, n_freqs, width, depth, gen)
        shape = (batch, n, 2) if per_jet else (n, 2)
        xx = (torch.rand(*shape, generator=gen) * 2 - 1).cuda()
        y = ops.pe_mlp_forward(xx, w, b, n_freqs)
        g = torch.rand(batch, n, 3, generator=gen).cuda()
        gw, gb, gxx = ops.pe_mlp_backward(g, xx, w, b, n_freqs, not per_jet)
        pw = torch.rand(batch, n, generator=gen).cuda()
        loss, mw, mb = ops.pe_mlp_mse_step(xx, w, b, g, pw, n_freqs)
        torch.cuda.synchronize()
        outs = [y, loss, *gw, *gb, *mw, *mb] + ([] if per_jet else [gxx])
        ok = all(bool(torch.isfinite(t).all()) for t in outs)
        print(
            f"gpu_smoke: fused B={batch} N={n} W={width} D={depth} L={n_freqs} per_jet={per_jet} "
            f"finite={ok} loss={loss.sum().item():.4g}"
        )
        bad += not ok
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
