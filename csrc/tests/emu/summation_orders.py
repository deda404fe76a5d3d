"""Float32 summation orders for one chunk's weight gradient (8,192 coordinates, W = 64, float16
operands), against float64: the accuracy side of the wgmma plan (csrc/README.md, "The wgmma kernel,
planned"). The emulator's order inside a product (one coordinate after another onto the
accumulator) is used throughout; the logic build's limit is 1e-6 (norm-relative).

    python csrc/tests/emu/summation_orders.py
"""

from __future__ import annotations

import numpy as np

N, W = 8192, 64


def main() -> None:
    rng = np.random.default_rng(1)
    a = np.maximum(rng.standard_normal((N, W)), 0).astype(np.float16).astype(np.float32)  # ReLU activations
    d = (rng.standard_normal((N, W)) * rng.uniform(0.2, 1, (N, 1))).astype(np.float16).astype(np.float32)
    ref = d.astype(np.float64).T @ a.astype(np.float64)

    def run(tile: int, flush: int) -> np.ndarray:
        """Products of `tile` coordinates onto an accumulator, added to a total every `flush` tiles."""
        total = np.zeros((W, W), np.float32)
        acc = np.zeros((W, W), np.float32)
        for t0 in range(0, N, tile):
            for k in range(t0, t0 + tile):
                acc += np.outer(d[k], a[k])
            if (t0 // tile + 1) % flush == 0:
                total += acc
                acc[:] = 0
        return total + acc

    def rel(x: np.ndarray) -> str:
        e = x.astype(np.float64) - ref
        norm = np.linalg.norm(e) / np.linalg.norm(ref)
        return f"norm {norm:.2e}, max {np.abs(e).max() / np.abs(ref).max():.2e}"

    print("tiles of 32 summed from zero, added to the total (the mma.sync kernel):", rel(run(32, 1)))
    print("one accumulator for the whole chunk:", rel(run(64, 10**9)))
    for f in (4, 8, 16, 32):
        print(f"tiles of 64 onto an accumulator added to the total every {f} tiles:", rel(run(64, f)))


if __name__ == "__main__":
    main()
