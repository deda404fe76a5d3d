"""Roofline estimate of the wgmma (sm_90a) MSE-step kernel as planned before it was written
(csrc/README.md, "The wgmma kernel"; the kernel's own emulated counters are roofline.py's wgmma
row), from the per-operation costs the emulator counts for wgmma and stmatrix (checked by
csrc/tests/emu/test_emu_wgmma.cpp on the wgmma probe: a wgmma reads its B operand once per warpgroup,
N / 4 wavefronts per k16 step, an A operand from shared memory 4 wavefronts per warp and step; an
8 x 8 stmatrix is one wavefront; tensor work counts m16n8k16 equivalents, N / 8 per warp and step).
Nothing here is measured: it is the arithmetic of the plan, to compare with roofline.py's table of
the kernel that exists.

The plan, per warpgroup and tile of 64 coordinates (each warp 16): the encoding computed in
registers as layer 0's A fragments; every layer's product by wgmma with A from registers (the
previous accumulators converted in place) and B the weights, K-major in shared memory (backward:
a second, transposed copy); the activations a_l (with 8 extra rows, a row of ones and seven of
zeros, so that the bias gradient comes out of the weight-gradient product) and the deltas stored
feature-major by stmatrix.trans; the weight gradients of every layer by wgmma from shared memory
(dW_l = delta_{l+1}^T [a_l; 1], the output layer's transposed, a_D^T delta_out) accumulated in
registers over F tiles, then added to float32 totals in shared memory (the warpgroups of a block in
turn) and restarted (scale-d = 0), which keeps the summation two-level like the mma.sync kernel's.

    python csrc/tests/emu/roofline_wgmma.py [--width 64] [--flush 8] [--device H200]
"""

from __future__ import annotations

import argparse
import sys

from roofline import DEVICES, MMA_FLOPS, params_per_jet, useful_flops_per_coord


def plan_counts(width: int, depth: int, n_freqs: int, flush_tiles: int) -> dict:
    """Per tile of 64 coordinates (one warpgroup): tensor work in m16n8k16 units and shared-memory
    wavefronts by kind."""
    k0 = (2 + 4 * n_freqs + 15) // 16 * 16  # layer 0's K, padded to k16
    m_blocks = width // 64  # wgmma M is 64: dW rows in blocks of 64 (the features of delta)
    assert width % 64 == 0, "the plan is for W = 64 (and multiples)"
    mma = 0
    wf = {"weights (B)": 0, "stmatrix": 0, "dW operands": 0, "flush": 0, "targets, loss": 0}

    def wgmma(n: int, k: int, a_smem: bool, m_rep: int = 1) -> None:
        nonlocal mma
        steps = k // 16
        mma += m_rep * steps * 4 * n // 8  # 4 warps, N / 8 each per step
        key = "dW operands" if a_smem else "weights (B)"
        wf[key] += m_rep * steps * (n // 4 + (16 if a_smem else 0))

    # Forward: layer 0 (K = k0), hidden layers (W x W), output (N = 8).
    wgmma(width, k0, False)
    for _ in range(depth - 1):
        wgmma(width, width, False)
    wgmma(8, width, False)
    # Backward deltas: output -> delta_D (K = 16, 8 padded), then D - 1 hidden products.
    wgmma(width, 16, False)
    for _ in range(depth - 1):
        wgmma(width, width, False)
    # Stores, feature-major: a_0 (k0 features), a_1..a_D and delta_1..delta_D (W each), delta_out (8).
    wf["stmatrix"] = (k0 // 8 + 2 * depth * width // 8 + 1) * 8
    # Weight gradients over the tile's 64 coordinates (K = 64): layer 0 and the hidden layers with the
    # ones rows (N + 8), A = delta (M = W, in blocks of 64), B = activations; the output layer transposed.
    wgmma(k0 + 8, 64, True, m_blocks)
    for _ in range(depth - 1):
        wgmma(width + 8, 64, True, m_blocks)
    wgmma(8, 64, True, m_blocks)
    # Flush: every F tiles each thread reads and writes its accumulators (float32) once.
    acc_floats = width * (k0 + 8) + (depth - 1) * width * (width + 8) + width * 8
    wf["flush"] = 2 * acc_floats * 4 / 128 / flush_tiles
    # Targets and pixel weights are read from global memory straight into registers; the loss's
    # warpgroup sum: a few shuffles per warp.
    wf["targets, loss"] = 4 * 5
    return {"mma": mma, "wavefronts": wf, "acc_regs": acc_floats / 128}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--n-freqs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--n", type=int, default=15625)
    ap.add_argument("--flush", type=int, default=8, help="tiles between flushes of the weight gradients")
    ap.add_argument("--chunk", type=int, default=8192, help="coordinates per chunk (one gradient partial)")
    ap.add_argument("--device", default="H200", choices=["H200"], help="wgmma: Hopper only")
    args = ap.parse_args(argv)
    peak_tf, sms, flops_per_clk, bw_tb = DEVICES[args.device]
    clock = peak_tf * 1e12 / (sms * flops_per_clk)
    mma_per_clk = flops_per_clk / MMA_FLOPS
    w, d, nf, b, n = args.width, args.depth, args.n_freqs, args.batch, args.n
    c = plan_counts(w, d, nf, args.flush)
    tiles = b * -(-n // 64)
    flops = useful_flops_per_coord(nf, w, d) * n * b
    mma = c["mma"] * tiles
    wf_total = sum(c["wavefronts"].values()) * tiles
    p = params_per_jet(nf, w, d)
    chunks = -(-n // args.chunk)
    compulsory = n * 2 * 4 + b * n * 3 * 4 + 2 * b * p * 4 + b * 4
    # DRAM: coordinates once, targets, weights in, the chunk partials written (the reduction reads
    # them from L2) and the gradients out.
    dram = n * 2 * 4 + b * n * 3 * 4 + b * p * 4 + b * chunks * p * 4 + b * p * 4
    t_tensor = mma / (sms * mma_per_clk * clock)
    t_smem = wf_total / (sms * clock)
    t_dram = dram / (bw_tb * 1e12)
    times = {"tensor": t_tensor, "shared memory": t_smem, "memory": t_dram}
    bound = max(times, key=times.get)
    per_coord = {k: v * tiles / (b * n) for k, v in c["wavefronts"].items()}
    print(
        f"{args.device}, W = {w}, D = {d}, L = {nf}, B = {b}, N = {n}, flush every {args.flush} tiles; "
        f"weight-gradient accumulators {c['acc_regs']:.0f} registers per thread"
    )
    kinds = ", ".join(f"{k} {v:.1f}" for k, v in per_coord.items())
    print(f"shared-memory wavefronts per coordinate: {kinds}")
    print(f"  total {sum(per_coord.values()):.1f} (the mma.sync kernel: roofline.py's table)")
    print(
        f"useful {flops / 1e9:.1f} GFLOP, tensor work {mma * MMA_FLOPS / 1e9:.1f} GFLOP "
        f"({flops / (mma * MMA_FLOPS):.0%} useful); DRAM {dram / 1e6:.1f} MB = "
        f"{dram / compulsory:.2f}x compulsory"
    )
    print(
        f"t tensor {t_tensor * 1e6:.0f} us, t smem {t_smem * 1e6:.0f} us, t DRAM {t_dram * 1e6:.0f} us: "
        f"bound {bound}, estimate {100 * flops / (times[bound] * peak_tf * 1e12):.0f} % of dense float16 peak"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
