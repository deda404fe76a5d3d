"""Roofline estimate of the CUDA fused MSE step from the emulator's counters (BENCHMARKS.md,
"Emulated CUDA kernels").

Runs `test_emu_half counters W D L N` (one jet's step, the binding's configuration on an H100/H200)
for each width (and `... wgmma`: the wgmma kernel, at its shape W = 64, D = 3, L = 10), scales to B
jets (every jet does the same work in its own blocks) and prints a
markdown table: useful FLOPs, mma calls, global bytes (32-byte sectors moved between the SMs and the
L2 cache), the DRAM bytes (every sector touched once, as if the L2 cache held the step's working set:
the coordinates shared by the B jets read once), compulsory bytes,
shared-memory wavefronts and warp shuffles (both issue through the SM's shared-memory pipe, one
wavefront or one 32-lane shuffle per clock), barriers, and the time each would take alone on the
device at its peak rate; the largest is the bound, and useful FLOPs / (bound x peak) the estimate.
What it leaves out: latency (one or two warps per scheduler), register spills (ptxas reports them;
they go through the same pipe), and whether mma.sync reaches the dense peak on a Hopper part at all
(the peak is quoted for wgmma).

    python csrc/tests/emu/roofline.py [--bin build-cmake/test_emu_half] [--batch 64] [--depth 3]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

# Dense float16 tensor peak (TFLOP/s), SMs, tensor flops per clock per SM, memory bandwidth (TB/s):
# vendor data sheets (SXM parts); the clock is the one the peak is quoted at (1.83 GHz, 1.41 GHz).
DEVICES = {
    "H200": (989.4, 132, 4096, 4.8),
    "A100": (312.0, 108, 2048, 2.039),
}
MMA_FLOPS = 2 * 16 * 8 * 16  # one mma.m16n8k16
SMEM_BYTES_PER_WAVEFRONT = 128


def params_per_jet(n_freqs: int, width: int, depth: int) -> int:
    dims = [2 + 4 * n_freqs] + [width] * depth + [3]
    return sum(dims[i + 1] * dims[i] + dims[i + 1] for i in range(depth + 1))


def useful_flops_per_coord(n_freqs: int, width: int, depth: int) -> int:
    """Training step: forward + weight gradients + input deltas of layers 1..D (unpadded)."""
    dims = [2 + 4 * n_freqs] + [width] * depth + [3]
    fwd = sum(2 * dims[i] * dims[i + 1] for i in range(depth + 1))
    dx = sum(2 * dims[i] * dims[i + 1] for i in range(1, depth + 1))
    return 2 * fwd + dx


def counters(binary: str, width: int, depth: int, n_freqs: int, n: int, kernel: str = "") -> dict:
    out = subprocess.run(
        [binary, "counters", str(width), str(depth), str(n_freqs), str(n)] + ([kernel] if kernel else []),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", out)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default="build-cmake/test_emu_half")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--n-freqs", type=int, default=10)
    ap.add_argument("--n", type=int, default=15625)
    ap.add_argument("--device", default="H200", choices=sorted(DEVICES))
    args = ap.parse_args(argv)
    peak_tf, sms, flops_per_clk, bw_tb = DEVICES[args.device]
    clock = peak_tf * 1e12 / (sms * flops_per_clk)
    mma_per_clk = flops_per_clk / MMA_FLOPS
    b, n, d, nf = args.batch, args.n, args.depth, args.n_freqs
    print(
        f"{args.device}: {peak_tf} TFLOP/s dense float16 = {sms} SMs x {mma_per_clk:g} mma.m16n8k16/clock x "
        f"{clock / 1e9:.2f} GHz; 1 shared-memory wavefront (128 B)/clock/SM; {bw_tb} TB/s DRAM. "
        f"B = {b}, N = {n}, D = {d}, L = {nf}."
    )
    print(
        "| W | config | useful GFLOP | mma (M) | L2 <-> SM MB | DRAM MB | compulsory MB | ratio L2 / DRAM "
        "| AI flop/DRAM B "
        "| smem wavefronts (M) | shuffles (M) | barriers | t tensor us | t smem us | t DRAM us | bound "
        "| estimate % of peak |"
    )
    print("|" + "---|" * 17)
    rows = [(16, ""), (32, ""), (64, ""), (128, "")]
    if d == 3 and nf in (10, 11) and args.device == "H200":  # the wgmma kernel's shape (Hopper only)
        rows.insert(3, (64, "wgmma"))
    for width, kernel in rows:
        c = counters(args.bin, width, d, nf, n, kernel)
        flops = useful_flops_per_coord(nf, width, d) * n * b
        mma = c["mma"] * b
        moved = (c["read_sectors"] + c["write_sectors"]) * 32 * b
        coords = n * 2 * 4  # shared by the jets: from DRAM once per step
        dram = coords + b * ((c["dram_read_sectors"] + c["dram_write_sectors"]) * 32 - coords)
        p = params_per_jet(nf, width, d)
        compulsory = n * 2 * 4 + b * n * 3 * 4 + 2 * b * p * 4 + b * 4  # x, targets, weights, grads, loss
        wavefronts = c["smem_wavefronts"] * b
        shuffles = c.get("shuffles", 0) * b
        t_tensor = mma / (sms * mma_per_clk * clock)
        t_smem = (wavefronts + shuffles) / (sms * clock)
        t_dram = dram / (bw_tb * 1e12)
        times = {"tensor": t_tensor, "shared memory": t_smem, "memory": t_dram}
        bound = max(times, key=times.get)
        estimate = 100 * flops / (times[bound] * peak_tf * 1e12)
        config = f"{c['warps']} warps{'' if c['smem_weights'] else ', weights global'}"
        if c.get("wgmma_kernel"):
            config = "wgmma, 1 warpgroup"
        cells = [
            f"{width}",
            config,
            f"{flops / 1e9:.1f}",
            f"{mma / 1e6:.1f}",
            f"{moved / 1e6:.1f}",
            f"{dram / 1e6:.1f}",
            f"{compulsory / 1e6:.1f}",
            f"{moved / compulsory:.2f} / {dram / compulsory:.2f}",
            f"{flops / dram:.0f}",
            f"{wavefronts / 1e6:.1f}",
            f"{shuffles / 1e6:.1f}",
            f"{c['barriers'] * b}",
            f"{t_tensor * 1e6:.0f}",
            f"{t_smem * 1e6:.0f}",
            f"{t_dram * 1e6:.0f}",
            bound,
            f"{estimate:.0f}",
        ]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
