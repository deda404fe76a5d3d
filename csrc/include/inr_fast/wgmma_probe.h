// The wgmma probe (csrc/cuda/wgmma_probe.cu): one warpgroup computing two small products with the
// operand layouts, conversions and synchronisation a wgmma (sm_90a) MLP kernel needs, so that the
// emulator's reading of wgmma and stmatrix (csrc/tests/emu) is checked on the first H100/H200 it
// meets (tests/test_wgmma_probe.py, `make gpu-test`) before a kernel is built on it:
//   Y = half(X W1^T) W2^T   X (64 x 64) in registers as A fragments, W1 (64 x 64) and W2 (n x 64)
//                           staged K-major in shared memory, the first product's float32
//                           accumulators rounded to float16 and used as the second's A fragments;
//   G = P^T Q               P (64 x 64) and Q (64 x n) held in accumulator fragments (as a kernel
//                           holds activations and deltas), stored feature-major by stmatrix.trans,
//                           fenced for the async proxy, both operands read by wgmma from shared memory.
// Row-major float16 inputs, float32 outputs Y and G (64 x n); n in {8, 56, 64, 72}. Torch- and
// CUDA-free header.
#pragma once

#include <cstdint>

namespace inr_fast {
namespace cuda {

constexpr int kProbeRows = 64;  // rows of X and P, columns of W1 and W2, features of P
bool wgmma_probe_width_ok(int n);
// Launches the probe on `stream`; returns 0 or a cudaError_t. *status (device memory) is set to 0
// by a build with sm_90a code, 1 by one without (the wgmma path compiled out).
int wgmma_probe(const void* x, const void* w1, const void* w2, const void* p, const void* q, int n, float* y,
                float* g, int* status, void* stream);

}  // namespace cuda
}  // namespace inr_fast
