// The shared-memory operands of the wgmma kernel (csrc/cuda/mlp_cuda.cu) and of the wgmma probe
// that checks its operand paths on hardware (csrc/cuda/wgmma_probe.cu): one definition, so the probe
// exercises the kernel's own code. Operands are K-major without swizzling (cuda_layout::kmajor):
// an R x K operand as 8 x 8 core matrices, LBO 64 and SBO 8 K elements, k16 step t at element 128 t.
#pragma once

#include "inr_fast/cuda_prims.cuh"
#include "inr_fast/mlp_cuda.h"

namespace inr_fast {
namespace prims {

// Descriptor of k16 step t of a K-major operand with K columns.
__device__ __forceinline__ uint64_t kmajor_desc(const half* m, int K, int t) {
  return wgmma_desc(m + 128 * t, 64, 8 * K);
}

// Stores a warp's 16 rows (r0 ..) of two column blocks j, j + 1 of C-fragment pairs (lo: row g, hi:
// row g + 8) feature-major into `m` (the columns as its rows, the rows as its K of K columns): one
// stmatrix.trans of four 8 x 8 matrices, matrix mt = feature block j + mt / 2, rows r0 + 8 (mt % 2) ..
__device__ __forceinline__ void stsm_features(half* m, int K, int j, int r0, h2 lo0, h2 hi0, h2 lo1, h2 hi1) {
  const int lane = int(threadIdx.x) % 32, mt = lane / 8;
  const h2 r[4] = {lo0, hi0, lo1, hi1};
  stsm_x4_t(m + cuda_layout::kmajor(8 * (j + mt / 2) + lane % 8, r0 + 8 * (mt % 2), K), r);
}
// The same for one column block j (stmatrix.trans x2; lanes 0-15 give the addresses).
__device__ __forceinline__ void stsm_feature(half* m, int K, int j, int r0, h2 lo, h2 hi) {
  const int lane = int(threadIdx.x) % 32, mt = (lane / 8) % 2;
  const h2 r[2] = {lo, hi};
  stsm_x2_t(m + cuda_layout::kmajor(8 * j + lane % 8, r0 + 8 * mt, K), r);
}

}  // namespace prims
}  // namespace inr_fast
