// The wgmma probe (inr_fast/wgmma_probe.h): the operand paths of the wgmma MLP kernel, in one
// warpgroup, through the kernel's own operand helpers (inr_fast/wgmma_operands.cuh: K-major
// operands without swizzling, cuda_layout::kmajor).
#include "inr_fast/wgmma_operands.cuh"
#include "inr_fast/wgmma_probe.h"

namespace inr_fast {
namespace cuda {
namespace {

using prims::h2;
constexpr int K = kProbeRows;

// The wgmma path exists in the emulator and in sm_90a code; elsewhere the kernel only reports that.
#if defined(INR_FAST_EMU) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define INR_PROBE_WGMMA 1
#else
#define INR_PROBE_WGMMA 0
#endif

#if INR_PROBE_WGMMA || !defined(__CUDA_ARCH__)
__device__ __forceinline__ int kmajor(int r, int k) { return cuda_layout::kmajor(r, k, K); }
__device__ __forceinline__ uint64_t operand(const half* s, int t) { return prims::kmajor_desc(s, K, t); }

// Stages an R x K row-major global matrix into K-major core matrices (pairs of elements per store).
__device__ void stage(half* s, const half* g, int rows) {
  for (int i = int(threadIdx.x); i < rows * K / 2; i += int(blockDim.x)) {
    const int r = 2 * i / K, k = 2 * i % K;
    prims::sts_h2(s + kmajor(r, k), prims::ld_global(reinterpret_cast<const h2*>(g) + i));
  }
}

// A warp's 16 rows (r0 ..) of a row-major float16 matrix with `cols` columns, as float32 accumulator
// fragments: f[4 j + e] = (r0 + g + 8 (e / 2), 8 j + 2 q + e % 2).
template <int COLS>
__device__ void load_acc(float (&f)[COLS / 2], const half* m, int r0) {
  const int lane = int(threadIdx.x) % 32, g = lane / 4, q = lane % 4;
  for (int j = 0; j < COLS / 8; ++j)
    for (int h = 0; h < 2; ++h) {
      const h2 v = prims::ld_global(reinterpret_cast<const h2*>(m + (r0 + g + 8 * h) * COLS + 8 * j + 2 * q));
      f[4 * j + 2 * h] = __low2float(v), f[4 * j + 2 * h + 1] = __high2float(v);
    }
}

// Stores a warp's accumulator fragments (its 16 rows r0 .., COLS features) transposed into a
// feature-major K-major operand (features as rows, rows r0 .. as K), as the kernel stores its
// activations and deltas: two feature blocks of 8 per stmatrix x4, the last odd one by x2.
template <int COLS>
__device__ void store_features(half* s, const float (&f)[COLS / 2], int r0) {
  auto pair = [&](int j, int e) { return __floats2half2_rn(f[4 * j + e], f[4 * j + e + 1]); };
  int j = 0;
  for (; j + 1 < COLS / 8; j += 2) prims::stsm_features(s, K, j, r0, pair(j, 0), pair(j, 2), pair(j + 1, 0), pair(j + 1, 2));
  if (j < COLS / 8) prims::stsm_feature(s, K, j, r0, pair(j, 0), pair(j, 2));
}

// Writes a warp's accumulator fragments (16 rows r0 .., COLS columns) to a row-major float32 matrix.
template <int COLS>
__device__ void store_out(float* out, const float (&f)[COLS / 2], int r0) {
  const int lane = int(threadIdx.x) % 32, g = lane / 4, q = lane % 4;
  for (int j = 0; j < COLS / 8; ++j)
    for (int e = 0; e < 4; ++e) prims::st_global(out + (r0 + g + 8 * (e / 2)) * COLS + 8 * j + 2 * q + e % 2, f[4 * j + e]);
}

#endif

template <int N>
__global__ void __launch_bounds__(128, 1)
    probe_kernel(const half* x, const half* w1, const half* w2, const half* p, const half* q, float* y, float* g,
                 int* status) {
#if INR_PROBE_WGMMA
  INR_DYNAMIC_SMEM(raw);
  half* w1s = reinterpret_cast<half*>(raw);  // 64 x K
  half* w2s = w1s + 64 * K;                  // N x K
  half* ps = w2s + N * K;                    // 64 features x K rows
  half* qs = ps + 64 * K;                    // N features x K rows
  const int lane = int(threadIdx.x) % 32, gq = lane / 4, qq = lane % 4;
  const int r0 = 16 * (int(threadIdx.x) / 32);  // this warp's rows of X, Y, P, Q

  stage(w1s, w1, 64);
  stage(w2s, w2, N);
  float pf[32], qf[N / 2];
  load_acc<64>(pf, p, r0);
  load_acc<N>(qf, q, r0);
  store_features<64>(ps, pf, r0);
  store_features<N>(qs, qf, r0);
  prims::fence_proxy_async();
  __syncthreads();

  // Y: X's A fragments straight from global memory (as a kernel computes its first layer's inputs).
  h2 a[K / 16][4];
  for (int t = 0; t < K / 16; ++t)
    for (int i = 0; i < 4; ++i) {
      const int row = r0 + gq + 8 * (i % 2), col = 16 * t + 2 * qq + 8 * (i / 2);
      a[t][i] = prims::ld_global(reinterpret_cast<const h2*>(x + row * K + col));
    }
  float acc1[32];
  prims::wgmma_fence();
  for (int t = 0; t < K / 16; ++t) prims::wgmma_rs<64>(acc1, a[t], operand(w1s, t), t > 0);
  prims::wgmma_commit();
  prims::wgmma_wait<0>();
  // The accumulators of n8 blocks 2t and 2t + 1 are the A fragment of k16 step t.
  for (int t = 0; t < 4; ++t) {
    a[t][0] = __floats2half2_rn(acc1[8 * t + 0], acc1[8 * t + 1]);
    a[t][1] = __floats2half2_rn(acc1[8 * t + 2], acc1[8 * t + 3]);
    a[t][2] = __floats2half2_rn(acc1[8 * t + 4], acc1[8 * t + 5]);
    a[t][3] = __floats2half2_rn(acc1[8 * t + 6], acc1[8 * t + 7]);
  }
  float acc2[N / 2];
  prims::wgmma_fence();
  for (int t = 0; t < K / 16; ++t) prims::wgmma_rs<N>(acc2, a[t], operand(w2s, t), t > 0);
  prims::wgmma_commit();
  prims::wgmma_wait<0>();
  store_out<N>(y, acc2, r0);

  // G = P^T Q: both operands from shared memory, the K dimension the 64 rows.
  float acc3[N / 2];
  prims::wgmma_fence();
  for (int t = 0; t < K / 16; ++t) prims::wgmma_ss<N>(acc3, operand(ps, t), operand(qs, t), t > 0);
  prims::wgmma_commit();
  prims::wgmma_wait<0>();
  store_out<N>(g, acc3, r0);
  if (threadIdx.x == 0) prims::st_global(status, 0);
#else
  (void)x, (void)w1, (void)w2, (void)p, (void)q, (void)y, (void)g;
  if (threadIdx.x == 0) *status = 1;
#endif
}

template <int N>
int launch(const void* x, const void* w1, const void* w2, const void* p, const void* q, float* y, float* g,
           int* status, cudaStream_t stream) {
  const size_t smem = size_t(64 + N + 64 + N) * K * sizeof(half);  // 34.8 KB at N = 72 (twice in the logic build)
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(probe_kernel<N>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (err != cudaSuccess) return int(err);
  }
  INR_LAUNCH(probe_kernel<N>, dim3(1), dim3(128), smem, stream)
  (static_cast<const half*>(x), static_cast<const half*>(w1), static_cast<const half*>(w2),
   static_cast<const half*>(p), static_cast<const half*>(q), y, g, status);
  return int(prims::launch_status(stream));
}

}  // namespace

bool wgmma_probe_width_ok(int n) { return n == 8 || n == 56 || n == 64 || n == 72; }

int wgmma_probe(const void* x, const void* w1, const void* w2, const void* p, const void* q, int n, float* y,
                float* g, int* status, void* stream_ptr) {
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  switch (n) {
    case 8:
      return launch<8>(x, w1, w2, p, q, y, g, status, stream);
    case 56:
      return launch<56>(x, w1, w2, p, q, y, g, status, stream);
    case 64:
      return launch<64>(x, w1, w2, p, q, y, g, status, stream);
    case 72:
      return launch<72>(x, w1, w2, p, q, y, g, status, stream);
    default:
      return int(cudaErrorInvalidValue);
  }
}

}  // namespace cuda
}  // namespace inr_fast
