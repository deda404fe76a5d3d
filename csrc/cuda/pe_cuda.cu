// CUDA positional encoding, same algorithm and feature order as csrc/cpu/pe_cpu.cpp.
// sincospif(r) on the exactly reduced argument keeps full float accuracy at every frequency.
#include "inr_fast/cuda_prims.cuh"
#include "inr_fast/pe.h"

namespace inr_fast {
namespace cuda {

namespace {

__global__ void pe_forward_kernel(const float* __restrict__ x, int64_t n, int n_freqs,
                                  float* __restrict__ out) {
  const int f = pe_features(n_freqs);
  const int64_t total = n * 2;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t >> 1;
    const int c = int(t & 1);
    const float xc = x[t];
    float* o = out + i * f;
    o[c] = xc;
    float scale = 1.0f;
    for (int k = 0; k < n_freqs; ++k, scale *= 2.0f) {
      float s, co;
      sincospif(reduce_period2(scale * xc), &s, &co);
      o[2 + 4 * k + c] = s;
      o[4 + 4 * k + c] = co;
    }
  }
}

__global__ void pe_backward_kernel(const float* __restrict__ grad_out, const float* __restrict__ x,
                                   int64_t n, int n_freqs, float* __restrict__ grad_x) {
  const int f = pe_features(n_freqs);
  const int64_t total = n * 2;
  const float pi = 3.14159265358979323846f;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t >> 1;
    const int c = int(t & 1);
    const float xc = x[t];
    const float* g = grad_out + i * f;
    float acc = g[c];
    float scale = 1.0f;
    for (int k = 0; k < n_freqs; ++k, scale *= 2.0f) {
      float s, co;
      sincospif(reduce_period2(scale * xc), &s, &co);
      acc += (g[2 + 4 * k + c] * co - g[4 + 4 * k + c] * s) * (pi * scale);
    }
    grad_x[t] = acc;
  }
}

int grid_for(int64_t work, int block) {
  int64_t g = (work + block - 1) / block;
  if (g > 65535) g = 65535;
  return g < 1 ? 1 : int(g);
}

}  // namespace

int pe_forward_f32(const float* x, int64_t n, int n_freqs, float* out, void* stream) {
  if (n == 0) return 0;
  constexpr int kBlock = 256;
  INR_LAUNCH(pe_forward_kernel, dim3(grid_for(2 * n, kBlock)), dim3(kBlock), 0,
             static_cast<cudaStream_t>(stream))(x, n, n_freqs, out);
  return int(prims::launch_status(static_cast<cudaStream_t>(stream)));
}

int pe_backward_f32(const float* grad_out, const float* x, int64_t n, int n_freqs, float* grad_x,
                    void* stream) {
  if (n == 0) return 0;
  constexpr int kBlock = 256;
  INR_LAUNCH(pe_backward_kernel, dim3(grid_for(2 * n, kBlock)), dim3(kBlock), 0,
             static_cast<cudaStream_t>(stream))(grad_out, x, n, n_freqs, grad_x);
  return int(prims::launch_status(static_cast<cudaStream_t>(stream)));
}

const char* error_string(int err) { return cudaGetErrorString(static_cast<cudaError_t>(err)); }

}  // namespace cuda
}  // namespace inr_fast
